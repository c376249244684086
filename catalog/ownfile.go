package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotOwn: a path where thinback keeps its own file or directory (in a
// store, or the state file) is a symbolic link, a special file or a file
// with other hard links. Following it would let whoever planted it make
// thinback truncate or overwrite any file it can write. See NotOwnError.
var ErrNotOwn = errors.New("not a file or directory of thinback's own")

// NotOwnError names a path that OpenOwn or OwnDir refused, and what was
// found there.
type NotOwnError struct {
	Path  string
	Found string // "a symbolic link", "a named pipe", "a file with 2 hard links", ...
}

func (e *NotOwnError) Error() string {
	return fmt.Sprintf("%s is %s, where thinback keeps its own file or directory: refusing to use it "+
		"(remove it if you did not put it there, and check who did)", e.Path, e.Found)
}

// Is makes errors.Is(err, ErrNotOwn) true.
func (e *NotOwnError) Is(target error) bool { return target == ErrNotOwn }

// describeMode says in words what kind of file m is.
func describeMode(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	case m.IsDir():
		return "a directory"
	case m.IsRegular():
		return "a regular file"
	}
	return "a special file"
}

// OpenOwn opens a file that thinback keeps for itself (a catalog, a lock
// file, a temp file, the state file) like os.OpenFile, but only if it is
// a regular file reached without following a symbolic link in its last
// component, and, when opened for writing, one with no other hard link:
// a planted link cannot turn a truncate of a lock file into a truncate of
// /etc/shadow. The open itself does not block on a named pipe put in its
// place. The directories above the file are not checked here (see OwnDir).
// A refused path gives a NotOwnError (ErrNotOwn) naming it.
func OpenOwn(path string, flag int, perm os.FileMode) (*os.File, error) {
	// O_NONBLOCK only matters for what is not a regular file (a FIFO
	// would block in open(2) until a writer came); it is cleared below
	// before the file is used.
	f, err := os.OpenFile(path, flag|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, &NotOwnError{Path: path, Found: "a symbolic link"}
			}
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		_ = f.Close()
		return nil, &NotOwnError{Path: path, Found: describeMode(fi.Mode())}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && flag&(os.O_WRONLY|os.O_RDWR) != 0 && st.Nlink > 1 {
		_ = f.Close()
		return nil, &NotOwnError{Path: path, Found: fmt.Sprintf("a file with %d hard links", st.Nlink)}
	}
	if err := clearNonblock(f); err != nil {
		_ = f.Close()
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return f, nil
}

func clearNonblock(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetNonblock(int(fd), false) }); err != nil {
		return err
	}
	return serr
}

// OwnDir checks that path is a directory and not a symbolic link to one:
// the directories thinback makes inside a store (volumes/, a volume's
// directory, tmp/, locks/) and the state file's directory. With create,
// a missing directory is made with mode 0700 (its parent must exist);
// created reports whether this call made it. A refused path gives a
// NotOwnError (ErrNotOwn) naming it.
//
// The check and the later use of the directory are separate steps, so an
// attacker who can write to the store while thinback runs could still
// swap a directory in between; what this closes is the link planted
// beforehand, on a disk or share someone else controls.
func OwnDir(path string, create bool) (created bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		if err := os.Mkdir(path, 0o700); err == nil {
			return true, nil
		} else if !errors.Is(err, fs.ErrExist) {
			return false, err
		}
		fi, err = os.Lstat(path)
	}
	if err != nil {
		return false, err
	}
	if !fi.IsDir() {
		return false, &NotOwnError{Path: path, Found: describeMode(fi.Mode())}
	}
	return false, nil
}
