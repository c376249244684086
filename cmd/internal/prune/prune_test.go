package prune

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
	// key, if set, encrypts the files backup writes, and reads them.
	key *archive.Key
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
	rec, _ := storetest.Write(t, ts, h, data, ext, ts.key)
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
		sr, err := archive.OpenSnapshot(context.Background(), inputs, archive.SnapshotOptions{ReadAhead: -1, Key: ts.key})
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
	return pruneKey(t, ts, policy, dryRun, ts.key)
}

// pruneKey prunes with key, whatever the store's files are under.
func pruneKey(t *testing.T, ts *testStore, policy catalog.Retention, dryRun bool, key *archive.Key) (*Result, error) {
	t.Helper()
	unlock, err := ts.LockVolume(volName)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	return Volume(context.Background(), ts, volName, policy, Options{DryRun: dryRun, Level: archive.LevelFastest, Tool: "thinback test", Key: key})
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

func testKey(t *testing.T, seed byte) *archive.Key {
	t.Helper()
	k, err := archive.NewKey(bytes.Repeat([]byte{seed}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// header reads a stored file's header without the key.
func (ts *testStore) header(sn catalog.Snapshot) *archive.Header {
	ts.t.Helper()
	f, err := os.Open(ts.Path(sn.File))
	if err != nil {
		ts.t.Fatal(err)
	}
	defer f.Close()
	h, err := archive.NewReader(f).Header()
	if err != nil {
		ts.t.Fatal(err)
	}
	return h
}

// TestVolumeEncrypted: an encrypted store prunes with its key. Merging
// the oldest snapshots into the third writes a new full encrypted under
// the key, with a salt of its own, and the fourth snapshot, whose file
// was made from the third's old file, restores through it; a second
// prune merges the merged file again. Every kept snapshot restores, with
// the key, as the volume it was taken of.
func TestVolumeEncrypted(t *testing.T) {
	ts := newStore(t)
	ts.key = testKey(t, 1)
	a := ts.backup(nil, 1, 0)
	b := ts.backup(&a, 2, 1)
	c := ts.backup(&b, 3, 2)
	d := ts.backup(&c, 4, 3)

	res, err := prune(t, ts, catalog.Retention{KeepLast: 2}, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := seqs(res.Removed); !reflect.DeepEqual(got, []uint64{1, 2}) || !reflect.DeepEqual(res.Rewritten, []string{"#3"}) {
		t.Fatalf("removed %v, rewritten %v", got, res.Rewritten)
	}
	after := ts.snapshots()
	if got := seqs(after); !reflect.DeepEqual(got, []uint64{3, 4}) {
		t.Fatalf("left %v, want #3 and #4", got)
	}
	h := ts.header(after[0])
	if !h.IsEncrypted() || h.KeyID != ts.key.ID() || !h.IsFull() || after[0].File == c.File || after[0].FileDigest == c.FileDigest {
		t.Fatalf("#3 after the prune: header %+v, record %+v; want a new full encrypted under %s", h, after[0], ts.key.ID())
	}
	if after[1].File != d.File || after[1].FileDigest != d.FileDigest {
		t.Fatalf("#4 was rewritten: %+v", after[1])
	}
	ts.restores()

	res, err = prune(t, ts, catalog.Retention{KeepLast: 1}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Rewritten, []string{"#4"}) {
		t.Fatalf("the second prune rewrote %v, want #4", res.Rewritten)
	}
	if h := ts.header(ts.snapshots()[0]); !h.IsEncrypted() || h.KeyID != ts.key.ID() || !h.IsFull() {
		t.Fatalf("#4 after the second prune: header %+v", h)
	}
	ts.restores()
}

// TestVolumeEncryptedWithoutKey: a prune of an encrypted store without
// its key fails with archive.ErrKeyRequired naming the key, and with
// another key with archive.ErrWrongKey, and either leaves the store as it
// was: the same records, the same files, nothing left being written. A
// dry run needs no key.
func TestVolumeEncryptedWithoutKey(t *testing.T) {
	ts := newStore(t)
	ts.key = testKey(t, 1)
	a := ts.backup(nil, 1, 0)
	b := ts.backup(&a, 2, 1)
	ts.backup(&b, 3, 2)
	before := ts.snapshots()
	files := ts.files()
	policy := catalog.Retention{KeepLast: 1}

	if res, err := pruneKey(t, ts, policy, true, nil); err != nil || !reflect.DeepEqual(res.Rewritten, []string{"#3"}) {
		t.Fatalf("a dry run without the key: %+v, %v", res, err)
	}
	for _, tc := range []struct {
		name string
		key  *archive.Key
		want error
	}{{"without the key", nil, archive.ErrKeyRequired}, {"with another key", testKey(t, 2), archive.ErrWrongKey}} {
		res, err := pruneKey(t, ts, policy, false, tc.key)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), ts.key.ID().String()) {
			t.Fatalf("%s: %v, want %v naming key %s", tc.name, err, tc.want, ts.key.ID())
		}
		if res == nil || res.Rewritten != nil {
			t.Errorf("%s: result %+v, nothing was rewritten", tc.name, res)
		}
		if !reflect.DeepEqual(ts.snapshots(), before) {
			t.Fatalf("%s: the records changed", tc.name)
		}
		if got := ts.files(); !reflect.DeepEqual(got, files) {
			t.Fatalf("%s: the store's files changed:\n%v\nwere\n%v", tc.name, got, files)
		}
	}
	ts.restores()
}

// files returns the store's delta files and files being written, with
// their contents' SHA-256.
func (ts *testStore) files() map[string]string {
	ts.t.Helper()
	out := map[string]string{}
	for _, sub := range []string{"volumes", "tmp"} {
		err := filepath.WalkDir(ts.Path(sub), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			out[path] = fmt.Sprintf("%x", sha256.Sum256(b))
			return nil
		})
		if err != nil {
			ts.t.Fatal(err)
		}
	}
	return out
}
