package pdtrace

/*
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

// LogLevel is the level of a background log message (pdt_log_level).
type LogLevel int

// Log levels.
const (
	LogError LogLevel = 1
	LogWarn  LogLevel = 2
	LogInfo  LogLevel = 3
	LogDebug LogLevel = 4
)

//export pdtgoLog
func pdtgoLog(handle C.uintptr_t, level C.int, message *C.char) {
	fn, ok := cgo.Handle(handle).Value().(func(LogLevel, string))
	if !ok || fn == nil {
		return
	}
	fn(LogLevel(level), C.GoString(message))
}
