/*
 * Internal, for the tests, fuzz targets and benchmarks only: every
 * internal header of the tracer's core in one include. Files in lib/
 * include what they use instead (docs/architecture.md).
 */
#ifndef PDTI_CORE_H
#define PDTI_CORE_H

#include "attr.h"
#include "clock.h"
#include "encode.h"
#include "exporter.h"
#include "queue.h"
#include "rec.h"
#include "span.h"
#include "tracer.h"
#include "tracer_data.h"
#include "wire.h"

#endif
