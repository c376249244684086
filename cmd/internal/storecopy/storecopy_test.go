package storecopy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/prune"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

const (
	volSize   = 128 << 10
	blockSize = 4096
)

// world is the volumes as each snapshot took them, by snapshot id, and
// what is needed to make more.
type world struct {
	t      *testing.T
	images map[string][]byte
	rng    *mrand.Rand
	hour   int
}

func newWorld(t *testing.T) *world {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THINBACK_COPY_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (THINBACK_COPY_SEED=%d replays it)", seed, seed)
	return &world{t: t, images: map[string][]byte{}, rng: mrand.New(mrand.NewPCG(seed, 1))}
}

// backup stores a new snapshot of volume name in s: a full when parent
// is nil, else an incremental changing a few random blocks.
func (w *world) backup(s catalog.DeltaWriter, name string, parent *catalog.Snapshot, key *archive.Key) catalog.Snapshot {
	t := w.t
	t.Helper()
	w.hour++
	var data []byte
	var ext []archive.Extent
	if parent == nil {
		data = make([]byte, volSize)
		for i := 0; i < volSize; i += blockSize {
			if w.rng.IntN(4) != 0 {
				fill(data[i:i+blockSize], w.rng)
			}
		}
		ext = []archive.Extent{{Offset: 0, Length: volSize, Kind: archive.KindData}}
	} else {
		data = bytes.Clone(w.images[parent.ID])
		for range 1 + w.rng.IntN(4) {
			b := w.rng.IntN(volSize / blockSize)
			off := int64(b) * blockSize
			if w.rng.IntN(5) == 0 {
				clear(data[off : off+blockSize])
				ext = append(ext, archive.Extent{Offset: off, Length: blockSize, Kind: archive.KindZero})
			} else {
				fill(data[off:off+blockSize], w.rng)
				ext = append(ext, archive.Extent{Offset: off, Length: blockSize, Kind: archive.KindData})
			}
		}
		ext = sortMerge(ext)
	}
	h := &archive.Header{
		BlockSize: blockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: name, VolumeUUID: "uuid-" + name, VolumeSize: volSize,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "snap", Time: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(w.hour) * time.Hour)},
		Tool:     "thinback test",
	}
	if parent != nil {
		var err error
		if h.Parent, err = record.ParentOf(*parent); err != nil {
			t.Fatal(err)
		}
		h.ParentSize = parent.VolumeSize
	}
	rec, _ := storetest.Write(t, s, h, data, ext, key)
	w.images[rec.ID] = data
	return rec
}

func fill(b []byte, rng *mrand.Rand) {
	for i := 0; i < len(b); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < len(b); j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
}

// sortMerge orders extents by offset and drops repeats of a block (the
// last change of a block is what data holds: its kind must match).
func sortMerge(ext []archive.Extent) []archive.Extent {
	byOff := map[int64]archive.Extent{}
	for _, e := range ext {
		byOff[e.Offset] = e
	}
	var out []archive.Extent
	for off := int64(0); off < volSize; off += blockSize {
		if e, ok := byOff[off]; ok {
			out = append(out, e)
		}
	}
	return out
}

func snapshots(t *testing.T, s catalog.Repository, name string) []catalog.Snapshot {
	t.Helper()
	var snaps []catalog.Snapshot
	if err := s.View(func(tx *catalog.Tx) (err error) {
		snaps, err = tx.Snapshots(name)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return snaps
}

// restores checks that every snapshot of name in s reads back, through
// its recorded chain, as the volume it was taken of, and that Check
// finds nothing wrong with s.
func (w *world) restores(s catalog.Repository, name string, key *archive.Key) {
	t := w.t
	t.Helper()
	for _, sn := range snapshots(t, s, name) {
		var chain []catalog.Snapshot
		var vol catalog.Volume
		if err := s.View(func(tx *catalog.Tx) (err error) {
			if vol, err = tx.Volume(name); err != nil {
				return err
			}
			chain, err = tx.Chain(sn.ID)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		files, err := record.OpenChain(s.OpenDelta, s.String(), vol, chain)
		if err != nil {
			t.Fatalf("%s #%d: %v", s, sn.Seq, err)
		}
		var inputs []archive.ChainInput
		for _, f := range files {
			inputs = append(inputs, archive.ChainInput{Name: f.Name(), File: f})
		}
		sr, err := archive.OpenSnapshot(context.Background(), inputs, archive.SnapshotOptions{ReadAhead: -1, Key: key})
		if err != nil {
			t.Fatalf("%s #%d: %v", s, sn.Seq, err)
		}
		got := make([]byte, volSize)
		if _, err := sr.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		sr.Close()
		record.CloseAll(files)
		if !bytes.Equal(got, w.images[sn.ID]) {
			t.Errorf("%s #%d (%s) does not restore as the volume it was taken of", s, sn.Seq, sn.ID)
		}
	}
	problems, err := s.Check(catalog.CheckOptions{})
	if err != nil || len(problems) != 0 {
		t.Errorf("Check %s: %v, %v", s, problems, err)
	}
}

func localStore(t *testing.T) *catalog.Store {
	s, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func s3Store(t testing.TB, srv *s3test.Server, prefix string) catalog.Repository {
	t.Helper()
	r, err := s3store.Open(context.Background(), s3.Location{Insecure: true, Host: srv.Addr, Bucket: srv.Bucket, Prefix: prefix},
		&s3store.Options{
			S3:     s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache:  t.TempDir(),
			Create: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func pruneSrc(t *testing.T, s catalog.Repository, name string, keep int, key *archive.Key) {
	t.Helper()
	unlock, err := s.LockVolume(name)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	if _, err := prune.Volume(context.Background(), s, name, catalog.Retention{KeepLast: keep}, prune.Options{Level: archive.LevelFastest, Tool: "thinback test", Key: key}); err != nil {
		t.Fatal(err)
	}
}

func ids(snaps []catalog.Snapshot) map[string]bool {
	m := map[string]bool{}
	for _, s := range snaps {
		m[s.ID] = true
	}
	return m
}

// rounds backs up random chains of two volumes into src, prunes src at
// random between copies, copies into dst, and checks after each copy
// that dst holds every snapshot src holds and restores each as taken.
func rounds(t *testing.T, w *world, src, dst catalog.Repository, n int, o Options, key, dstKey *archive.Key) {
	names := []string{"vg0/vm1", "vg0/vm2"}
	latest := map[string]*catalog.Snapshot{}
	for round := range n {
		for _, name := range names {
			for range w.rng.IntN(3) + 1 {
				var parent *catalog.Snapshot
				if latest[name] != nil && w.rng.IntN(6) != 0 {
					parent = latest[name]
				}
				sn := w.backup(src, name, parent, key)
				latest[name] = &sn
			}
			if w.rng.IntN(2) == 0 {
				keep := 1 + w.rng.IntN(3)
				t.Logf("round %d: prune %s of the source to the last %d", round, name, keep)
				pruneSrc(t, src, name, keep, key)
				snaps := snapshots(t, src, name)
				last := snaps[len(snaps)-1]
				latest[name] = &last
			}
		}
		res, err := Copy(context.Background(), src, dst, o)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if len(res) != len(names) {
			t.Fatalf("round %d: %d results", round, len(res))
		}
		for _, name := range names {
			have := ids(snapshots(t, dst, name))
			for _, sn := range snapshots(t, src, name) {
				if !have[sn.ID] {
					t.Errorf("round %d: %s #%d %s is not in the destination", round, name, sn.Seq, sn.ID)
				}
			}
			w.restores(dst, name, dstKey)
		}
		again, err := Copy(context.Background(), src, dst, o)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range again {
			if len(r.Copied) != 0 {
				t.Errorf("round %d: a second copy copied %d snapshots of %s", round, len(r.Copied), r.Volume)
			}
		}
	}
	for _, name := range names {
		w.restores(src, name, key)
	}
}

func TestCopyLocalRandom(t *testing.T) {
	w := newWorld(t)
	rounds(t, w, localStore(t), localStore(t), 6, Options{}, nil, nil)
}

func TestCopyS3BothWays(t *testing.T) {
	srv := s3test.Start(t)
	w := newWorld(t)
	local, bucket := localStore(t), s3Store(t, srv, "dst")
	rounds(t, w, local, bucket, 3, Options{}, nil, nil)
	// And back: from the bucket into a new directory, and into a second
	// prefix of the bucket.
	back := localStore(t)
	if _, err := Copy(context.Background(), bucket, back, Options{}); err != nil {
		t.Fatal(err)
	}
	other := s3Store(t, srv, "second")
	if _, err := Copy(context.Background(), bucket, other, Options{}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vg0/vm1", "vg0/vm2"} {
		w.restores(back, name, nil)
		w.restores(other, name, nil)
		if a, b := len(snapshots(t, back, name)), len(snapshots(t, bucket, name)); a != b {
			t.Errorf("%s: %d snapshots copied back of %d", name, a, b)
		}
	}
}

func newKey(t *testing.T) *archive.Key {
	b := make([]byte, 32)
	rand.Read(b)
	k, err := archive.NewKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Stores sharing a key: the files are copied as they are, without the
// key, and the copy says it did not check their contents.
func TestCopyEncryptedRaw(t *testing.T) {
	w := newWorld(t)
	key := newKey(t)
	src, dst := localStore(t), localStore(t)
	rounds(t, w, src, dst, 3, Options{}, key, key)
	sn := w.backup(src, "vg0/vm1", nil, key)
	res, err := Volume(context.Background(), src, dst, "vg0/vm1", Options{})
	if err != nil || len(res.Copied) != 1 || !res.Unchecked {
		t.Fatalf("copy without the key: %+v, %v", res, err)
	}
	if res.Copied[0].FileDigest != sn.FileDigest {
		t.Errorf("a raw copy changed the file: digest %s, the source's %s", res.Copied[0].FileDigest, sn.FileDigest)
	}
	// With the key every record is checked.
	w.backup(src, "vg0/vm1", &sn, key)
	if res, err = Volume(context.Background(), src, dst, "vg0/vm1", Options{Key: key}); err != nil || len(res.Copied) != 1 || res.Unchecked {
		t.Fatalf("copy with the key: %+v, %v", res, err)
	}
}

// Stores with different keys, and a store in the clear into an encrypted
// one, and back: every file is written again under the destination's key.
func TestCopyRekey(t *testing.T) {
	w := newWorld(t)
	k1, k2 := newKey(t), newKey(t)
	src, dst := localStore(t), localStore(t)
	rounds(t, w, src, dst, 3, Options{Key: k1, Rewrite: true, DestKey: k2, Level: archive.LevelFastest}, k1, k2)
	for _, sn := range snapshots(t, dst, "vg0/vm1") {
		r, err := dst.OpenDelta(sn.File)
		if err != nil {
			t.Fatal(err)
		}
		h, err := archive.NewReader(r).Header()
		r.Close()
		if err != nil || h.KeyID != k2.ID() {
			t.Fatalf("%s: key %v, %v; want %v", sn.File, h.KeyID, err, k2.ID())
		}
	}
	// In the clear, then into an encrypted store, then out of it in the clear.
	plain, enc, out := localStore(t), localStore(t), localStore(t)
	a := w.backup(plain, "vg0/vm3", nil, nil)
	w.backup(plain, "vg0/vm3", &a, nil)
	if _, err := Copy(context.Background(), plain, enc, Options{Rewrite: true, DestKey: k2}); err != nil {
		t.Fatal(err)
	}
	w.restores(enc, "vg0/vm3", k2)
	if _, err := Copy(context.Background(), enc, out, Options{Key: k2, Rewrite: true}); err != nil {
		t.Fatal(err)
	}
	w.restores(out, "vg0/vm3", nil)
	// The wrong key reads nothing and writes nothing.
	b := w.backup(src, "vg0/vm1", nil, k1)
	before := len(snapshots(t, dst, "vg0/vm1"))
	if _, err := Volume(context.Background(), src, dst, "vg0/vm1", Options{Key: k2, Rewrite: true, DestKey: k2}); !errors.Is(err, archive.ErrWrongKey) {
		t.Fatalf("copy with the wrong key: %v, want ErrWrongKey", err)
	}
	if n := len(snapshots(t, dst, "vg0/vm1")); n != before {
		t.Errorf("a failed copy committed: %d snapshots, %d before", n, before)
	}
	_ = b
}

// A byte flipped in a source file: the copy fails naming the file and
// the offset, and the destination holds nothing of it.
func TestCopyTampered(t *testing.T) {
	for _, enc := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", enc), func(t *testing.T) {
			w := newWorld(t)
			var key *archive.Key
			if enc {
				key = newKey(t)
			}
			src, dst := localStore(t), localStore(t)
			a := w.backup(src, "vg0/vm1", nil, key)
			b := w.backup(src, "vg0/vm1", &a, key)
			path := src.Path(b.File)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			off := len(data) / 2
			data[off] ^= 0x10
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			// Without the key a byte inside a sealed payload cannot be
			// told from a sound one (the copy says "contents not
			// checked"): an encrypted file is read with its key here.
			for _, k := range []*archive.Key{key} {
				res, err := Volume(context.Background(), src, dst, "vg0/vm1", Options{Key: k})
				if err == nil {
					t.Fatalf("key %v: a tampered file was copied: %+v", k != nil, res)
				}
				t.Logf("key %v: %v", k != nil, err)
				if !errors.Is(err, archive.ErrChecksum) && !errors.Is(err, archive.ErrAuth) && !errors.Is(err, archive.ErrHeader) && !errors.Is(err, record.ErrNotRecorded) {
					t.Errorf("key %v: %v: not an error of a damaged file", k != nil, err)
				}
				if snaps := snapshots(t, dst, "vg0/vm1"); len(snaps) != 1 || snaps[0].ID != a.ID {
					t.Errorf("key %v: the destination holds %d snapshots, want only the sound one", k != nil, len(snaps))
				}
				tmp, _ := os.ReadDir(filepath.Join(dst.Dir(), "tmp"))
				if len(tmp) != 0 {
					t.Errorf("temp files left: %v", tmp)
				}
			}
		})
	}
}

// A destination whose volume has the same name as another: refused.
func TestCopyDiverged(t *testing.T) {
	w := newWorld(t)
	src, dst := localStore(t), localStore(t)
	w.backup(src, "vg0/vm1", nil, nil)
	h := &archive.Header{
		BlockSize: blockSize * 2, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: "vg0/vm1", VolumeUUID: "other", VolumeSize: volSize,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Time: time.Now().UTC()},
	}
	storetest.Write(t, dst, h, make([]byte, volSize), []archive.Extent{{Offset: 0, Length: volSize, Kind: archive.KindZero}}, nil)
	if _, err := Copy(context.Background(), src, dst, Options{}); !errors.Is(err, ErrDiverged) {
		t.Fatalf("copy into another volume of the same name: %v, want ErrDiverged", err)
	}
}

// A prune of the source while the copy reads it: the snapshots whose
// files went away are left, with a warning, and the next copy takes the
// source's new chain; the destination's chains are valid throughout.
func TestCopyPrunedMidCopy(t *testing.T) {
	w := newWorld(t)
	src, dst := localStore(t), localStore(t)
	const name = "vg0/vm1"
	var last *catalog.Snapshot
	for range 4 {
		sn := w.backup(src, name, last, nil)
		last = &sn
	}
	pruned := false
	var warned []string
	o := Options{
		Warn: func(msg string) { warned = append(warned, msg) },
		Progress: func(int64) {
			if !pruned {
				pruned = true
				pruneSrc(t, src, name, 1, nil)
			}
		},
	}
	res, err := Volume(context.Background(), src, dst, name, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Copied) != 1 || len(res.Left) != 3 || len(warned) != 1 || !strings.Contains(warned[0], "left for the next copy") {
		t.Fatalf("copied %d, left %d, warnings %q; want 1, 3 and one warning", len(res.Copied), len(res.Left), warned)
	}
	w.restores(dst, name, nil)
	res, err = Volume(context.Background(), src, dst, name, Options{})
	if err != nil || len(res.Copied) != 1 || len(res.Left) != 0 {
		t.Fatalf("next copy: %+v, %v", res, err)
	}
	w.restores(dst, name, nil)
	have := ids(snapshots(t, dst, name))
	for _, sn := range snapshots(t, src, name) {
		if !have[sn.ID] {
			t.Errorf("%s is not in the destination", sn.ID)
		}
	}
}
