package catalog

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// This file is thinback's one way of giving a finished file its name: the
// store's delta files, `send -o` files and snapback files all go through
// it. See "Publishing a file" in the package documentation.

// noReplace selects how publish renames without replacing. Tests force the
// fallbacks a filesystem may lack on filesystems that have them all.
var noReplace = struct {
	skipRenameat2, skipLink bool
}{}

// SyncDir fsyncs the directory dir, making the creation, rename or removal
// of its entries durable. A failure to close the directory is reported too.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
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

// Publish makes f, a finished file written under a temporary name in the
// directory of final, durable under the name final, without ever replacing
// a file of that name:
//
//  1. fsync f;
//  2. rename f to final without replacing (see renameNoReplace);
//  3. close f, whose error can be a delayed write error (NFS);
//  4. fsync final's directory.
//
// f is closed when Publish returns. On success the temporary name is gone.
// On failure final does not exist, unless someone else's file had that
// name (the error then wraps fs.ErrExist), and the temporary file is left
// for the caller to remove. Errors of a full filesystem or of a file too
// large for it are typed as by WriteError.
func Publish(f *os.File, final string) error { return publish(f, final, "publish") }

// publish is Publish with the name of its crash-test hook points.
func publish(f *os.File, final, op string) error {
	tmp := f.Name()
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return WriteError(tmp, fmt.Errorf("sync %s: %w", tmp, err))
	}
	if err := renameNoReplace(tmp, final); err != nil {
		_ = f.Close()
		return WriteError(final, err)
	}
	at(op + ":renamed")
	if err := f.Close(); err != nil {
		return unpublish(final, WriteError(final, fmt.Errorf("close %s: %w", final, err)))
	}
	if err := SyncDir(filepath.Dir(final)); err != nil {
		return unpublish(final, WriteError(final, err))
	}
	return nil
}

// unpublish removes a file Publish renamed into place but could not make
// durable, and returns err, with the failure to remove it if any.
func unpublish(final string, err error) error {
	if rerr := os.Remove(final); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		return fmt.Errorf("%w (and %s, which may be incomplete, could not be removed: %v)", err, final, rerr)
	}
	return err
}

// renameNoReplace renames oldpath to newpath and fails with an error
// wrapping fs.ErrExist if newpath exists, even when another process races
// for the name. Three ways, the first the filesystem has:
//
//   - renameat2(RENAME_NOREPLACE): atomic, and a crash leaves either name;
//   - a hard link, then unlink of the old name (some network and FUSE
//     filesystems): link fails atomically if the name exists, and a crash
//     in between leaves both names of one complete file;
//   - an exclusive create of newpath, reserving the name, then a rename of
//     oldpath over that empty file once it is checked to be still the one
//     created here (filesystems without either, such as vfat and exfat on
//     kernels whose FAT drivers lack RENAME_NOREPLACE). A crash in between
//     leaves an empty file under the final name: not a delta file, so
//     nothing mistakes it for one, and the store removes it as an orphan.
func renameNoReplace(oldpath, newpath string) error {
	exists := func() error {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: fs.ErrExist}
	}
	if !noReplace.skipRenameat2 {
		err := unix.Renameat2(unix.AT_FDCWD, oldpath, unix.AT_FDCWD, newpath, unix.RENAME_NOREPLACE)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EEXIST):
			return exists()
		case !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EOPNOTSUPP):
			return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
		}
	}
	if !noReplace.skipLink {
		err := os.Link(oldpath, newpath)
		switch {
		case err == nil:
			if err := os.Remove(oldpath); err != nil {
				// Both names are the same complete file: undo the new one,
				// so the caller's cleanup of the temp name leaves nothing.
				_ = os.Remove(newpath)
				return err
			}
			return nil
		case errors.Is(err, fs.ErrExist):
			return exists()
		case !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EXDEV) &&
			!errors.Is(err, unix.EMLINK) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL):
			return err
		}
	}
	// Reserve the name, then rename over our own placeholder.
	ph, err := os.OpenFile(newpath, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return exists()
	}
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	mine, serr := ph.Stat()
	if cerr := ph.Close(); serr == nil {
		serr = cerr
	}
	if serr != nil {
		_ = os.Remove(newpath)
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: serr}
	}
	at("publish:reserved")
	now, err := os.Lstat(newpath)
	if err != nil || !os.SameFile(mine, now) || now.Size() != 0 {
		// Someone replaced the placeholder: their file, not ours.
		return exists()
	}
	if err := os.Rename(oldpath, newpath); err != nil {
		_ = os.Remove(newpath)
		return err
	}
	return nil
}

// CreateExclusive creates the file path for writing in place, failing with
// an error wrapping fs.ErrExist if anything (a file, a symlink, even a
// dangling one) has that name, and makes the new name durable before it
// returns, so that whatever the caller writes and fsyncs there survives a
// crash under that name. It is for files that are complete at every
// checkpoint, such as snapback files; other files are written under a
// temporary name and published (CreatePending).
func CreateExclusive(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, WriteError(path, err)
	}
	if err := SyncDir(filepath.Dir(path)); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, WriteError(path, err)
	}
	return f, nil
}

// Pending is a file being written under a temporary name next to its
// final one; Publish gives it the final name, Discard removes it. The zero
// value is not usable: see CreatePending.
type Pending struct {
	*os.File
	final string
	done  bool
}

// CreatePending starts writing the file final: it fails with an error
// wrapping fs.ErrExist if final exists, and otherwise creates an empty
// temporary file .<base>.<random>.tmp in final's directory (a rename does
// not cross filesystems). Write to it through the embedded *os.File, then
// call Publish, or Discard to give up; Discard after Publish does nothing,
// so `defer p.Discard()` is safe.
func CreatePending(final string) (*Pending, error) {
	if _, err := os.Lstat(final); err == nil {
		return nil, &fs.PathError{Op: "create", Path: final, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	dir, base := filepath.Split(final)
	if dir == "" {
		dir = "."
	}
	for range 10 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		tmp := filepath.Join(dir, "."+base+"."+hex.EncodeToString(rnd[:])+".tmp")
		f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, WriteError(tmp, err)
		}
		return &Pending{File: f, final: final}, nil
	}
	return nil, &fs.PathError{Op: "create", Path: filepath.Join(dir, "."+base+".*.tmp"), Err: fs.ErrExist}
}

// Final returns the name Publish gives the file.
func (p *Pending) Final() string { return p.final }

// Publish makes the file durable under its final name (see the function
// Publish) and removes the temporary one. On failure nothing is left.
func (p *Pending) Publish() error {
	if p.done {
		return fmt.Errorf("catalog: %s: %w", p.final, os.ErrClosed)
	}
	p.done = true
	tmp := p.Name()
	if err := Publish(p.File, p.final); err != nil {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			return fmt.Errorf("%w (and removing %s failed: %v)", err, tmp, rerr)
		}
		return err
	}
	return nil
}

// Discard closes and removes the temporary file, unless Publish was
// called. Both failures are reported.
func (p *Pending) Discard() error {
	if p.done {
		return nil
	}
	p.done = true
	cerr := p.Close()
	if err := os.Remove(p.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("discard %s: %w", p.Name(), err)
	}
	if cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		return fmt.Errorf("discard %s: %w", p.Name(), cerr)
	}
	return nil
}
