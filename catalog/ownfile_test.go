package catalog

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// victim is a file outside the store that a planted link points at; the
// test checks that it is exactly as it was.
type victim struct {
	path string
	data []byte
	mod  time.Time
}

func newVictim(t *testing.T, dir, name string, data []byte) *victim {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	return &victim{path: p, data: data, mod: old}
}

func (v *victim) untouched(t *testing.T) {
	t.Helper()
	fi, err := os.Stat(v.path)
	if err != nil {
		t.Fatalf("victim %s: %v", v.path, err)
	}
	got, err := os.ReadFile(v.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, v.data) || !fi.ModTime().Equal(v.mod) {
		t.Errorf("victim %s was changed: %q (modified %v), want %q (modified %v)", v.path, got, fi.ModTime(), v.data, v.mod)
	}
}

// wantNotOwn checks that err refuses path with a NotOwnError naming it.
func wantNotOwn(t *testing.T, err error, path string) {
	t.Helper()
	var ne *NotOwnError
	if !errors.Is(err, ErrNotOwn) || !errors.As(err, &ne) || ne.Path != path || !strings.Contains(err.Error(), path) {
		t.Fatalf("got %v, want a NotOwnError naming %s", err, path)
	}
	t.Logf("refused: %v", err)
}

func replaceWithLink(t *testing.T, path, target string) {
	t.Helper()
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// Every file and directory thinback keeps in a store (and the state file)
// is refused when a symbolic link was planted in its place, and the file
// the link points at is left exactly as it was.
func TestPlantedSymlinks(t *testing.T) {
	const volume = "vg0/vm1"
	t.Run("lock file", func(t *testing.T) {
		ts := newTestStore(t)
		v := newVictim(t, t.TempDir(), "shadow", []byte("root:$6$secret:19000:0:99999:7:::\n"))
		lock := ts.lockPath(volume)
		replaceWithLink(t, lock, v.path)
		_, err := ts.LockVolume(volume)
		wantNotOwn(t, err, lock)
		v.untouched(t)
	})
	t.Run("lock file hard link", func(t *testing.T) {
		ts := newTestStore(t)
		v := newVictim(t, filepath.Join(ts.Dir(), "..", "elsewhere"), "shadow", []byte("secret\n"))
		lock := ts.lockPath(volume)
		if err := os.Link(v.path, lock); err != nil {
			t.Fatal(err)
		}
		_, err := ts.LockVolume(volume)
		wantNotOwn(t, err, lock)
		v.untouched(t)
	})
	t.Run("locks directory", func(t *testing.T) {
		ts := newTestStore(t)
		outside := t.TempDir()
		v := newVictim(t, outside, DirName(volume)+".lock", []byte("precious\n"))
		locks := filepath.Join(ts.Dir(), "locks")
		replaceWithLink(t, locks, outside)
		_, err := ts.LockVolume(volume)
		wantNotOwn(t, err, locks)
		v.untouched(t)
	})
	t.Run("tmp directory", func(t *testing.T) {
		ts := newTestStore(t)
		outside := t.TempDir()
		// Named like the temp file of a dead writer: CleanTemp would
		// remove it if it followed the link.
		v := newVictim(t, outside, "tbk.999999999.0123456789ab.v.tmp", []byte("precious\n"))
		tmp := filepath.Join(ts.Dir(), "tmp")
		replaceWithLink(t, tmp, outside)
		_, err := ts.CreateTemp(volume)
		wantNotOwn(t, err, tmp)
		_, err = ts.CleanTemp()
		wantNotOwn(t, err, tmp)
		v.untouched(t)
		if names := dirFiles(t, outside); len(names) != 1 {
			t.Errorf("files appeared behind the link: %v", names)
		}
		// Put it back for the final check.
		replaceWithLink(t, tmp, outside)
		if err := os.Remove(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(tmp, 0o700); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("catalog", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "store")
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// An empty file is what bbolt would initialise in place.
		v := newVictim(t, t.TempDir(), "empty-but-mine", nil)
		db := filepath.Join(dir, "catalog.db")
		if err := os.Symlink(v.path, db); err != nil {
			t.Fatal(err)
		}
		_, err := OpenStore(dir)
		wantNotOwn(t, err, db)
		err = View(db, nil, func(*Tx) error { return nil })
		wantNotOwn(t, err, db)
		v.untouched(t)
	})
	t.Run("catalog is a FIFO", func(t *testing.T) {
		// Opening a FIFO for reading blocks until a writer comes: the
		// check must not hang.
		db := filepath.Join(t.TempDir(), "catalog.db")
		if err := unix.Mkfifo(db, 0o600); err != nil {
			t.Fatal(err)
		}
		err := View(db, nil, func(*Tx) error { return nil })
		wantNotOwn(t, err, db)
		err = Update(db, nil, func(*Tx) error { return nil })
		wantNotOwn(t, err, db)
	})
	t.Run("state file", func(t *testing.T) {
		v := newVictim(t, t.TempDir(), "victim", nil)
		state := filepath.Join(t.TempDir(), "state.db")
		if err := os.Symlink(v.path, state); err != nil {
			t.Fatal(err)
		}
		err := Update(state, nil, func(tx *Tx) error { return tx.PutTarget(&Target{Key: "/dev/x", Path: "/dev/x"}) })
		wantNotOwn(t, err, state)
		v.untouched(t)
	})
	t.Run("volumes directory", func(t *testing.T) {
		ts := newTestStore(t)
		ts.putVolume(volume)
		outside := t.TempDir()
		v := newVictim(t, outside, "precious", []byte("precious\n"))
		vols := filepath.Join(ts.Dir(), "volumes")
		replaceWithLink(t, vols, outside)
		f := ts.temp(volume, []byte("full"))
		snap := Snapshot{ID: newID(), Volume: volume, Time: baseTime, FileDigest: "00"}
		wantNotOwn(t, ts.Commit(f, &snap), vols)
		v.untouched(t)
		if names := dirFiles(t, outside); len(names) != 1 {
			t.Errorf("files appeared behind the link: %v", names)
		}
		if names := dirFiles(t, filepath.Join(ts.Dir(), "tmp")); len(names) != 0 {
			t.Errorf("tmp/ holds %v", names)
		}
		if err := os.Remove(vols); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(vols, 0o700); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("volume directory", func(t *testing.T) {
		ts := newTestStore(t)
		ts.putVolume(volume)
		outside := t.TempDir()
		v := newVictim(t, outside, "precious", []byte("precious\n"))
		vdir := filepath.Join(ts.Dir(), "volumes", DirName(volume))
		if err := os.Symlink(outside, vdir); err != nil {
			t.Fatal(err)
		}
		f := ts.temp(volume, []byte("full"))
		snap := Snapshot{ID: newID(), Volume: volume, Time: baseTime, FileDigest: "00"}
		wantNotOwn(t, ts.Commit(f, &snap), vdir)
		v.untouched(t)
		if names := dirFiles(t, outside); len(names) != 1 {
			t.Errorf("files appeared behind the link: %v", names)
		}
		// Check names the link as an orphan (a file in volumes/ that no
		// record references); remove it for the final check.
		ts.expect(ErrOrphan)
	})
}

// A store whose root is reached through a link the user chose (a backup
// disk mounted elsewhere) still works: only what is inside is checked.
func TestStoreRootThroughLink(t *testing.T) {
	real := filepath.Join(t.TempDir(), "real")
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Mkdir(real, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	ts := openTestStore(t, link)
	ts.putVolume("v")
	unlock, err := ts.LockVolume("v")
	if err != nil {
		t.Fatal(err)
	}
	ts.commit("v", "", []byte("full"))
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}

// A lock file exists only while it is held.
func TestLockFileRemovedOnUnlock(t *testing.T) {
	ts := newTestStore(t)
	unlock, err := ts.LockVolume("v")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(ts.lockPath("v")); err != nil {
		t.Fatalf("lock file while held: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if names := dirFiles(t, filepath.Join(ts.Dir(), "locks")); len(names) != 0 {
		t.Errorf("locks/ holds %v after unlock", names)
	}
}

// A LockVolume that opened the lock file just before its holder removed
// it (unlocking) must not count a flock on the removed file as the lock:
// it starts again on the file the path names now.
func TestLockVolumeFileRemovedMeanwhile(t *testing.T) {
	ts := newTestStore(t)
	path := ts.lockPath("v")
	// A crashed run's lock file, which the racing holder removes.
	if err := os.WriteFile(path, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opened := 0
	hook = func(p string) {
		if p != "lock:opened" {
			return
		}
		if opened++; opened == 1 {
			if err := os.Remove(path); err != nil {
				t.Error(err)
			}
		}
	}
	defer func() { hook = nil }()
	unlock, err := ts.LockVolume("v")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if opened != 2 {
		t.Errorf("LockVolume opened the lock file %d times, want 2 (once more after it was removed)", opened)
	}
	// The lock held is the one on the file the path names: another
	// process opening it now finds it taken.
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("lock file: %v", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("flock of the named lock file while held: %v, want EWOULDBLOCK", err)
	}
}

func TestOwnDir(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "d")
	if made, err := OwnDir(p, false); !errors.Is(err, os.ErrNotExist) || made {
		t.Errorf("missing, no create: %v, %v", made, err)
	}
	if made, err := OwnDir(p, true); err != nil || !made {
		t.Errorf("create: %v, %v", made, err)
	}
	if made, err := OwnDir(p, true); err != nil || made {
		t.Errorf("existing: %v, %v", made, err)
	}
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OwnDir(f, true)
	wantNotOwn(t, err, f)
}

// A link planted in place of a recorded delta file is reported by Check,
// even when it points at a file of the recorded size and contents.
func TestCheckPlantedDeltaLink(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	full := ts.commit("v", "", []byte("full"))
	copyPath := filepath.Join(t.TempDir(), "copy.tbk")
	if err := os.WriteFile(copyPath, []byte("full"), 0o600); err != nil {
		t.Fatal(err)
	}
	replaceWithLink(t, ts.Path(full.File), copyPath)
	problems, err := ts.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(problems) != 1 || !errors.Is(problems[0], ErrFileMissing) || !strings.Contains(problems[0].Error(), "symbolic link") {
		t.Fatalf("Check: %v, want the file reported as a symbolic link", problems)
	}
	ts.expect(ErrFileMissing)
}
