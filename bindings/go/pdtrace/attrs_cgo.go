package pdtrace

// C buffers for the batched attribute calls (pdtg.h, attribute buffers).

/*
#include "pdtg.h"
*/
import "C"

import (
	"runtime"
	"sync"
	"unsafe"
)

// The pdt_attr_type values, checked against the header at compile time.
const (
	attrString = 1
	attrInt    = 2
	attrDouble = 3
	attrBool   = 4
)

var _ = [1]struct{}{}[attrString-C.PDT_ATTR_STRING+attrInt-C.PDT_ATTR_INT+
	attrDouble-C.PDT_ATTR_DOUBLE+attrBool-C.PDT_ATTR_BOOL]

// attrBuf owns a C pdtg_attrbuf. Buffers are pooled, so a batch call
// allocates nothing once the pool is warm; one that the pool drops is
// freed by its cleanup.
type attrBuf struct{ c *C.pdtg_attrbuf }

var attrPool = sync.Pool{New: func() any {
	b := &attrBuf{c: C.pdtg_attrbuf_new()}
	if b.c != nil {
		runtime.AddCleanup(b, func(c *C.pdtg_attrbuf) { C.pdtg_attrbuf_free(c) }, b.c)
	}
	return b
}}

var errAttrMemory = &Error{Op: "pdt_request_set_attrs", Status: StatusNoMemory,
	Message: "out of memory copying the attributes"}

// getAttrs copies attrs into a pooled C buffer: the pdt_attr array and,
// NUL-terminated, every key and string value. The caller puts it back.
func getAttrs(attrs []Attr) (*attrBuf, error) {
	b := attrPool.Get().(*attrBuf)
	if b.c == nil {
		return nil, errAttrMemory
	}
	if len(attrs) == 0 {
		return b, nil
	}
	size := 0
	for i := range attrs {
		if hasNUL(attrs[i].Key) {
			attrPool.Put(b)
			return nil, nulErr("pdt_request_set_attrs", "attribute key")
		}
		size += len(attrs[i].Key) + 1
		if attrs[i].kind == attrString {
			size += len(attrs[i].s)
		}
	}
	if C.pdtg_attrbuf_reserve(b.c, C.size_t(len(attrs)), C.size_t(size)) == 0 {
		attrPool.Put(b)
		return nil, errAttrMemory
	}
	ca := unsafe.Slice(b.c.attrs, len(attrs))
	arena := unsafe.Slice((*byte)(unsafe.Pointer(b.c.arena)), size)
	off := 0
	for i := range attrs {
		a, e := &attrs[i], &ca[i]
		e.key = (*C.char)(unsafe.Pointer(&arena[off]))
		off += copy(arena[off:], a.Key)
		nul := off
		arena[off] = 0
		off++
		e._type = C.int(a.kind)
		e.str, e.str_len, e.i, e.d = nil, 0, 0, 0
		switch a.kind {
		case attrString:
			// An empty value points at the key's NUL: any valid address.
			e.str = (*C.char)(unsafe.Pointer(&arena[nul]))
			if len(a.s) != 0 {
				e.str = (*C.char)(unsafe.Pointer(&arena[off]))
				off += copy(arena[off:], a.s)
			}
			e.str_len = C.size_t(len(a.s))
		case attrDouble:
			e.d = C.double(a.f)
		default:
			e.i = C.int64_t(a.n)
		}
	}
	return b, nil
}
