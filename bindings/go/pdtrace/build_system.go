//go:build pdtrace_system

package pdtrace

// With -tags pdtrace_system the package links the libpdtrace that
// pkg-config finds (name libpdtrace; set PKG_CONFIG_PATH for a prefix the
// default search does not cover) instead of compiling its own copy.

/*
#cgo pkg-config: libpdtrace
*/
import "C"
