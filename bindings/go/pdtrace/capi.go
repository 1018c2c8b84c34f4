package pdtrace

// The cgo side of the binding: the files named *_cgo.go (and this one)
// are the only ones that call C (log.go holds the log callback C calls),
// each beside the Go file it serves and named after the C module it wraps
// (tracer, request, span, errors; attrs for the attribute buffers). The C
// shims they call are in pdtg.c, declared in pdtg.h: every libpdtrace call
// that can fail goes through one, which reads pdt_last_error() in the same
// C call. Go strings are lent to the shims as pdtg_str for the duration of
// a call only; C keeps no Go pointer.

// Where libpdtrace comes from (compiled in, or the system's with the
// pdtrace_system tag) is decided in build_bundled.go and build_system.go.

/*
#include "pdtg.h"
*/
import "C"

import "unsafe"

// headerVersion is the version of the pdtrace headers this package was
// compiled against.
const headerVersion = C.PDT_VERSION_STRING

// gstr lends a Go string to a shim for the duration of the call: its
// bytes hold no Go pointer, and no shim keeps them.
func gstr(s string) C.pdtg_str {
	return C.pdtg_str{p: (*C.char)(unsafe.Pointer(unsafe.StringData(s))), n: C.size_t(len(s))}
}

func cNow() Time { return Time(C.pdt_now_ns()) }

func cVersion() (string, uint32) {
	return C.GoString(C.pdt_version()), uint32(C.pdt_version_number())
}

func cbool(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func goStr(p *C.char) string {
	if p == nil {
		return ""
	}
	return C.GoString(p)
}

// propagation is what an inject call gives back; the strings are borrowed
// C memory and must be copied before the handle goes away.
type propagation struct {
	traceparent string
	tracestate  *C.char
	requestID   *C.char
}

func injectResult(op string, r C.pdtg_inject_res) (propagation, error) {
	if err := resultErr(op, r.rc, r.msg); err != nil {
		return propagation{}, err
	}
	return propagation{
		traceparent: traceparentString(&r.traceparent),
		tracestate:  r.tracestate,
		requestID:   r.request_id,
	}, nil
}

// traceparentString copies a traceparent out of a C result held on the Go
// stack (a cgo helper taking its address would move it to the heap).
func traceparentString(tp *[C.PDT_TRACEPARENT_SIZE]C.char) string {
	return string(unsafe.Slice((*byte)(unsafe.Pointer(&tp[0])), C.PDT_TRACEPARENT_SIZE-1))
}

func idsResult(r C.pdtg_ids) (traceID, spanID string, sampled bool) {
	return C.GoString(&r.trace_id[0]), C.GoString(&r.span_id[0]), r.sampled != 0
}

type tracerHandle = *C.pdt_tracer

type reqHandle = *C.pdt_request

type spanHandle = *C.pdt_span

type attrKind = C.int

const (
	kindStr    = C.PDTG_STR
	kindInt    = C.PDTG_INT
	kindDouble = C.PDTG_DOUBLE
	kindBool   = C.PDTG_BOOL
)
