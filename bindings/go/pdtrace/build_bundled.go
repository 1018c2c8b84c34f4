//go:build !pdtrace_system

package pdtrace

// By default the package compiles libpdtrace itself: csrc/ is a copy of the
// library's lib/ and include/ (with the generated protobuf code), kept
// identical by bindings/go/sync_csrc.sh, and its package csrc/lib (clib)
// compiles the C sources; the calls below link against those objects.
// Building needs a C compiler and the -dev packages of libcurl, zstd, zlib
// and nanopb's runtime (Debian: libcurl4-openssl-dev libzstd-dev zlib1g-dev
// libnanopb-dev); no libpdtrace, no pkg-config.
//
// The build tag pdtrace_system links the installed libpdtrace through
// pkg-config instead (build_system.go).

/*
#cgo CFLAGS: -I${SRCDIR}/csrc/include -DPDT_STATIC
*/
import "C"

import _ "github.com/pdtrace/libpdtrace/bindings/go/pdtrace/csrc/lib"
