package cow

import (
	"errors"
	"fmt"
)

// Sentinel errors; test with errors.Is. Every error about the store's
// contents is an *Error wrapping one of them, naming the device and the
// byte offset of what is wrong.
var (
	// ErrCorrupt: the store is not what the kernel writes (bad magic,
	// chunk size, exceptions out of range or repeated, ...).
	ErrCorrupt = errors.New("corrupt snapshot exception store")
	// ErrVersion: the header has a version other than 1.
	ErrVersion = errors.New("unsupported snapshot exception store version")
	// ErrInvalidated: the header's valid flag is 0. The kernel clears it
	// when it drops a snapshot (its COW space overflowed, or an I/O error);
	// the exception table no longer lists every changed chunk.
	ErrInvalidated = errors.New("snapshot invalidated")
)

// Error says what is wrong with a COW store and where.
type Error struct {
	Name   string // the device or file
	Offset int64  // byte offset of the bad field in it
	Err    error  // ErrCorrupt, ErrVersion or ErrInvalidated
	Detail string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v: %s, byte %d: %s", e.Err, e.Name, e.Offset, e.Detail)
}

func (e *Error) Unwrap() error { return e.Err }

func corrupt(name string, off int64, format string, args ...any) *Error {
	return &Error{Name: name, Offset: off, Err: ErrCorrupt, Detail: fmt.Sprintf(format, args...)}
}
