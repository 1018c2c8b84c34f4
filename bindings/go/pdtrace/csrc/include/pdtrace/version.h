/*
 * libpdtrace version. This header is the single source of the version
 * number: meson.build reads it, the shared library's soversion is the major
 * number, and the bindings compare against it at build time.
 */
#ifndef PDTRACE_VERSION_H
#define PDTRACE_VERSION_H

#define PDT_VERSION_MAJOR 0
#define PDT_VERSION_MINOR 1
#define PDT_VERSION_PATCH 0

#define PDT_VERSION_STRING "0.1.0"

/* One integer, comparable: 0x00MMmmpp. */
#define PDT_VERSION_NUMBER \
    ((PDT_VERSION_MAJOR << 16) | (PDT_VERSION_MINOR << 8) | PDT_VERSION_PATCH)

#endif /* PDTRACE_VERSION_H */
