package catalog

import (
	"crypto/rand"
	"encoding/hex"
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

// Temp files are named tbk.<pid>.<random>.<DirName(volume)>.tmp. The pid
// and a flock held on the open file tell CleanTemp whether a writer is
// still alive.
const (
	tempPrefix = "tbk."
	tempSuffix = ".tmp"
)

// liveTemps are the temp files this process created and has not yet
// committed or discarded. After Commit closes a temp file (dropping its
// flock) and before it renames it, only this set protects it from a
// CleanTemp running in the same process.
var liveTemps = struct {
	sync.Mutex
	names map[string]bool
}{names: make(map[string]bool)}

func setLive(name string, live bool) {
	liveTemps.Lock()
	defer liveTemps.Unlock()
	if live {
		liveTemps.names[name] = true
	} else {
		delete(liveTemps.names, name)
	}
}

func isLive(name string) bool {
	liveTemps.Lock()
	defer liveTemps.Unlock()
	return liveTemps.names[name]
}

// CreateTemp creates a new file in the store's tmp/ for writing a delta
// file of volume. Hand it to Commit (or Replace) when it is complete, or to
// Discard to give up. The file is flocked while open, so CleanTemp in
// another process leaves it alone even if this process's pid were reused.
func (s *Store) CreateTemp(volume string) (*os.File, error) {
	if err := ValidVolumeName(volume); err != nil {
		return nil, err
	}
	return s.createTemp(DirName(volume))
}

// createTemp is CreateTemp for a file whose temp name ends in tag.
func (s *Store) createTemp(tag string) (*os.File, error) {
	// tmp/ must be the store's own: a link to another directory would put
	// the file (and CleanTemp's removals) there.
	if _, err := OwnDir(s.tmpDir(), false); err != nil {
		return nil, fmt.Errorf("catalog: create temp file: %w", err)
	}
	for range 10 {
		var rnd [6]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, err
		}
		name := filepath.Join(s.tmpDir(), fmt.Sprintf("%s%d.%s.%s%s",
			tempPrefix, os.Getpid(), hex.EncodeToString(rnd[:]), tag, tempSuffix))
		f, err := OpenOwn(name, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return nil, noSpace(name, fmt.Errorf("catalog: create temp file: %w", err))
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			_ = f.Close()
			_ = os.Remove(name)
			return nil, fmt.Errorf("catalog: lock temp file %s: %w", name, err)
		}
		setLive(name, true)
		return f, nil
	}
	return nil, fmt.Errorf("catalog: create temp file in %s: %w", s.tmpDir(), fs.ErrExist)
}

// Discard closes and removes a temp file from CreateTemp. It is safe to
// call on a file that is already closed or removed.
func (s *Store) Discard(tmp *os.File) error {
	name := tmp.Name()
	defer setLive(name, false)
	cerr := tmp.Close()
	if err := os.Remove(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("catalog: discard temp file: %w", err)
	}
	if cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		return fmt.Errorf("catalog: discard temp file: %w", cerr)
	}
	return nil
}

// ownTemp refuses files that CreateTemp did not make in this store: Commit
// must be able to rename within one filesystem and must not consume a
// caller's unrelated file.
func (s *Store) ownTemp(tmp *os.File) error {
	name := tmp.Name()
	if filepath.Dir(name) != s.tmpDir() {
		return fmt.Errorf("catalog: %s is not a temp file of store %s (use CreateTemp)", name, s.dir)
	}
	if _, ok := parseTempName(filepath.Base(name)); !ok {
		return fmt.Errorf("catalog: %s is not a temp file of store %s (use CreateTemp)", name, s.dir)
	}
	return nil
}

// parseTempName returns the writer's pid from a temp file name.
func parseTempName(base string) (pid int, ok bool) {
	rest, ok := strings.CutPrefix(base, tempPrefix)
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, tempSuffix)
	if !ok {
		return 0, false
	}
	fields := strings.SplitN(rest, ".", 3)
	if len(fields) != 3 || fields[2] == "" {
		return 0, false
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil || pid <= 0 || strconv.Itoa(pid) != fields[0] {
		return 0, false
	}
	if _, err := hex.DecodeString(fields[1]); err != nil || len(fields[1]) != 12 {
		return 0, false
	}
	return pid, true
}

// processAlive reports whether a process with this pid exists (EPERM means
// it exists but belongs to someone else).
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// CleanTemp removes temp files left by writers that died (a crash, kill -9,
// power loss) and returns them, store-relative, for the caller to report.
// A temp file is removed only when all of these hold, so a live writer's
// file is never touched:
//   - this process is not writing it (created here and not yet committed
//     or discarded);
//   - the pid in its name is not a running process (a pid of this process
//     means a dead earlier process whose pid was reused);
//   - no one holds its flock: a writer keeps its temp file locked while
//     writing, which also covers writers in another pid namespace.
//
// Files in tmp/ that do not look like thinback temp files are left alone.
func (s *Store) CleanTemp() ([]string, error) {
	if _, err := OwnDir(s.tmpDir(), false); err != nil {
		return nil, fmt.Errorf("catalog: clean temp files: %w", err)
	}
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("catalog: clean temp files: %w", err)
	}
	var (
		removed  []string
		firstErr error
	)
	for _, e := range entries {
		pid, ok := parseTempName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(s.tmpDir(), e.Name())
		if isLive(name) || (pid != os.Getpid() && processAlive(pid)) {
			continue
		}
		gone, err := removeUnlocked(name)
		if err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("catalog: clean temp files: %w", err)
			}
			continue
		}
		if gone {
			removed = append(removed, "tmp/"+e.Name())
		}
	}
	if len(removed) > 0 {
		if err := SyncDir(s.tmpDir()); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return removed, firstErr
}

// removeUnlocked removes name if no one holds its flock, and reports
// whether it did. The removal happens while holding the lock, so a writer
// cannot take it in between.
func removeUnlocked(name string) (bool, error) {
	f, err := OpenOwn(name, os.O_RDONLY, 0)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotOwn) {
		return false, nil // gone, or not a temp file of ours after all
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if errors.Is(err, unix.EWOULDBLOCK) {
			return false, nil
		}
		return false, err
	}
	if err := os.Remove(name); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}
