package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTiny mounts a 1 MiB tmpfs and returns its path. It skips the test
// where mounting is not permitted.
func mountTiny(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("mounting a tmpfs is not permitted here: %v", err)
		}
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill writes to path until the filesystem is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !isNoSpace(err) {
				t.Fatalf("filling: %v", err)
			}
			return
		}
	}
}

func TestNoSpace(t *testing.T) {
	mnt := mountTiny(t)
	filler := filepath.Join(mnt, "filler")
	// Registered after the mount, so the store's final check runs while
	// it is still mounted.
	ts := openTestStore(t, filepath.Join(mnt, "store"))
	ts.putVolume("vg0/vm1")
	full := ts.commit("vg0/vm1", "", []byte("a small full"))
	tmpDir := filepath.Join(ts.Dir(), "tmp")
	volDir := filepath.Join(ts.Dir(), "volumes")
	filesBefore := dirFiles(t, volDir)

	// A delta file completely written before the disk filled up.
	ready := ts.temp("vg0/vm1", make([]byte, 64<<10))
	fill(t, filler)

	// Writing a delta file fails with ENOSPC; Discard leaves nothing.
	f, err := ts.CreateTemp("vg0/vm1")
	if err == nil {
		var werr error
		for i := 0; i < 64 && werr == nil; i++ {
			_, werr = f.Write(make([]byte, 64<<10))
		}
		if !isNoSpace(werr) {
			t.Errorf("writing to a full disk: %v, want ENOSPC", werr)
		}
		if err := ts.Discard(f); err != nil {
			t.Fatal(err)
		}
	} else if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("CreateTemp on a full disk: %v, want ErrNoSpace", err)
	}

	// Committing the finished one cannot record it: a clean, typed error
	// naming the file, and nothing left in volumes/ or tmp/.
	snap := Snapshot{ID: newID(), Volume: "vg0/vm1", Parent: full.ID, ParentSize: full.VolumeSize, Time: baseTime, FileDigest: "00"}
	err = ts.Commit(ready, &snap)
	var nse *NoSpaceError
	if !errors.Is(err, ErrNoSpace) || !errors.As(err, &nse) || !strings.Contains(err.Error(), nse.Path) ||
		!strings.HasPrefix(nse.Path, ts.Dir()) {
		t.Fatalf("Commit on a full disk: %v, want a NoSpaceError naming a path in the store", err)
	}
	t.Logf("Commit on a full disk: %v", err)
	if got := dirFiles(t, volDir); strings.Join(got, " ") != strings.Join(filesBefore, " ") {
		t.Errorf("volumes/ holds %v, want %v", got, filesBefore)
	}
	if got := dirFiles(t, tmpDir); len(got) != 0 {
		t.Errorf("tmp/ holds %v", got)
	}
	mustView(t, ts, func(tx *Tx) error {
		if _, err := tx.Snapshot(snap.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("snapshot recorded despite the error: %v", err)
		}
		return nil
	})

	// With space again, the next backup works.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	ts.commit("vg0/vm1", full.ID, make([]byte, 64<<10))
}

// A store on read-only media (a backup disk mounted read-only for a
// restore) opens and reads; writes fail cleanly.
func TestReadOnlyStore(t *testing.T) {
	mnt := mountTiny(t)
	ts := openTestStore(t, filepath.Join(mnt, "store"))
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("A"))
	if err := unix.Mount("tmpfs", mnt, "tmpfs", unix.MS_REMOUNT|unix.MS_RDONLY, "size=1m"); err != nil {
		t.Fatalf("remount read-only: %v", err)
	}
	ro, err := OpenStore(ts.Dir())
	if err != nil {
		t.Fatalf("OpenStore on read-only media: %v", err)
	}
	mustView(t, ro, func(tx *Tx) error {
		latest, err := tx.Latest("v")
		if err == nil && latest.ID != a.ID {
			t.Errorf("Latest = %s, want %s", latest.ID, a.ID)
		}
		return err
	})
	if problems, err := ro.Check(CheckOptions{}); err != nil || len(problems) != 0 {
		t.Errorf("Check: %v, %v", problems, err)
	}
	if _, err := ro.CreateTemp("v"); !errors.Is(err, unix.EROFS) {
		t.Errorf("CreateTemp on read-only media: %v, want EROFS", err)
	}
	if err := ro.Update(func(tx *Tx) error { return tx.PutVolume(testVolume("w")) }); !errors.Is(err, unix.EROFS) {
		t.Errorf("Update on read-only media: %v, want EROFS", err)
	}
	// A store that does not exist yet cannot be created there.
	if _, err := OpenStore(filepath.Join(mnt, "other")); err == nil {
		t.Error("OpenStore created a store on read-only media")
	}
}
