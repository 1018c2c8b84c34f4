package pdtrace

import "fmt"

// Status is a libpdtrace status code (pdt_status). The values are a fixed
// contract of the C library and are never renumbered.
type Status int

// Status codes, one for each pdt_status value.
const (
	StatusOK           Status = 0  // PDT_OK
	StatusInvalid      Status = 1  // PDT_EINVAL: an argument is invalid
	StatusNoMemory     Status = 2  // PDT_ENOMEM: an allocation failed
	StatusState        Status = 3  // PDT_ESTATE: call out of order
	StatusRange        Status = 4  // PDT_ERANGE: timestamp or number out of range
	StatusParse        Status = 5  // PDT_EPARSE: malformed text
	StatusTimeout      Status = 6  // PDT_ETIMEOUT: flush or close ran out of time
	StatusLimit        Status = 7  // PDT_ELIMIT: a configured limit dropped data
	StatusBufferSize   Status = 8  // PDT_EBUFSIZE: buffer too small
	StatusIO           Status = 9  // PDT_EIO: file or directory I/O failed
	StatusClosed       Status = 10 // PDT_ECLOSED: the tracer is closed or closing
	StatusNotSupported Status = 11 // PDT_ENOTSUP: not supported by this build
	StatusInternal     Status = 12 // PDT_EINTERNAL: a bug in libpdtrace
)

// String returns the library's name for the status (pdt_status_str).
func (s Status) String() string { return cStatusString(s) }

// Error is the error type of every function in this package. Status is
// the libpdtrace status code, Message the detailed message the library
// gave for this very failure (read in the same C call), Op the C function
// that failed.
type Error struct {
	Op      string
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("pdtrace: %s: %s", e.Op, e.Status)
	}
	return fmt.Sprintf("pdtrace: %s: %s: %s", e.Op, e.Status, e.Message)
}

// Is reports whether target is an *Error with the same Status, so that
// errors.Is(err, pdtrace.ErrState) works whatever the message.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Status == e.Status && (t.Op == "" || t.Op == e.Op)
}

// Sentinel errors for errors.Is; they match any *Error with that Status.
var (
	ErrInvalid      = &Error{Status: StatusInvalid}
	ErrNoMemory     = &Error{Status: StatusNoMemory}
	ErrState        = &Error{Status: StatusState}
	ErrRange        = &Error{Status: StatusRange}
	ErrParse        = &Error{Status: StatusParse}
	ErrTimeout      = &Error{Status: StatusTimeout}
	ErrLimit        = &Error{Status: StatusLimit}
	ErrIO           = &Error{Status: StatusIO}
	ErrClosed       = &Error{Status: StatusClosed}
	ErrNotSupported = &Error{Status: StatusNotSupported}
	ErrInternal     = &Error{Status: StatusInternal}
)

// errReleased is returned by calls on a Request or Span whose handle was
// already released with Close.
func errReleased(op string) error {
	return &Error{Op: op, Status: StatusState, Message: "handle already closed"}
}

func errTracerClosed(op string) error {
	return &Error{Op: op, Status: StatusClosed, Message: "tracer is closed"}
}
