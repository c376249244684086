package verify

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

const (
	volSize   = 256 << 10
	blockSize = 4096
)

// backup stores a snapshot of volume taken at hour: a full if parent is
// nil, else an incremental over parent that changes one block.
func backup(t *testing.T, s *catalog.Store, volume string, parent *catalog.Snapshot, hour int) catalog.Snapshot {
	t.Helper()
	rec, _ := backupKey(t, s, volume, parent, archive.Digest{}, hour, nil)
	return rec
}

// backupKey is backup writing a file encrypted under key, when set, whose
// parent file has tag parentTag; it returns the file's tag too.
func backupKey(t *testing.T, s *catalog.Store, volume string, parent *catalog.Snapshot, parentTag archive.Digest, hour int, key *archive.Key) (catalog.Snapshot, archive.Digest) {
	t.Helper()
	data := bytes.Repeat([]byte{byte(hour)}, volSize)
	ext := []archive.Extent{{Offset: 0, Length: volSize, Kind: archive.KindData}}
	if parent != nil {
		ext = []archive.Extent{{Offset: int64(hour) * blockSize, Length: blockSize, Kind: archive.KindData}}
	}
	h := &archive.Header{
		BlockSize: blockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: volume, VolumeUUID: "uuid-" + volume, VolumeSize: volSize,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "snap", Time: time.Date(2026, 11, 20, hour, 0, 0, 0, time.UTC)},
		Tool:     "thinback test",
	}
	if parent != nil {
		var err error
		if h.Parent, err = record.ParentOf(*parent); err != nil {
			t.Fatal(err)
		}
		h.ParentSize = parent.VolumeSize
		if key != nil {
			h.ParentTag = parentTag
		}
	}
	rec, tr := storetest.Write(t, s, h, data, ext, key)
	return rec, tr.Tag
}

// newStore makes a store with two volumes: "a" with a chain of three,
// "b" with a full.
func newStore(t *testing.T) (*catalog.Store, []catalog.Snapshot) {
	s, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	a1 := backup(t, s, "a", nil, 1)
	a2 := backup(t, s, "a", &a1, 2)
	a3 := backup(t, s, "a", &a2, 3)
	b1 := backup(t, s, "b", nil, 4)
	return s, []catalog.Snapshot{a1, a2, a3, b1}
}

// run verifies s and returns the result and the verdicts on files, by
// snapshot id.
func run(t *testing.T, s catalog.Repository, volume string) (*Result, map[string]error) {
	t.Helper()
	verdicts := map[string]error{}
	res, err := Store(context.Background(), s, Options{Volume: volume, File: func(f FileResult) {
		if _, dup := verdicts[f.Snapshot.ID]; dup {
			t.Errorf("%s reported twice", f.Snapshot.ID)
		}
		verdicts[f.Snapshot.ID] = f.Err
	}})
	if err != nil {
		t.Fatal(err)
	}
	return res, verdicts
}

// TestStoreSound: every file of a sound store is read and found to be
// its record's; there is no problem.
func TestStoreSound(t *testing.T) {
	s, snaps := newStore(t)
	res, verdicts := run(t, s, "")
	if res.Files != 4 || res.Bad() != 0 || len(res.Problems) != 0 || len(verdicts) != 4 {
		t.Fatalf("result %+v, verdicts %v", res, verdicts)
	}
	for _, sn := range snaps {
		if err, ok := verdicts[sn.ID]; !ok || err != nil {
			t.Errorf("#%d of %s: %v (reported %v)", sn.Seq, sn.Volume, err, ok)
		}
	}
	// One volume: only its files.
	res, verdicts = run(t, s, "b")
	if res.Files != 1 || res.Bad() != 0 || len(verdicts) != 1 || verdicts[snaps[3].ID] != nil {
		t.Errorf("volume b: result %+v, verdicts %v", res, verdicts)
	}
	if _, err := Store(context.Background(), s, Options{Volume: "c"}); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("an unknown volume: %v, want ErrNotFound", err)
	}
}

// TestStoreDamaged: a file with a flipped bit is reported with its
// file, as a damaged delta file (archive.FormatError).
func TestStoreDamaged(t *testing.T) {
	s, snaps := newStore(t)
	p := s.Path(snaps[0].File)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res, verdicts := run(t, s, "")
	var fe *archive.FormatError
	if !errors.As(verdicts[snaps[0].ID], &fe) {
		t.Errorf("the damaged file: %v, want an archive.FormatError", verdicts[snaps[0].ID])
	}
	if res.Files != 4 || res.Damaged != 1 || res.Bad() != 1 || len(res.Problems) != 0 {
		t.Errorf("result %+v", res)
	}
	// Another volume's check does not see it.
	if res, _ := run(t, s, "b"); res.Bad() != 0 {
		t.Errorf("volume b: %+v", res)
	}
}

// TestStoreMissing: a recorded file that is gone is a problem of the
// store (ErrFileMissing), not a file's verdict.
func TestStoreMissing(t *testing.T) {
	s, snaps := newStore(t)
	if err := os.Remove(s.Path(snaps[1].File)); err != nil {
		t.Fatal(err)
	}
	res, verdicts := run(t, s, "")
	if _, ok := verdicts[snaps[1].ID]; ok || res.Files != 3 {
		t.Errorf("the missing file was read: %v, %d files", verdicts, res.Files)
	}
	if res.Bad() != 1 || len(res.Problems) != 1 || !errors.Is(res.Problems[0], catalog.ErrFileMissing) {
		t.Errorf("problems %v, want one ErrFileMissing", res.Problems)
	}
}

// TestStoreNotRecorded: a record that differs from its file's header is
// reported with the file, as record.ErrNotRecorded.
func TestStoreNotRecorded(t *testing.T) {
	s, snaps := newStore(t)
	if err := s.Update(func(tx *catalog.Tx) error {
		rec := snaps[2]
		rec.Name = "renamed"
		rec.VolumeSize++
		return tx.PutSnapshot(&rec)
	}); err != nil {
		t.Fatal(err)
	}
	res, verdicts := run(t, s, "a")
	if err := verdicts[snaps[2].ID]; !errors.Is(err, record.ErrNotRecorded) {
		t.Errorf("the file of a changed record: %v, want record.ErrNotRecorded", err)
	}
	if res.Damaged != 1 || res.Bad() != 1 {
		t.Errorf("result %+v", res)
	}
}

// TestStoreStray: a file no record references is an orphan: listed, but
// not counted as a problem.
func TestStoreStray(t *testing.T) {
	s, snaps := newStore(t)
	stray := filepath.Join(filepath.Dir(s.Path(snaps[0].File)), "99999999-0a0b0c0d-0000-4000-8000-000000000000.tbk")
	if err := os.WriteFile(stray, []byte("left by a killed run"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, _ := run(t, s, "")
	if res.Bad() != 0 || len(res.Problems) != 1 || !IsOrphan(res.Problems[0]) {
		t.Fatalf("result %+v", res)
	}
	var ce *catalog.CheckError
	if !errors.As(res.Problems[0], &ce) || ce.File != "volumes/a/99999999-0a0b0c0d-0000-4000-8000-000000000000.tbk" {
		t.Errorf("orphan %v", res.Problems[0])
	}
	if IsOrphan(errors.New("other")) || IsOrphan(&catalog.CheckError{Problem: catalog.ErrFileMissing}) {
		t.Errorf("IsOrphan of other problems")
	}
}

// TestFile: a file is read to its END record with or without its
// payloads; a stream is read whole; a truncated file is refused.
func TestFile(t *testing.T) {
	s, snaps := newStore(t)
	data, err := os.ReadFile(s.Path(snaps[1].File))
	if err != nil {
		t.Fatal(err)
	}
	for _, payloads := range []bool{true, false} {
		h, tr, err := File(context.Background(), bytes.NewReader(data), payloads)
		if err != nil || record.ID(h.Snapshot.ID) != snaps[1].ID {
			t.Fatalf("payloads %v: %v", payloads, err)
		}
		if got := record.OfFile(h, tr).FileDigest; got != snaps[1].FileDigest {
			t.Errorf("payloads %v: digest %s, want %s", payloads, got, snaps[1].FileDigest)
		}
	}
	if _, _, err := File(context.Background(), io.MultiReader(bytes.NewReader(data)), false); err != nil {
		t.Errorf("a stream: %v", err)
	}
	if _, _, err := File(context.Background(), bytes.NewReader(data[:len(data)-1]), true); !errors.Is(err, archive.ErrTruncated) {
		t.Errorf("a truncated file: %v, want ErrTruncated", err)
	}
	h, tr, err := Stored(context.Background(), s, snaps[1].File)
	if err != nil || !reflect.DeepEqual(record.OfFile(h, tr).FileDigest, snaps[1].FileDigest) {
		t.Errorf("Stored: %v", err)
	}
}
