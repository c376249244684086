package lvmthin

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"time"
)

// LockDirError reports a directory of pool locks, or a lock file in it,
// that thinback refuses to use: a symbolic link, something other than a
// directory (or a regular file), one not owned by the user thinback runs
// as, or one that group or others may write to. Through such a path
// another local user could make thinback create or truncate a file of
// their choice, or hold a pool's lock to stop the backups.
type LockDirError struct {
	Path    string
	Problem string // "is a symbolic link", "is owned by uid 1000", ...
	Fix     string // what to do about it
}

func (e *LockDirError) Error() string {
	return fmt.Sprintf("%s %s: refusing to use it for thinback's pool locks; %s", e.Path, e.Problem, e.Fix)
}

// privateLockDir checks that dir is a directory of thinback's own, making
// it (mode 0700) if it is missing: not a symbolic link, owned by the
// effective user (root, for LVM), and not writable by group or others, as
// ssh checks a key directory. Its parent (/run) is the system's.
func privateLockDir(dir string) error {
	fi, err := os.Lstat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("make the lock directory: %w", err)
		}
		fi, err = os.Lstat(dir)
	}
	if err != nil {
		return err
	}
	remove := fmt.Sprintf("remove it (rm -r %s) if you did not make it, and check who did; thinback makes it again", dir)
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		return &LockDirError{Path: dir, Problem: "is a symbolic link", Fix: remove}
	case !fi.IsDir():
		return &LockDirError{Path: dir, Problem: "is not a directory", Fix: remove}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return &LockDirError{Path: dir, Problem: fmt.Sprintf("is owned by uid %d, not by uid %d that thinback runs as", st.Uid, os.Geteuid()),
			Fix: fmt.Sprintf("chown it to uid %d (and chmod 0700 it), or %s", os.Geteuid(), remove)}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &LockDirError{Path: dir, Problem: fmt.Sprintf("is writable by group or others (mode %04o)", fi.Mode().Perm()),
			Fix: fmt.Sprintf("chmod 0700 %s, or %s", dir, remove)}
	}
	return nil
}

// openLockFile opens (creating it, mode 0600) a pool's lock file, never
// through a symbolic link (O_NOFOLLOW), and only if it is a regular file
// with no other hard link. O_NONBLOCK keeps open(2) from blocking on a
// named pipe put in its place; it is cleared before the file is used.
func openLockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, &LockDirError{Path: path, Problem: "is a symbolic link",
				Fix: "remove it if you did not put it there, and check who did"}
		}
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.Mode().IsRegular():
		f.Close()
		return nil, &LockDirError{Path: path, Problem: "is not a regular file", Fix: "remove it if you did not put it there, and check who did"}
	case st != nil && st.Nlink > 1:
		f.Close()
		return nil, &LockDirError{Path: path, Problem: fmt.Sprintf("has %d hard links", st.Nlink), Fix: "remove it if you did not put it there, and check who did"}
	}
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, &os.PathError{Op: "fcntl", Path: path, Err: err}
	}
	return f, nil
}

// holder is what the holder of a pool's lock writes into the lock file,
// so that a process finding the lock busy can say who has it.
type holder struct {
	PID     int       `json:"pid"`
	Command string    `json:"command"`
	Since   time.Time `json:"since"`
}

// maxHolder bounds what is read of a lock file, and the command line
// written into it.
const maxHolder = 4 << 10

// writeHolder replaces the lock file's contents with this process's pid,
// command line and the time; the caller holds the flock.
func writeHolder(f *os.File) error {
	cmd := strings.Join(os.Args, " ")
	if len(cmd) > maxHolder/2 {
		cmd = cmd[:maxHolder/2] + "..."
	}
	data, err := json.Marshal(holder{PID: os.Getpid(), Command: cmd, Since: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err = f.WriteAt(append(data, '\n'), 0)
	return err
}

// readHolder says who holds the lock of the busy lock file f: "pid 1234
// (thinback backup vg0/vm1) since 2026-12-07T03:00:00Z", and whether it
// could tell. The holder writes that just after it takes the lock, so a
// process that finds nothing readable, or a pid that no longer runs, was
// a moment too early.
func readHolder(f *os.File) (string, bool) {
	const unknown = "a process that has not written its name into the lock file yet"
	data, err := io.ReadAll(io.NewSectionReader(f, 0, maxHolder))
	var h holder
	if err != nil || json.Unmarshal(data, &h) != nil || h.PID <= 0 {
		return unknown, false
	}
	if err := syscall.Kill(h.PID, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return unknown, false
	}
	return fmt.Sprintf("pid %d (%s) since %s", h.PID, h.Command, h.Since.Format(time.RFC3339)), true
}
