package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// hook, when set by a test, is called at named points of Commit, Replace
// and Remove, so a test can stop the process exactly there (SIGKILL) and
// check what a crash at that point leaves behind. It is nil in
// production.
var hook func(point string)

func at(point string) {
	if hook != nil {
		hook(point)
	}
}

// syncDir fsyncs a directory, making the creation, rename or removal of its
// entries durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// renameNoReplace renames oldpath to newpath and fails with an error
// wrapping fs.ErrExist if newpath exists: a file in the store is never
// overwritten, even by a second process racing for the same name.
func renameNoReplace(oldpath, newpath string) error {
	err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EEXIST):
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP):
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	// The filesystem cannot rename without replacing (some network and
	// FUSE filesystems). A hard link fails atomically if the name exists;
	// a crash between link and unlink leaves only a stale temp file.
	err = os.Link(oldpath, newpath)
	if err == nil {
		return os.Remove(oldpath)
	}
	if errors.Is(err, fs.ErrExist) {
		return err
	}
	// No hard links either (vfat, exfat). Check and rename: the volume
	// lock keeps other thinback processes from racing for the name.
	if _, serr := os.Lstat(newpath); serr == nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	}
	return os.Rename(oldpath, newpath)
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
