package pdtrace

// The tracer's C calls (pdtg.h, tracer section).

/*
#include "pdtg.h"
*/
import "C"

import (
	"time"
	"unsafe"
)

func cstrOrNil(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

func millis(d time.Duration) C.int64_t {
	if d == 0 {
		return 0
	}
	ms := d.Milliseconds()
	if ms == 0 {
		ms = 1 // a positive duration under 1 ms is not "unset"
	}
	return C.int64_t(ms)
}

func tristate(b *bool) C.int {
	switch {
	case b == nil:
		return 0
	case *b:
		return 1
	default:
		return -1
	}
}

func cOpen(o *Options, logHandle uintptr) (*C.pdt_tracer, error) {
	if o != nil {
		if err := checkNUL("pdt_tracer_open", "ServiceName", o.ServiceName,
			"ResourceAttributes", o.ResourceAttributes, "Endpoint", o.Endpoint,
			"Headers", o.Headers, "ConsolePath", o.ConsolePath, "CAFile", o.CAFile,
			"ClientCert", o.ClientCert, "ClientKey", o.ClientKey,
			"SpoolDir", o.SpoolDir, "MetricsTenants", o.MetricsTenants); err != nil {
			return nil, err
		}
	}
	if o == nil {
		r := C.pdtg_tracer_open(nil, 0)
		return r.tracer, resultErr("pdt_tracer_open", r.rc, r.msg)
	}
	co := C.pdtg_options_new()
	if co == nil {
		return nil, &Error{Op: "pdt_tracer_open", Status: StatusNoMemory, Message: "out of memory for options"}
	}
	defer C.pdtg_options_free(co)
	co.service_name = cstrOrNil(o.ServiceName)
	co.resource_attributes = cstrOrNil(o.ResourceAttributes)
	co.exporter = C.int(o.Exporter)
	co.endpoint = cstrOrNil(o.Endpoint)
	co.headers = cstrOrNil(o.Headers)
	co.compression = C.int(o.Compression)
	co.timeout_ms = millis(o.Timeout)
	co.console_path = cstrOrNil(o.ConsolePath)
	co.ca_file = cstrOrNil(o.CAFile)
	co.client_cert = cstrOrNil(o.ClientCert)
	co.client_key = cstrOrNil(o.ClientKey)
	co.schedule_delay_ms = millis(o.ScheduleDelay)
	co.export_timeout_ms = millis(o.ExportTimeout)
	co.max_queue_size = C.int64_t(o.MaxQueueSize)
	co.max_export_batch_size = C.int64_t(o.MaxExportBatchSize)
	co.attribute_count_limit = C.int64_t(o.AttributeCountLimit)
	co.attribute_value_length_limit = C.int64_t(o.AttributeValueLengthLimit)
	co.sampler = C.int(o.Sampler)
	if o.SamplerRatio != nil {
		co.sampler_ratio = C.double(*o.SamplerRatio)
		co.sampler_ratio_set = 1
	}
	co.tail_ttft_threshold_ms = C.double(float64(o.TailTTFTThreshold) / 1e6)
	co.tail_keep_errors = tristate(o.TailKeepErrors)
	co.disabled = tristate(o.Disabled)
	if o.IgnoreEnvironment {
		co.ignore_environment = 1
	}
	co.spool_dir = cstrOrNil(o.SpoolDir)
	co.spool_max_bytes = C.int64_t(o.SpoolMaxBytes)
	co.max_concurrent_exports = C.int64_t(o.MaxConcurrentExports)
	co.compression_level = C.int(o.CompressionLevel)
	co.metrics_tenants = cstrOrNil(o.MetricsTenants)
	co.protocol = C.int(o.Protocol)
	co.max_queue_bytes = C.int64_t(o.MaxQueueBytes)
	r := C.pdtg_tracer_open(co, C.uintptr_t(logHandle))
	return r.tracer, resultErr("pdt_tracer_open", r.rc, r.msg)
}

func cFlush(t *C.pdt_tracer, timeoutMs int64) (uint64, error) {
	r := C.pdtg_tracer_flush(t, C.int64_t(timeoutMs))
	return uint64(r.count), resultErr("pdt_tracer_flush", r.rc, r.msg)
}

func cClose(t *C.pdt_tracer, timeoutMs int64) (uint64, error) {
	r := C.pdtg_tracer_close(t, C.int64_t(timeoutMs))
	return uint64(r.count), resultErr("pdt_tracer_close", r.rc, r.msg)
}

func cStats(t *C.pdt_tracer) (Stats, error) {
	r := C.pdtg_tracer_stats(t)
	if err := resultErr("pdt_tracer_stats", r.rc, r.msg); err != nil {
		return Stats{}, err
	}
	s := &r.st
	return Stats{
		SpansStarted:        uint64(s.spans_started),
		SpansEnded:          uint64(s.spans_ended),
		SpansNotSampled:     uint64(s.spans_not_sampled),
		SpansExported:       uint64(s.spans_exported),
		SpansRejected:       uint64(s.spans_rejected),
		DroppedQueueFull:    uint64(s.dropped_queue_full),
		DroppedExportFailed: uint64(s.dropped_export_failed),
		DroppedShutdown:     uint64(s.dropped_shutdown),
		DroppedDisabled:     uint64(s.dropped_disabled),
		ExportRequests:      uint64(s.export_requests),
		ExportRetries:       uint64(s.export_retries),
		ExportFailures:      uint64(s.export_failures),
		BytesSent:           uint64(s.bytes_sent),
		QueueDepth:          uint64(s.queue_depth),
		AttributesDropped:   uint64(s.attributes_dropped),
		ValuesTruncated:     uint64(s.values_truncated),
		StringsSanitized:    uint64(s.strings_sanitized),
		RequestsCompleted:   uint64(s.requests_completed),
		SpansSpooled:        uint64(s.spans_spooled),
		SpansReplayed:       uint64(s.spans_replayed),
		SpoolDropped:        uint64(s.spool_dropped),
		SpoolCorrupt:        uint64(s.spool_corrupt),
	}, nil
}

// cMetrics renders the metrics into buf, a Go buffer without Go pointers
// that C uses for the call only. On StatusBufferSize, n is the size
// needed.
func cMetrics(t *C.pdt_tracer, buf []byte) (n int, err error) {
	r := C.pdtg_tracer_metrics(t, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	return int(r.len), resultErr("pdt_tracer_metrics", r.rc, r.msg)
}
