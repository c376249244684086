package catalog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// held records the volume lock files this process holds, by absolute
// path. flock conflicts between two opens of one file even inside one
// process, so a second LockVolume here fails like one from another
// process; the set lets RemoveOrphans know which volumes this process is
// the writer of.
var held = struct {
	sync.Mutex
	paths map[string]bool
}{paths: make(map[string]bool)}

func lockHeld(path string) bool {
	held.Lock()
	defer held.Unlock()
	return held.paths[path]
}

// lockPath returns the lock file of a volume.
func (s *Store) lockPath(volume string) string {
	return filepath.Join(s.dir, "locks", DirName(volume)+".lock")
}

// LockVolume takes the volume's lock without waiting: a non-blocking
// flock on locks/<DirName(volume)>.lock in the store. When another process
// (or another LockVolume call in this one) holds it, the error is a
// LockedError (errors.Is ErrLocked) naming the volume, the lock file and,
// when known, the holder's pid.
//
// The lock is released by unlock, or by the kernel when the process dies,
// so a crashed backup never leaves a stale lock. Lock files are never
// removed: removing one while another process waits on it would let two
// processes hold "the" lock at once.
func (s *Store) LockVolume(volume string) (unlock func() error, err error) {
	if err := ValidVolumeName(volume); err != nil {
		return nil, err
	}
	path := s.lockPath(volume)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("catalog: lock volume %q: %w", volume, err)
	}
	held.Lock()
	defer held.Unlock()
	if held.paths[path] {
		return nil, &LockedError{Volume: volume, Path: path, PID: os.Getpid()}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("catalog: lock volume %q: %w", volume, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		pid := readPID(f)
		_ = f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, &LockedError{Volume: volume, Path: path, PID: pid}
		}
		return nil, fmt.Errorf("catalog: lock volume %q: flock %s: %w", volume, path, err)
	}
	// The pid is only for the message of whoever finds the lock taken;
	// the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	held.paths[path] = true
	var (
		once sync.Once
		cerr error
	)
	return func() error {
		once.Do(func() {
			held.Lock()
			delete(held.paths, path)
			held.Unlock()
			cerr = f.Close()
		})
		return cerr
	}, nil
}

func readPID(f *os.File) int {
	buf := make([]byte, 32)
	n, _ := f.ReadAt(buf, 0)
	pid, err := strconv.Atoi(strings.TrimSpace(string(buf[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
