//go:build !pdtrace_system

package pdtrace

// By default the package compiles libpdtrace itself: csrc/ is a copy of the
// library's lib/ and include/ (with the generated protobuf code), kept
// identical by bindings/go/sync_csrc.sh, and the csrc_*.c files compile it.
// Building needs a C compiler and the -dev packages of libcurl, zstd, zlib
// and nanopb's runtime (Debian: libcurl4-openssl-dev libzstd-dev zlib1g-dev
// libnanopb-dev); no libpdtrace, no pkg-config. PDT_STATIC: the copy
// exports no symbol of its own, so it never meets a system libpdtrace.
//
// The build tag pdtrace_system links the installed libpdtrace through
// pkg-config instead (build_system.go).

/*
#cgo CFLAGS: -I${SRCDIR}/csrc/include -DPDT_STATIC
#cgo LDFLAGS: -lcurl -lzstd -lz -lprotobuf-nanopb -lpthread -lm
*/
import "C"
