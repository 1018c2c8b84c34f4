module github.com/pdtrace/libpdtrace/examples/go

go 1.24

require github.com/pdtrace/libpdtrace/bindings/go v0.0.0

replace github.com/pdtrace/libpdtrace/bindings/go => ../../bindings/go
