package catalog

import (
	"errors"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// hook, when set by a test, is called at named points of Commit, Replace,
// Remove and Publish, so a test can stop the process exactly there
// (SIGKILL) and check what a crash at that point leaves behind. It is nil
// in production.
var hook func(point string)

func at(point string) {
	if hook != nil {
		hook(point)
	}
}

// isNoSpace reports whether err means the filesystem (or the user's quota)
// is full.
func isNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// noSpace gives a disk-full error its type, naming path; other errors are
// returned unchanged.
func noSpace(path string, err error) error {
	if err != nil && isNoSpace(err) && !errors.Is(err, ErrNoSpace) {
		return &NoSpaceError{Path: path, Err: err}
	}
	return err
}

// fatMaxFileSize is the largest file FAT (vfat, msdos) can hold: its
// directory entries keep a file's size in 32 bits.
const fatMaxFileSize = 1<<32 - 1

// WriteError gives the errors of writing a file whose cause the user must
// act on their types, naming path: a full filesystem or quota becomes a
// NoSpaceError (ErrNoSpace), a file that would pass the largest size its
// filesystem allows (EFBIG, such as FAT's 4 GiB) a TooLargeError
// (ErrTooLarge). Other errors, and nil, are returned unchanged.
func WriteError(path string, err error) error {
	switch {
	case err == nil || errors.Is(err, ErrNoSpace) || errors.Is(err, ErrTooLarge):
		return err
	case isNoSpace(err):
		return &NoSpaceError{Path: path, Err: err}
	case errors.Is(err, unix.EFBIG):
		e := &TooLargeError{Path: path, Err: err}
		var st unix.Statfs_t
		if unix.Statfs(filepath.Dir(path), &st) == nil {
			switch uint32(st.Type) {
			case unix.MSDOS_SUPER_MAGIC:
				e.FS, e.Limit = "FAT", fatMaxFileSize
			}
		}
		return e
	}
	return err
}
