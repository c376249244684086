package catalog

import (
	"errors"
	"fmt"
	"io/fs"
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
// so a crashed backup never leaves a stale lock. unlock removes the lock
// file while it still holds the flock, and LockVolume checks after taking
// a flock that the path still names the file it locked (else it starts
// again), so a lock file exists only while it is held (or after a crash,
// until the next LockVolume) and removing it never lets two processes
// hold "the" lock at once.
//
// The lock file and locks/ are never followed when they are symbolic
// links (NotOwnError): the pid is written into the file, and a link
// planted in a store someone else controls must not make thinback
// truncate another file.
func (s *Store) LockVolume(volume string) (unlock func() error, err error) {
	if err := ValidVolumeName(volume); err != nil {
		return nil, err
	}
	return lockFile(s.lockPath(volume), volume, fmt.Sprintf("lock volume %q", volume))
}

// LockFile takes the lock file at path as LockVolume takes a volume's,
// for a volume worked on outside any store (a replicated LV): the same
// flock and LockedError (errors.Is ErrLocked) naming volume.
func LockFile(path, volume string) (unlock func() error, err error) {
	return lockFile(path, volume, fmt.Sprintf("lock volume %q", volume))
}

// keySlotsLock is the lock file of the key slots in locks/. DirName
// escapes a leading dot, so no volume's lock file has this name.
const keySlotsLock = ".keys.lock"

// LockKeySlots takes the lock of the store's key slots without waiting,
// as LockVolume takes a volume's (the same flock, on locks/.keys.lock):
// commands that change the slots hold it, so two of them never each
// remove a slot the other counted on, or make two master keys. When it is
// held the error is a LockedError with no Volume (errors.Is ErrLocked).
func (s *Store) LockKeySlots() (unlock func() error, err error) {
	return lockFile(filepath.Join(s.dir, "locks", keySlotsLock), "", "lock the key slots")
}

// lockFile takes the flock of the lock file path for volume ("" for the
// key slots); what says what for the messages.
func lockFile(path, volume, what string) (unlock func() error, err error) {
	if _, err := OwnDir(filepath.Dir(path), true); err != nil {
		return nil, fmt.Errorf("catalog: %s: %w", what, noSpace(path, err))
	}
	held.Lock()
	defer held.Unlock()
	if held.paths[path] {
		return nil, &LockedError{Volume: volume, Path: path, PID: os.Getpid()}
	}
	var f *os.File
	for {
		f, err = OpenOwn(path, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("catalog: %s: %w", what, noSpace(path, err))
		}
		at("lock:opened")
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := readPID(f)
			_ = f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &LockedError{Volume: volume, Path: path, PID: pid}
			}
			return nil, fmt.Errorf("catalog: %s: flock %s: %w", what, path, err)
		}
		same, err := stillNamed(f, path)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("catalog: %s: %w", what, err)
		}
		if same {
			break
		}
		// The holder removed the file between our open and our flock:
		// what we locked is no one's lock any more.
		_ = f.Close()
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
			// Removed while the flock is held, so no one else holds a
			// lock on this inode, and whoever opened it meanwhile finds
			// it no longer named by the path once they lock it.
			if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				cerr = fmt.Errorf("catalog: remove lock file: %w", err)
			}
			if err := f.Close(); err != nil && cerr == nil {
				cerr = err
			}
		})
		return cerr
	}, nil
}

// stillNamed reports whether path still names the open file f.
func stillNamed(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
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
