package pdtrace

// The request's C calls (pdtg.h, requests section).

/*
#include "pdtg.h"
*/
import "C"

// cBegin returns the request, the begin error and, separately, the error
// of setting the request id.
// An id holding a NUL is refused like any id the library refuses: the
// request begins with a generated one.
func cBegin(t *C.pdt_tracer, tp, ts string, arrival Time, id, method, path string) (reqHandle, error, error) {
	if err := checkNUL("pdt_request_begin", "traceparent", tp, "tracestate", ts); err != nil {
		return nil, err, nil
	}
	var idErr error
	if hasNUL(id) {
		id, idErr = "", nulErr("pdt_request_set_id", "request id")
	}
	r := C.pdtg_request_begin(t, gstr(tp), gstr(ts), C.uint64_t(arrival), gstr(id), gstr(method), gstr(path))
	if r.rc != C.PDT_OK {
		return nil, resultErr("pdt_request_begin", r.rc, r.msg), nil
	}
	if idErr != nil {
		return r.req, nil, idErr
	}
	return r.req, nil, resultErr("pdt_request_set_id", C.int(r.id_rc), r.id_msg)
}

func cReqSetID(h reqHandle, id string) error {
	if err := checkNUL("pdt_request_set_id", "request id", id); err != nil {
		return err
	}
	return check("pdt_request_set_id", C.pdtg_request_set_id(h, gstr(id)))
}

func cReqID(h reqHandle) string { return C.GoString(C.pdt_request_id(h)) }

func cReqSetMode(h reqHandle, m Mode, reason string) error {
	if err := checkNUL("pdt_request_set_mode", "reason", reason); err != nil {
		return err
	}
	return check("pdt_request_set_mode", C.pdtg_request_set_mode(h, C.int(m), gstr(reason)))
}

func cReqSetConnector(h reqHandle, name string) error {
	if err := checkNUL("pdt_request_set_connector", "connector", name); err != nil {
		return err
	}
	return check("pdt_request_set_connector", C.pdtg_request_set_connector(h, gstr(name)))
}

func cReqMark(h reqHandle, m mark, at Time) error {
	return check("pdt_request_mark", C.pdtg_request_mark(h, C.int(m), C.uint64_t(at)))
}

func cReqTokens(h reqHandle, at Time, n uint32) error {
	return check("pdt_request_tokens", C.pdtg_request_tokens(h, C.uint64_t(at), C.uint32_t(n)))
}

func cReqSetUsage(h reqHandle, in, out, cached int64) error {
	return check("pdt_request_set_usage", C.pdtg_request_set_usage(h, C.int64_t(in), C.int64_t(out), C.int64_t(cached)))
}

func cReqSetLeg(h reqHandle, leg Leg, target string, status int, errType string) error {
	if err := checkNUL("pdt_request_set_leg", "target", target, "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_leg", C.pdtg_request_set_leg(h, C.int(leg), gstr(target), C.int(status), gstr(errType)))
}

func cReqSetResponse(h reqHandle, status int, errType string) error {
	if err := checkNUL("pdt_request_set_response", "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_response", C.pdtg_request_set_response(h, C.int(status), gstr(errType)))
}

func cReqAttr(h reqHandle, leg Leg, key string, kind attrKind, sv string, iv int64, dv float64) error {
	if hasNUL(key) {
		return nulErr("pdt_request_set_attribute", "attribute key")
	}
	return check("pdt_request_set_attribute", C.pdtg_request_attr(h, C.int(leg), gstr(key), kind, gstr(sv), C.int64_t(iv), C.double(dv)))
}

func cReqEvent(h reqHandle, leg Leg, name string, at Time) error {
	if err := checkNUL("pdt_span_add_event", "event name", name); err != nil {
		return err
	}
	return check("pdt_span_add_event", C.pdtg_request_event(h, C.int(leg), gstr(name), C.uint64_t(at)))
}

func cReqStatus(h reqHandle, leg Leg, code SpanStatus, msg string) error {
	if err := checkNUL("pdt_span_set_status", "status message", msg); err != nil {
		return err
	}
	return check("pdt_span_set_status", C.pdtg_request_status(h, C.int(leg), C.int(code), gstr(msg)))
}

func cReqInject(h reqHandle, leg Leg) (propagation, error) {
	return injectResult("pdt_request_inject", C.pdtg_request_inject(h, C.int(leg)))
}

func msField(present C.uint32_t, bit C.uint32_t, v C.double) Millis {
	if present&bit == 0 {
		return Millis{}
	}
	return Millis{Value: float64(v), OK: true}
}

func cReqEnd(h reqHandle, at Time) (Breakdown, error) {
	r := C.pdtg_request_end(h, C.uint64_t(at))
	err := resultErr("pdt_request_end", r.rc, r.msg)
	return breakdownOf(&r.bd), err
}

func breakdownOf(bd *C.pdt_breakdown) Breakdown {
	p := bd.present
	return Breakdown{
		Queue:              msField(p, C.PDT_BD_QUEUE, bd.queue_ms),
		Prefill:            msField(p, C.PDT_BD_PREFILL, bd.prefill_ms),
		KVTransferOverhead: msField(p, C.PDT_BD_KV_TRANSFER, bd.kv_transfer_overhead_ms),
		DecodeTTFT:         msField(p, C.PDT_BD_DECODE_TTFT, bd.decode_ttft_ms),
		TrueTTFT:           msField(p, C.PDT_BD_TRUE_TTFT, bd.true_ttft_ms),
		DecodeDuration:     msField(p, C.PDT_BD_DECODE_DURATION, bd.decode_duration_ms),
		Total:              msField(p, C.PDT_BD_TOTAL, bd.total_ms),
		TPOT:               msField(p, C.PDT_BD_TPOT, bd.tpot_ms),
		OutputTokens:       int64(bd.output_tokens),
		Mode:               Mode(bd.mode),
		Error:              bd.error != 0,
		Sampled:            bd.sampled != 0,
	}
}

func cReqFree(h reqHandle) { C.pdt_request_free(h) }

func cReqIDs(h reqHandle, leg Leg) (string, string, bool) {
	return idsResult(C.pdtg_request_ids(h, C.int(leg)))
}

func cReqSetAttrs(h reqHandle, leg Leg, attrs []Attr) error {
	b, err := getAttrs(attrs)
	if err != nil {
		return err
	}
	r := C.pdtg_request_set_attrs(h, C.int(leg), b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	return check("pdt_request_set_attrs", r)
}

func cReqSetModel(h reqHandle, model string) error {
	if err := checkNUL("pdt_request_set_model", "model", model); err != nil {
		return err
	}
	return check("pdt_request_set_model", C.pdtg_request_set_model(h, gstr(model)))
}

func cReqSetTenant(h reqHandle, tenant string) error {
	if err := checkNUL("pdt_request_set_tenant", "tenant", tenant); err != nil {
		return err
	}
	return check("pdt_request_set_tenant", C.pdtg_request_set_tenant(h, gstr(tenant)))
}

// cBeginWith is cBegin plus the connector, model and attributes, set in
// the same cgo call; setErr is the first of those settings that failed.
func cBeginWith(t *C.pdt_tracer, tp, ts string, arrival Time, id, method, path,
	connector, model string, attrs []Attr) (h reqHandle, err, idErr, setErr error) {
	if err := checkNUL("pdt_request_begin", "traceparent", tp, "tracestate", ts,
		"connector", connector, "model", model); err != nil {
		return nil, err, nil, nil
	}
	if hasNUL(id) {
		id, idErr = "", nulErr("pdt_request_set_id", "request id")
	}
	b, err := getAttrs(attrs)
	if err != nil {
		return nil, err, nil, nil
	}
	w := C.pdtg_request_begin_with(t, gstr(tp), gstr(ts), C.uint64_t(arrival), gstr(id), gstr(method), gstr(path),
		gstr(connector), gstr(model), b.c, C.size_t(len(attrs)))
	attrPool.Put(b)
	r := &w.b
	if r.rc != C.PDT_OK {
		return nil, resultErr("pdt_request_begin", r.rc, r.msg), nil, nil
	}
	if idErr == nil {
		idErr = resultErr("pdt_request_set_id", C.int(r.id_rc), r.id_msg)
	}
	return r.req, nil, idErr, resultErr("pdt_request_set_attrs", w.set_rc, w.set_msg)
}

// cReqSend injects the headers of a leg and records its SENT mark. The
// propagation is valid when its traceparent is not empty, even with an
// error (the mark's).
func cReqSend(h reqHandle, leg Leg, m mark, at Time) (propagation, error) {
	r := C.pdtg_request_send(h, C.int(leg), C.int(m), C.uint64_t(at))
	err := resultErr("pdt_request_mark", r.rc, r.msg)
	if r.traceparent[0] == 0 {
		return propagation{}, err
	}
	return propagation{
		traceparent: traceparentString(&r.traceparent),
		tracestate:  r.tracestate,
		requestID:   r.request_id,
	}, err
}

func cReqLegDone(h reqHandle, leg Leg, m mark, at Time, target string, status int, errType string) error {
	if err := checkNUL("pdt_request_set_leg", "target", target, "error type", errType); err != nil {
		return err
	}
	return check("pdt_request_set_leg", C.pdtg_request_leg_done(h, C.int(leg), C.int(m),
		C.uint64_t(at), gstr(target), C.int(status), gstr(errType)))
}

// cReqFinish returns the breakdown, the first error, and whether the
// request was ended (the breakdown is valid).
func cReqFinish(h reqHandle, at Time, o *Outcome) (Breakdown, error, bool) {
	if err := checkNUL("pdt_request_end", "ErrorType", o.ErrorType, "DecodeTarget", o.DecodeTarget,
		"DecodeErrorType", o.DecodeErrorType); err != nil {
		return Breakdown{}, err, false
	}
	legSet, usageSet := C.int(0), C.int(0)
	if o.DecodeStatus != 0 || o.DecodeErrorType != "" {
		legSet = 1
	}
	if o.Usage {
		usageSet = 1
	}
	r := C.pdtg_request_finish(h, C.uint64_t(at), C.int(o.Status), gstr(o.ErrorType),
		legSet, gstr(o.DecodeTarget), C.int(o.DecodeStatus), gstr(o.DecodeErrorType),
		usageSet, C.int64_t(o.InputTokens), C.int64_t(o.OutputTokens),
		C.int64_t(o.CachedInputTokens))
	err := resultErr("pdt_request_end", r.rc, r.msg)
	return breakdownOf(&r.bd), err, r.end_rc == C.PDT_OK || r.end_rc == C.PDT_ERANGE
}
