package catalog

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWriteDelta: a delta written through the seam is durable under its
// name and recorded; a Replace through it merges and removes. Run with each
// way of publishing, as on filesystems without renameat2 or hard links.
func TestWriteDelta(t *testing.T) {
	for _, m := range publishModes {
		t.Run(m.name, func(t *testing.T) {
			withMode(t, m.skipRenameat2, m.skipLink)
			ts := newTestStore(t)
			ts.putVolume("vg0/vm1")
			write := func(id, data, parent string) func(io.Writer) (Snapshot, error) {
				return func(w io.Writer) (Snapshot, error) {
					if _, err := io.WriteString(w, data); err != nil {
						return Snapshot{}, err
					}
					snap := Snapshot{ID: id, Volume: "vg0/vm1", Parent: parent, Time: baseTime.Add(time.Duration(len(data)) * time.Hour),
						VolumeSize: 1 << 30, FileDigest: digest([]byte(data))}
					if parent != "" {
						snap.ParentSize = 1 << 30
					}
					return snap, nil
				}
			}
			aID, bID := newID(), newID()
			a, err := ts.WriteDelta("vg0/vm1", aID, write(aID, "A", ""))
			if err != nil {
				t.Fatal(err)
			}
			if a.Seq != 1 || a.FileSize != 1 || string(ts.read(a.File)) != "A" {
				t.Errorf("first snapshot = %+v", a)
			}
			b, err := ts.WriteDelta("vg0/vm1", bID, write(bID, "BB", a.ID))
			if err != nil {
				t.Fatal(err)
			}
			merged, err := ts.ReplaceDelta("vg0/vm1", b.ID, []string{a.ID}, func(w io.Writer) (Snapshot, error) {
				if _, err := io.WriteString(w, "A+BB"); err != nil {
					return Snapshot{}, err
				}
				rec := b
				rec.Parent, rec.ParentSize, rec.FileDigest = "", 0, digest([]byte("A+BB"))
				return rec, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := ts.snapshots("vg0/vm1"); !reflect.DeepEqual(ids(got), []string{b.ID}) || got[0].File != merged.File {
				t.Errorf("after ReplaceDelta: %+v", got)
			}
			if string(ts.read(merged.File)) != "A+BB" {
				t.Errorf("merged file holds %q", ts.read(merged.File))
			}
			if got := dirFiles(t, ts.Path("volumes")); len(got) != 1 {
				t.Errorf("volumes/ holds %q, want the merged file only", got)
			}
		})
	}
}

// TestWriteDeltaFails: a callback that fails, a record the store refuses,
// and a record of another volume leave neither a file nor a record.
func TestWriteDeltaFails(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	ts.putVolume("w")
	boom := errors.New("source went away")
	id := newID()
	for _, tc := range []struct {
		name  string
		id    string
		write func(io.Writer) (Snapshot, error)
		want  error
	}{
		{"callback", id, func(w io.Writer) (Snapshot, error) {
			_, _ = io.WriteString(w, strings.Repeat("x", 1<<20))
			return Snapshot{}, boom
		}, boom},
		{"record", "not-an-id", func(w io.Writer) (Snapshot, error) {
			_, _ = io.WriteString(w, "x")
			return Snapshot{ID: "not-an-id", Volume: "v", Time: baseTime}, nil
		}, ErrInvalidRecord},
		{"missing parent", id, func(w io.Writer) (Snapshot, error) {
			_, _ = io.WriteString(w, "x")
			return Snapshot{ID: id, Volume: "v", Parent: newID(), Time: baseTime, FileDigest: "00"}, nil
		}, ErrNotFound},
		{"other volume", id, func(w io.Writer) (Snapshot, error) {
			_, _ = io.WriteString(w, "x")
			return Snapshot{ID: id, Volume: "w", Time: baseTime, FileDigest: "00"}, nil
		}, nil},
		{"other snapshot", id, func(w io.Writer) (Snapshot, error) {
			_, _ = io.WriteString(w, "x")
			return Snapshot{ID: newID(), Volume: "v", Time: baseTime, FileDigest: "00"}, nil
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ts.WriteDelta("v", tc.id, tc.write)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("WriteDelta: %v, want %v", err, tc.want)
			}
			if got := dirFiles(t, ts.Dir()); !reflect.DeepEqual(got, []string{"catalog.db"}) {
				t.Errorf("store holds %q after a failed write", got)
			}
			if n := len(ts.snapshots("v")) + len(ts.snapshots("w")); n != 0 {
				t.Errorf("%d snapshots recorded after a failed write", n)
			}
		})
	}
}

// TestWriteDeltaTooLarge: a delta file the filesystem cannot hold (EFBIG,
// here from RLIMIT_FSIZE; FAT's 4 GiB limit in the guest tests) fails with
// ErrTooLarge however the callback wraps the write error, and leaves
// nothing.
func TestWriteDeltaTooLarge(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	lim := old
	lim.Cur = 1 << 20
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Fatal(err)
	}
	id := newID()
	_, err := ts.WriteDelta("v", id, func(w io.Writer) (Snapshot, error) {
		_, err := w.Write(make([]byte, 3<<20))
		if err != nil {
			return Snapshot{}, errors.New("writer failed: " + err.Error()) // loses the type on purpose
		}
		return Snapshot{ID: id, Volume: "v", Time: baseTime, FileDigest: "00"}, nil
	})
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(err, ErrTooLarge) || !errors.Is(err, syscall.EFBIG) {
		t.Errorf("WriteDelta of a file too large: %v, want ErrTooLarge", err)
	}
	var tl *TooLargeError
	if errors.As(err, &tl) && filepath.Dir(tl.Path) != ts.Path("tmp") {
		t.Errorf("the error names %s, want the temp file", tl.Path)
	}
	if got := dirFiles(t, ts.Dir()); !reflect.DeepEqual(got, []string{"catalog.db"}) {
		t.Errorf("store holds %q after a failed write", got)
	}
	if _, err := os.Stat(ts.Path("volumes/v")); err == nil {
		t.Error("a volume directory was made for a file that was never published")
	}
}
