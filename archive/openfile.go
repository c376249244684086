package archive

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrFileKind: a path that should be a regular file or a block device is
// something else (a FIFO, a socket, a character device, a directory).
var ErrFileKind = errors.New("not a regular file or block device")

// FileKind names a file's type for messages: "a named pipe (FIFO)",
// "a directory", ...
func FileKind(mode os.FileMode) string {
	switch {
	case mode.IsRegular():
		return "a regular file"
	case mode&os.ModeNamedPipe != 0:
		return "a named pipe (FIFO)"
	case mode&os.ModeSocket != 0:
		return "a socket"
	case mode&os.ModeCharDevice != 0:
		return "a character device"
	case mode&os.ModeDevice != 0:
		return "a block device"
	case mode.IsDir():
		return "a directory"
	case mode&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "a special file (" + mode.Type().String() + ")"
}

// IsFileOrDevice reports whether mode is a regular file's or a block
// device's: the only kinds thinback reads volumes and delta files from or
// writes them to.
func IsFileOrDevice(mode os.FileMode) bool {
	return mode.IsRegular() || (mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0)
}

func kindError(path string, mode os.FileMode) error {
	return fmt.Errorf("%s is %s: %w; give a regular file or a block device", path, FileKind(mode), ErrFileKind)
}

// OpenFile opens a regular file or block device for reading. Anything else
// is refused before it can block: open(2) of a FIFO waits for a writer,
// forever and deaf to signals, and a read of a terminal waits for a user.
// So the path is checked with stat first, opened with O_NONBLOCK (which
// does not wait), and the open file is checked again, in case the path
// changed in between.
func OpenFile(path string) (*os.File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !IsFileOrDevice(st.Mode()) {
		return nil, kindError(path, st.Mode())
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := CheckOpenFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// CheckOpenFile checks that f, opened with O_NONBLOCK, is a regular file or
// block device, and clears O_NONBLOCK: on those it has no effect on reads
// and writes, but some block drivers read it as "open without media".
func CheckOpenFile(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !IsFileOrDevice(st.Mode()) {
		return kindError(f.Name(), st.Mode())
	}
	// Fd puts the file into blocking mode; SetNonblock says so explicitly.
	if err := unix.SetNonblock(int(f.Fd()), false); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}
