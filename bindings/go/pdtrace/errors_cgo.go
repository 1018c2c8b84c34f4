package pdtrace

// Status results of the shims turned into *Error, and the checks of the
// strings handed to C.

/*
#include <stdlib.h>
#include "pdtg.h"
*/
import "C"

import (
	"strings"
	"unsafe"
)

func resultErr(op string, rc C.int, msg *C.char) error {
	if rc == C.PDT_OK {
		return nil
	}
	e := &Error{Op: op, Status: Status(rc)}
	if msg != nil {
		e.Message = C.GoString(msg)
		C.free(unsafe.Pointer(msg))
	}
	return e
}

func check(op string, r C.pdtg_res) error {
	if r.rc == C.PDT_OK {
		return nil
	}
	return resultErr(op, r.rc, r.msg)
}

// A Go string may hold a NUL byte; a C string ends at the first one, so
// the library would silently see only what comes before it. Every string
// handed to C NUL-terminated is checked here first and refused with
// StatusInvalid. (Attribute string values and the method and path of
// Begin travel with their length, NULs included, and are not checked.)
func nulErr(op, what string) error {
	return &Error{Op: op, Status: StatusInvalid,
		Message: what + " contains a NUL byte: C strings end at the first NUL, so the library would see only what comes before it"}
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

// checkNUL returns the error for the first of name/value pairs whose value
// holds a NUL, or nil.
func checkNUL(op string, pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if hasNUL(pairs[i+1]) {
			return nulErr(op, pairs[i])
		}
	}
	return nil
}

func cStatusString(s Status) string { return C.GoString(C.pdt_status_str(C.int(s))) }
