package restore

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

// TestWrittenFileTargetIsModified: a regular file target written to after
// an apply, anywhere, is modified, even where the sampled fingerprint
// cannot see it: four bytes in a block it did not sample (the probe's 4
// bytes at 12 MiB of a 16 MiB image); the same bytes written back over
// themselves; a write whose modification time was put back, as a coarse
// clock would leave it; a chmod. An incremental is then refused.
func TestWrittenFileTargetIsModified(t *testing.T) {
	const size = 16 << 20
	w := newWorld(t)
	v1 := w.image(w.random(size))
	v2 := w.image(w.mutate(v1.data, 20))
	full, incr := w.delta(v1, nil), w.delta(v2, v1)

	for _, tc := range []struct {
		name, says string
		modify     func(t *testing.T, path string, off int64, rec FileStat)
	}{
		{"4 bytes", "it was written to", func(t *testing.T, path string, off int64, rec FileStat) {
			scribble(t, path, off, 4)
		}},
		{"same bytes", "it was written to", func(t *testing.T, path string, off int64, rec FileStat) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 4)
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
		}},
		{"time put back", "its inode was changed", func(t *testing.T, path string, off int64, rec FileStat) {
			scribble(t, path, off, 4)
			mt := time.Unix(0, rec.Mtime)
			if err := os.Chtimes(path, time.Time{}, mt); err != nil {
				t.Fatal(err)
			}
		}},
		{"chmod", "its inode was changed", func(t *testing.T, path string, off int64, rec FileStat) {
			if err := os.Chmod(path, 0o640); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stateStore{}
			target := filepath.Join(t.TempDir(), "copy")
			if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
				t.Fatal(err)
			}
			rec := st.only(t)
			if rec.FileStat == nil {
				t.Fatal("no FileStat recorded for a regular file target")
			}
			off := unsampled(t, rec.Fingerprint, 12<<20)
			tc.modify(t, target, off, *rec.FileStat)
			// What the fingerprint alone says: nothing.
			old := rec
			old.FileStat = nil
			if got := verifyState(t, target, old); got.Modified != "" {
				t.Fatalf("the fingerprint saw the write at %d (%s): pick a block it does not sample", off, got.Modified)
			}
			got := verifyState(t, target, rec)
			if !strings.Contains(got.Modified, tc.says) {
				t.Fatalf("Modified = %q, want it to say %q", got.Modified, tc.says)
			}
			t.Log(got.Modified)
			_, err := st.apply(t, target, []string{incr}, Options{})
			if !errors.Is(err, ErrModified) {
				t.Fatalf("got %v, want ErrModified", err)
			}
			if _, err := st.apply(t, target, []string{full, incr}, Options{}); err != nil {
				t.Fatalf("the chain from its full: %v", err)
			}
			mustEqual(t, target, v2.data)
		})
	}
}

// TestFileStatAfterApply: what is recorded is what the file shows after
// thinback is done with it (its own fsync and close change nothing), so
// an untouched target takes its incremental; the modification time is a
// whole even second before the apply ended, which no later write can
// leave on it.
func TestFileStatAfterApply(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(300 * 4096))
	v2 := w.image(w.mutate(v1.data, 20))
	v3 := w.image(w.mutate(v2.data, 20))
	st := stateStore{}
	target := filepath.Join(t.TempDir(), "copy")
	first := w.delta(v1, nil)
	if _, err := st.apply(t, target, []string{first}, Options{}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	rec := *st.only(t).FileStat
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	sys := fi.Sys().(*syscall.Stat_t)
	now := FileStat{Size: fi.Size(), Mtime: sys.Mtim.Nano(), Ctime: sys.Ctim.Nano(), Dev: uint64(sys.Dev), Ino: sys.Ino}
	if now != rec {
		t.Fatalf("after the apply the file is %+v, the state recorded %+v", now, rec)
	}
	mt := time.Unix(0, rec.Mtime)
	if mt.UnixNano()%int64(2*time.Second) != 0 || mt.Add(2*time.Second).After(after) {
		t.Fatalf("modification time %s (the apply ended by %s): want a whole even second, two seconds or more before the apply ended", mt, after)
	}
	for _, next := range []string{w.delta(v2, v1), w.delta(v3, v2)} {
		if _, err := st.apply(t, target, []string{next}, Options{}); err != nil {
			t.Fatalf("the incremental on the untouched target: %v", err)
		}
	}
	mustEqual(t, target, v3.data)
}

// TestOldStateUsesFingerprint: a state recorded before FileStat existed
// still works: the fingerprint decides, seeing a write to a sampled block
// (a superblock) and letting an untouched target take its incremental.
func TestOldStateUsesFingerprint(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(300 * 4096))
	v2 := w.image(w.mutate(v1.data, 20))
	full, incr := w.delta(v1, nil), w.delta(v2, v1)
	target := filepath.Join(t.TempDir(), "copy")

	st := stateStore{}
	if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
		t.Fatal(err)
	}
	old := func() {
		for k, s := range st {
			s.FileStat = nil
			st[k] = s
		}
	}
	old()
	if _, err := st.apply(t, target, []string{incr}, Options{}); err != nil {
		t.Fatalf("untouched, an old state: %v", err)
	}
	mustEqual(t, target, v2.data)
	if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
		t.Fatal(err)
	}
	old()
	scribble(t, target, 1024, 16)
	_, err := st.apply(t, target, []string{incr}, Options{})
	if !errors.Is(err, ErrModified) || !strings.Contains(err.Error(), "blocks sampled after the last apply") {
		t.Fatalf("got %v, want ErrModified from the fingerprint", err)
	}
}

// unsampled returns the start of a 4 KiB block at or after off that fp
// does not sample.
func unsampled(t *testing.T, fp *Fingerprint, off int64) int64 {
	t.Helper()
	sampled := map[int64]bool{}
	for _, s := range fp.Samples {
		sampled[s.Offset] = true
	}
	for off = off / fingerprintBlock * fingerprintBlock; sampled[off]; off += fingerprintBlock {
	}
	if off >= fp.Size {
		t.Fatalf("no unsampled block at or after %d", off)
	}
	return off
}

// verifyState opens target and verifies st against it.
func verifyState(t *testing.T, target string, st State) State {
	t.Helper()
	tg, err := OpenTarget(target, TargetOptions{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	got, err := tg.Verify(st)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestShrunkBackKeepsState: an incremental of a grown volume, read from a
// stream, grows the file and then finds its first record damaged: nothing
// was written, the file is shrunk back, and the state records its new
// times, so the good copy of the incremental still applies (the grow and
// shrink were the apply's own, not a write).
func TestShrunkBackKeepsState(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(300 * 4096))
	grown := append(append([]byte(nil), v1.data...), w.random(50*4096)...)
	w.r.Read(grown[:4096]) // the first record is DATA at 0
	v2 := w.image(grown)
	full, incr := w.delta(v1, nil), w.delta(v2, v1)
	nums, _ := dataRecords(t, incr)
	bad := corruptAt(t, incr, nums[0])

	st := stateStore{}
	target := filepath.Join(t.TempDir(), "copy")
	if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
		t.Fatal(err)
	}
	before := *st.only(t).FileStat
	tg, err := OpenTarget(target, TargetOptions{NoCreate: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(bad)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	key := func() string {
		for k := range st {
			return k
		}
		return ""
	}()
	opts := Options{State: st[key],
		Begin:   func(s State) error { st[key] = s; return nil },
		Finish:  func(s State) error { st[key] = s; return nil },
		Stopped: func(s State) error { st[key] = s; return nil },
	}
	prior := st[key]
	opts.Revert = func() error { st[key] = prior; return nil }
	_, err = Apply(context.Background(), tg, []Input{{Name: "stream", R: struct{ io.Reader }{f}}}, opts)
	tg.Close()
	if !errors.Is(err, archive.ErrChecksum) || !strings.Contains(err.Error(), "nothing was written") {
		t.Fatalf("got %v, want a checksum error with nothing written", err)
	}
	mustEqual(t, target, v1.data)
	after := st.only(t)
	if after.InProgress != nil || after.Snapshot.ID != v1.snap.ID || after.FileStat == nil || *after.FileStat == before {
		t.Fatalf("state after the shrink-back: %+v (before: %+v)", after, before)
	}
	if _, err := st.apply(t, target, []string{incr}, Options{}); err != nil {
		t.Fatalf("the good incremental after the shrink-back: %v", err)
	}
	mustEqual(t, target, v2.data)
}
