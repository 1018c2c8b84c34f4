package pdtrace

// The generic span's C calls (pdtg.h, generic spans section).

/*
#include "pdtg.h"
*/
import "C"

func cSpanStart(t *C.pdt_tracer, name string, kind SpanKind, parent spanHandle, tp, ts string, start Time) (spanHandle, error) {
	if err := checkNUL("pdt_span_start", "span name", name, "traceparent", tp, "tracestate", ts); err != nil {
		return nil, err
	}
	r := C.pdtg_span_start(t, gstr(name), C.int(kind), parent, gstr(tp), gstr(ts), C.uint64_t(start))
	return r.span, resultErr("pdt_span_start", r.rc, r.msg)
}

func cSpanAttr(h spanHandle, event bool, key string, kind attrKind, sv string, iv int64, dv float64) error {
	op := "pdt_span_set_attribute"
	ev := C.int(0)
	if event {
		op, ev = "pdt_span_event_set_attribute", 1
		// Event string values have no length-counted setter.
		if kind == kindStr && hasNUL(sv) {
			return nulErr(op, "event attribute value")
		}
	}
	if hasNUL(key) {
		return nulErr(op, "attribute key")
	}
	return check(op, C.pdtg_span_attr_set(h, ev, gstr(key), kind, gstr(sv), C.int64_t(iv), C.double(dv)))
}

func cSpanEvent(h spanHandle, name string, at Time) error {
	if err := checkNUL("pdt_span_add_event", "event name", name); err != nil {
		return err
	}
	return check("pdt_span_add_event", C.pdtg_span_add_event(h, gstr(name), C.uint64_t(at)))
}

func cSpanStatus(h spanHandle, code SpanStatus, msg string) error {
	if err := checkNUL("pdt_span_set_status", "status message", msg); err != nil {
		return err
	}
	return check("pdt_span_set_status", C.pdtg_span_set_status(h, C.int(code), gstr(msg)))
}

func cSpanInject(h spanHandle) (propagation, error) {
	return injectResult("pdt_span_inject", C.pdtg_span_inject(h))
}

func cSpanIDs(h spanHandle) (string, string, bool) { return idsResult(C.pdtg_span_ids(h)) }

func cSpanEnd(h spanHandle, at Time) error {
	return check("pdt_span_end", C.pdtg_span_end(h, C.uint64_t(at)))
}

func cSpanFree(h spanHandle) { C.pdt_span_free(h) }

func cParseTraceparent(v string) (tid [16]byte, sid [8]byte, flags byte, err error) {
	if hasNUL(v) {
		return tid, sid, 0, nulErr("pdt_traceparent_parse", "traceparent")
	}
	r := C.pdtg_traceparent_parse(gstr(v))
	if err = resultErr("pdt_traceparent_parse", r.rc, r.msg); err != nil {
		return
	}
	for i := range tid {
		tid[i] = byte(r.trace_id[i])
	}
	for i := range sid {
		sid[i] = byte(r.span_id[i])
	}
	return tid, sid, byte(r.flags), nil
}

func cSpanSetAttrs(h spanHandle, attrs []Attr) error {
	b, err := getAttrs(attrs)
	if err != nil {
		return err
	}
	r := C.pdtg_span_set_attrs(h, b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	return check("pdt_span_set_attrs", r)
}
