package prune

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
	volName   = "vg0/vm1"
	volSize   = 256 << 10
	blockSize = 4096
)

// testStore is a store directory and the volume as each snapshot has
// it, by snapshot id.
type testStore struct {
	*catalog.Store
	t      *testing.T
	images map[string][]byte
}

func newStore(t *testing.T) *testStore {
	s, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	return &testStore{Store: s, t: t, images: map[string][]byte{}}
}

// backup stores a snapshot of volName taken at hour: a full of data if
// parent is nil, else an incremental over parent that changes block n.
func (ts *testStore) backup(parent *catalog.Snapshot, hour, n int) catalog.Snapshot {
	t := ts.t
	t.Helper()
	var data []byte
	ext := []archive.Extent{{Offset: 0, Length: volSize, Kind: archive.KindData}}
	if parent == nil {
		data = make([]byte, volSize)
		for i := range data {
			data[i] = byte(i/blockSize + hour)
		}
	} else {
		data = bytes.Clone(ts.images[parent.ID])
		copy(data[n*blockSize:], bytes.Repeat([]byte{byte(0x80 + hour)}, blockSize))
		ext = []archive.Extent{{Offset: int64(n) * blockSize, Length: blockSize, Kind: archive.KindData}}
	}
	h := &archive.Header{
		BlockSize: blockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: volName, VolumeUUID: "uuid-vm1", VolumeSize: volSize,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "vm1-snap", Time: time.Date(2026, 11, 20, hour, 0, 0, 0, time.UTC)},
		Tool:     "thinback test",
	}
	if parent != nil {
		var err error
		if h.Parent, err = record.ParentOf(*parent); err != nil {
			t.Fatal(err)
		}
		h.ParentSize = parent.VolumeSize
	}
	rec, _ := storetest.Write(t, ts, h, data, ext, nil)
	ts.images[rec.ID] = data
	return rec
}

// snapshots lists the volume's snapshots as recorded.
func (ts *testStore) snapshots() []catalog.Snapshot {
	ts.t.Helper()
	var snaps []catalog.Snapshot
	if err := ts.View(func(tx *catalog.Tx) (err error) { snaps, err = tx.Snapshots(volName); return err }); err != nil {
		ts.t.Fatal(err)
	}
	return snaps
}

// restores checks that every snapshot of the store reads back as the
// volume it was taken of, through its recorded chain, and that the store
// has no problem Check finds.
func (ts *testStore) restores() {
	t := ts.t
	t.Helper()
	for _, sn := range ts.snapshots() {
		var chain []catalog.Snapshot
		var vol catalog.Volume
		if err := ts.View(func(tx *catalog.Tx) (err error) {
			if vol, err = tx.Volume(volName); err != nil {
				return err
			}
			chain, err = tx.Chain(sn.ID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		files, err := record.OpenChain(ts.OpenDelta, ts.String(), vol, chain)
		if err != nil {
			t.Fatalf("#%d: %v", sn.Seq, err)
		}
		var inputs []archive.ChainInput
		for _, f := range files {
			inputs = append(inputs, archive.ChainInput{Name: f.Name(), File: f})
		}
		sr, err := archive.OpenSnapshot(context.Background(), inputs, archive.SnapshotOptions{ReadAhead: -1})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, volSize)
		if _, err := sr.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		sr.Close()
		record.CloseAll(files)
		if !bytes.Equal(got, ts.images[sn.ID]) {
			t.Errorf("#%d does not restore as the volume it was taken of", sn.Seq)
		}
	}
	problems, err := ts.Check(catalog.CheckOptions{})
	if err != nil || len(problems) != 0 {
		t.Errorf("Check: %v, %v", problems, err)
	}
}

func seqs(snaps []catalog.Snapshot) []uint64 {
	var out []uint64
	for _, s := range snaps {
		out = append(out, s.Seq)
	}
	return out
}

func prune(t *testing.T, ts *testStore, policy catalog.Retention, dryRun bool) (*Result, error) {
	t.Helper()
	unlock, err := ts.LockVolume(volName)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	return Volume(context.Background(), ts, volName, policy, Options{DryRun: dryRun, Level: archive.LevelFastest, Tool: "thinback test"})
}

// TestVolume: keeping the last two of a chain of four merges the first
// three files into the third snapshot's, which becomes a full; a dry run
// says so and changes nothing. Every kept snapshot restores as before.
func TestVolume(t *testing.T) {
	ts := newStore(t)
	a := ts.backup(nil, 1, 0)
	b := ts.backup(&a, 2, 1)
	c := ts.backup(&b, 3, 2)
	ts.backup(&c, 4, 3)
	before := ts.snapshots()
	policy := catalog.Retention{KeepLast: 2}

	res, err := prune(t, ts, policy, true)
	if err != nil {
		t.Fatal(err)
	}
	want := &Result{Volume: volName, Policy: "--keep-last 2", Kept: before[2:], Removed: before[:2], Rewritten: []string{"#3"}, DryRun: true}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("dry run: %+v\nwant %+v", res, want)
	}
	if !reflect.DeepEqual(ts.snapshots(), before) {
		t.Fatalf("a dry run changed the records")
	}

	res, err = prune(t, ts, policy, false)
	if err != nil {
		t.Fatal(err)
	}
	want.DryRun = false
	if !reflect.DeepEqual(res, want) {
		t.Errorf("prune: %+v\nwant %+v", res, want)
	}
	after := ts.snapshots()
	if got := seqs(after); !reflect.DeepEqual(got, []uint64{3, 4}) {
		t.Fatalf("left %v, want #3 and #4", got)
	}
	if after[0].Parent != "" || after[0].File == c.File {
		t.Errorf("#3 is not a new full: parent %q, file %s", after[0].Parent, after[0].File)
	}
	for _, sn := range before[:3] {
		if _, err := os.Lstat(ts.Path(sn.File)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the old file of #%d: %v", sn.Seq, err)
		}
	}
	ts.restores()

	// Again: nothing more to do.
	if res, err = prune(t, ts, policy, false); err != nil || len(res.Removed) != 0 || res.Rewritten != nil {
		t.Errorf("a second prune: %+v, %v", res, err)
	}
}

// TestVolumeDeadChain: with two fulls, the older chain, which no kept
// snapshot descends from, is removed child first; the newer full is
// merged into the snapshot kept.
func TestVolumeDeadChain(t *testing.T) {
	ts := newStore(t)
	a := ts.backup(nil, 1, 0)
	ts.backup(&a, 2, 1)
	c := ts.backup(nil, 3, 0)
	ts.backup(&c, 4, 2)
	res, err := prune(t, ts, catalog.Retention{KeepLast: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(res.Removed); !reflect.DeepEqual(got, []uint64{1, 2, 3}) || !reflect.DeepEqual(res.Rewritten, []string{"#4"}) {
		t.Errorf("removed %v, rewritten %v", got, res.Rewritten)
	}
	if got := seqs(ts.snapshots()); !reflect.DeepEqual(got, []uint64{4}) {
		t.Fatalf("left %v, want #4", got)
	}
	ts.restores()
}

// TestVolumeNotRecorded: a file that is not the one its record describes
// is never merged into a kept snapshot's file: the prune stops with
// record.ErrNotRecorded and the store is as it was.
func TestVolumeNotRecorded(t *testing.T) {
	ts := newStore(t)
	a := ts.backup(nil, 1, 0)
	b := ts.backup(&a, 2, 1)
	c := ts.backup(&b, 3, 2)
	other, err := os.ReadFile(ts.Path(c.File))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ts.Path(b.File), other, 0o600); err != nil {
		t.Fatal(err)
	}
	before := ts.snapshots()
	res, err := prune(t, ts, catalog.Retention{KeepLast: 1}, false)
	if !errors.Is(err, record.ErrNotRecorded) {
		t.Fatalf("prune over a swapped file: %v, want record.ErrNotRecorded", err)
	}
	if res == nil || res.Rewritten != nil {
		t.Errorf("result %+v: nothing was rewritten", res)
	}
	if !reflect.DeepEqual(ts.snapshots(), before) {
		t.Errorf("the records changed")
	}
	if got, err := os.ReadFile(ts.Path(b.File)); err != nil || !bytes.Equal(got, other) {
		t.Errorf("the swapped file changed: %v", err)
	}
}
