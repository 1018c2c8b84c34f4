module github.com/pdtrace/libpdtrace/bindings/go

go 1.24
