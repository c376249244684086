package record

import (
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// writeDelta writes a delta file of volume name holding one ZERO record
// into dir and returns its path and the record the catalog would keep.
func writeDelta(t *testing.T, dir, name string, size int64, parent *catalog.Snapshot, seq int) (string, catalog.Snapshot) {
	t.Helper()
	h := &archive.Header{
		BlockSize:  4096,
		Codec:      archive.CodecZstd,
		Hash:       archive.HashBLAKE3,
		VolumeName: name,
		VolumeUUID: "uuid-" + name,
		VolumeSize: size,
		Snapshot:   archive.Snapshot{ID: archive.NewID(), Name: "snap", Time: time.Unix(1700000000+int64(seq), 0).UTC()},
		Tool:       "thinback test",
	}
	if parent != nil {
		p, err := ParentOf(*parent)
		if err != nil {
			t.Fatal(err)
		}
		h.Parent, h.ParentSize = p, parent.VolumeSize
	}
	path := filepath.Join(dir, strings.ReplaceAll(name, "/", "_")+"-"+h.Snapshot.ID.String()+".tbk")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := archive.NewWriter(f)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&archive.Record{Kind: archive.KindZero, Offset: 0, Length: size}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	rec := OfFile(h, w.Trailer())
	rec.Seq, rec.File = uint64(seq), path
	return path, rec
}

func volume(name string) catalog.Volume {
	return catalog.Volume{Name: name, UUID: "uuid-" + name, Kind: catalog.KindFile, BlockSize: 4096}
}

func openFile(file string) (catalog.DeltaReader, error) { return os.Open(file) }

// TestCheck: a header that is the record's passes; each field that
// differs is named, and the error is ErrNotRecorded.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	_, full := writeDelta(t, dir, "vg0/vm1", 1<<20, nil, 1)
	path, incr := writeDelta(t, dir, "vg0/vm1", 2<<20, &full, 2)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := archive.NewReader(f).Header()
	if err != nil {
		t.Fatal(err)
	}
	vol := volume("vg0/vm1")
	if err := Check(path, incr, vol, h, incr.FileDigest); err != nil {
		t.Fatalf("Check of the recorded file: %v", err)
	}
	for _, c := range []struct {
		what   string
		change func(rec *catalog.Snapshot, vol *catalog.Volume) string
		want   string
	}{
		{"id", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.ID = archive.NewID().String(); return "" }, "it holds snapshot"},
		{"parent", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.Parent = ""; return "" }, "the record's is none (a full)"},
		{"volume", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.Volume = "vg0/vm2"; return "" }, `it is a backup of volume "vg0/vm1", the record of "vg0/vm2"`},
		{"uuid", func(_ *catalog.Snapshot, v *catalog.Volume) string { v.UUID = "other"; return "" }, "its volume's uuid is uuid-vg0/vm1, the catalog's other"},
		{"size", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.VolumeSize = 1; return "" }, "it holds a volume of 2097152 bytes, the record says 1"},
		{"parent size", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.ParentSize = 7; return "" }, "made from a parent of 1048576 bytes, the record says 7"},
		{"time", func(r *catalog.Snapshot, _ *catalog.Volume) string { r.Time = r.Time.Add(time.Nanosecond); return "" },
			"it was taken at 2023-11-14T22:13:22Z, the record says 2023-11-14T22:13:22.000000001Z"},
		{"digest", func(r *catalog.Snapshot, _ *catalog.Volume) string {
			r.FileDigest = hex.EncodeToString(make([]byte, 32))
			return ""
		}, "its file digest is"},
	} {
		t.Run(c.what, func(t *testing.T) {
			rec, v := incr, vol
			c.change(&rec, &v)
			err := Check(path, rec, v, h, incr.FileDigest)
			var m *Mismatch
			if !errors.Is(err, ErrNotRecorded) || !errors.As(err, &m) {
				t.Fatalf("Check: %v, want a *Mismatch", err)
			}
			if len(m.diffs) != 1 || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Check: %q, want one difference %q naming %s", err, c.want, path)
			}
		})
	}
}

// countingOpener opens files and remembers which are still open.
type countingOpener struct{ open map[*os.File]bool }

type trackedFile struct {
	*os.File
	c *countingOpener
}

func (f trackedFile) Close() error { delete(f.c.open, f.File); return f.File.Close() }

func (c *countingOpener) openDelta(file string) (catalog.DeltaReader, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	c.open[f] = true
	return trackedFile{f, c}, nil
}

// TestOpenChain: a chain whose files are the recorded ones opens at the
// files' starts; a chain with another volume's file is refused with
// advice naming the store, and leaves no file open.
func TestOpenChain(t *testing.T) {
	dir := t.TempDir()
	_, full := writeDelta(t, dir, "vg0/vm1", 1<<20, nil, 1)
	_, incr := writeDelta(t, dir, "vg0/vm1", 1<<20, &full, 2)
	_, other := writeDelta(t, dir, "vg0/vm2", 1<<20, nil, 1)

	files, err := OpenChain(openFile, "/backup", volume("vg0/vm1"), []catalog.Snapshot{full, incr})
	if err != nil {
		t.Fatal(err)
	}
	for i, f := range files {
		if pos, err := f.Seek(0, 1); err != nil || pos != 0 {
			t.Errorf("file %d at %d (%v), want its start", i, pos, err)
		}
		h, err := archive.NewReader(f).Header()
		if err != nil {
			t.Fatal(err)
		}
		if got := ID(h.Snapshot.ID); got != []catalog.Snapshot{full, incr}[i].ID {
			t.Errorf("file %d holds %s", i, got)
		}
	}
	if err := CloseAll(files); err != nil {
		t.Fatal(err)
	}

	// The catalog names vm2's full where vm1's incremental should be.
	swapped := incr
	swapped.File = other.File
	c := &countingOpener{open: map[*os.File]bool{}}
	_, err = OpenChain(c.openDelta, "/backup", volume("vg0/vm1"), []catalog.Snapshot{full, swapped})
	if !errors.Is(err, ErrNotRecorded) {
		t.Fatalf("OpenChain of a swapped file: %v, want ErrNotRecorded", err)
	}
	for _, want := range []string{other.File, "thinback verify --store /backup", "thinback catalog rebuild --store /backup", "it was not used"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if len(c.open) != 0 {
		t.Errorf("%d files left open after a refused chain", len(c.open))
	}

	// A file that is not there names the snapshot.
	gone := incr
	gone.File = filepath.Join(dir, "gone.tbk")
	_, err = OpenChain(c.openDelta, "/backup", volume("vg0/vm1"), []catalog.Snapshot{full, gone})
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "snapshot #2 "+incr.ID+" of vg0/vm1") {
		t.Fatalf("OpenChain of a missing file: %v", err)
	}
	if len(c.open) != 0 {
		t.Errorf("%d files left open after a missing file", len(c.open))
	}
}

// TestTargetRoundTrip: a restore state survives the catalog's record of
// it, and a record with a damaged id is refused as corrupt.
func TestTargetRoundTrip(t *testing.T) {
	now := time.Unix(1700000000, 0).UTC()
	st := restore.State{
		VolumeName: "vg0/vm1", VolumeUUID: "u1",
		Snapshot:    archive.Snapshot{ID: archive.NewID(), Name: "s", Time: now},
		Fingerprint: &restore.Fingerprint{Size: 1 << 20, BlockSize: 4096, Samples: []restore.Sample{{Offset: 8192, Digest: archive.Digest{1, 2, 3}}}},
		FileStat:    &restore.FileStat{Size: 1 << 20, Mtime: 5, Ctime: 6, Dev: 7, Ino: 8},
		InProgress:  &restore.Mark{Snapshot: archive.NewID(), Parent: archive.NewID(), Files: []string{"a", "b"}, Started: now, WroteFrom: 1, WroteTo: 2, Stopped: "why", Done: 1 << 19, Size: 1 << 20},
	}
	rec := OfTarget(restore.Identity{Key: "/img", Dev: 7, Ino: 8}, "/img", st)
	back, err := TargetState(rec)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, st) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", back, st)
	}
	rec.Snapshot = "not-an-id"
	if _, err := TargetState(rec); !errors.Is(err, catalog.ErrCorrupt) || !strings.Contains(err.Error(), "not-an-id") {
		t.Fatalf("TargetState of a damaged id: %v", err)
	}
}
