package pdtrace

// Attr is one typed attribute for the batch setters (SetAttributes,
// BeginWith): one cgo call and one library call (pdt_request_set_attrs,
// pdt_span_set_attrs) for all of them. Make it with String, Int, Float or
// Bool. The key and value are copied by the call; nothing is retained.
type Attr struct {
	Key  string
	kind int8
	s    string
	n    int64
	f    float64
}

// String is a string attribute (embedded NUL bytes are kept).
func String(key, value string) Attr { return Attr{Key: key, kind: attrString, s: value} }

// Int is an integer attribute.
func Int(key string, value int64) Attr { return Attr{Key: key, kind: attrInt, n: value} }

// Float is a double attribute.
func Float(key string, value float64) Attr { return Attr{Key: key, kind: attrDouble, f: value} }

// Bool is a boolean attribute.
func Bool(key string, value bool) Attr { return Attr{Key: key, kind: attrBool, n: cbool(value)} }

// Value returns the attribute's value as a string, int64, float64 or bool
// (nil for the zero Attr, which the library refuses as a bad type).
func (a Attr) Value() any {
	switch a.kind {
	case attrString:
		return a.s
	case attrInt:
		return a.n
	case attrDouble:
		return a.f
	case attrBool:
		return a.n != 0
	}
	return nil
}
