package pointintime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

const (
	volName   = "vg0/vm1"
	volSize   = 1 << 20
	blockSize = 4096
)

// ambiguousID is the id of the first snapshot of a test chain: "0002"
// is both a prefix of it and the sequence number of the second.
const ambiguousID = "00020000-0000-4000-8000-000000000001"

// chain is what a test store holds: the snapshots of volName, oldest
// first, and the volume as each of them has it.
type chain struct {
	snaps  []catalog.Snapshot
	images [][]byte
}

// writeChain backs up three states of a volume into s, a full and two
// incrementals an hour apart, as backup does: each file through the
// store's WriteVolumeDelta, under the volume's lock.
func writeChain(t *testing.T, s catalog.Repository) chain {
	t.Helper()
	return writeChainKey(t, s, nil)
}

// writeChainKey is writeChain with the files encrypted under key, if set,
// each incremental bound to its parent file's tag.
func writeChainKey(t *testing.T, s catalog.Repository, key *archive.Key) chain {
	t.Helper()
	unlock, err := s.LockVolume(volName)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	var c chain
	data := make([]byte, volSize)
	for i := range data {
		data[i] = byte(i / blockSize)
	}
	changes := [][]archive.Extent{
		{{Offset: 0, Length: volSize, Kind: archive.KindData}},
		{{Offset: 3 * blockSize, Length: 2 * blockSize, Kind: archive.KindData}},
		{{Offset: 100 * blockSize, Length: blockSize, Kind: archive.KindData}},
	}
	start := time.Date(2026, 11, 20, 1, 0, 0, 0, time.UTC)
	var tag archive.Digest // the last file's
	for n, ext := range changes {
		if n > 0 {
			data = bytes.Clone(data)
			for _, x := range ext {
				copy(data[x.Offset:x.End()], bytes.Repeat([]byte{byte(0xa0 + n)}, int(x.Length)))
			}
		}
		h := &archive.Header{
			BlockSize: blockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
			VolumeName: volName, VolumeUUID: "uuid-vm1", VolumeSize: volSize,
			Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "vm1-snap", Time: start.Add(time.Duration(n) * time.Hour)},
			Tool:     "thinback test",
		}
		if n == 0 {
			// An id that begins like sequence number 2 (see TestFind).
			if h.Snapshot.ID, err = record.ParseID(ambiguousID); err != nil {
				t.Fatal(err)
			}
		}
		if n > 0 {
			prev := c.snaps[n-1]
			if h.Parent, err = record.ParentOf(prev); err != nil {
				t.Fatal(err)
			}
			h.ParentSize = prev.VolumeSize
			if key != nil {
				h.ParentTag = tag
			}
		}
		rec, tr := storetest.Write(t, s, h, data, ext, key)
		tag = tr.Tag
		c.snaps = append(c.snaps, rec)
		c.images = append(c.images, data)
	}
	return c
}

// localStore writes a chain into a store directory and opens it again
// read-only, as cat, mount, serve and verify --device do.
func localStore(t *testing.T) (*Store, *catalog.Store, chain) {
	t.Helper()
	w, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := writeChain(t, w)
	r, err := catalog.OpenReadOnly(w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	return &Store{Repository: r}, w, c
}

// readImage reads the whole volume of p through archive's snapshot
// reader.
func readImage(t *testing.T, p *PointInTime) []byte {
	t.Helper()
	sr, err := archive.OpenSnapshot(context.Background(), p.Inputs, archive.SnapshotOptions{ReadAhead: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sr.Close()
	got := make([]byte, volSize)
	if _, err := sr.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return got
}

// testPointInTime opens each snapshot of c from s by every way of naming
// it, and reads the volume as it was then.
func testPointInTime(t *testing.T, s *Store, c chain) {
	for i, want := range c.snaps {
		for _, pick := range []struct{ what, at, snapshot string }{
			{"by sequence number", "", "#" + string(rune('1'+i))},
			{"by id prefix", "", want.ID[:8]},
			{"by time", want.Time.Add(30 * time.Minute).Format(time.RFC3339), ""},
		} {
			p, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) {
				return Select(tx, volName, pick.at, pick.snapshot)
			})
			if err != nil {
				t.Fatalf("#%d %s: %v", i+1, pick.what, err)
			}
			if p.Snap.ID != want.ID || len(p.Chain) != i+1 || len(p.Files) != i+1 || len(p.Inputs) != i+1 {
				t.Fatalf("#%d %s: snapshot %s, chain of %d, %d files", i+1, pick.what, p.Snap.ID, len(p.Chain), len(p.Files))
			}
			if got := readImage(t, p); !bytes.Equal(got, c.images[i]) {
				t.Errorf("#%d %s: the volume read differs from the one backed up", i+1, pick.what)
			}
			// Read again from the start, as verify --device does.
			if err := p.Rewind(); err != nil {
				t.Fatal(err)
			}
			ch, err := archive.OpenChain(p.Inputs)
			if err != nil {
				t.Fatalf("#%d after Rewind: %v", i+1, err)
			}
			if ch.Header().Snapshot.ID.String() != want.ID {
				t.Errorf("#%d after Rewind: the chain ends at %s", i+1, ch.Header().Snapshot.ID)
			}
			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	newest, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return Select(tx, volName, "", "") })
	if err != nil {
		t.Fatal(err)
	}
	defer newest.Close()
	last := c.snaps[len(c.snaps)-1]
	if newest.Snap.ID != last.ID {
		t.Errorf("without --at or --snapshot: %s, want the newest %s", newest.Snap.ID, last.ID)
	}
	if d, want := newest.Describe(), "vg0/vm1 #3 ("+last.ID+", 2026-11-20T03:00:00Z)"; d != want {
		t.Errorf("Describe() = %q, want %q", d, want)
	}
}

// TestLocal: every snapshot of a directory store reads back as it was
// backed up, through a store opened read-only.
func TestLocal(t *testing.T) {
	s, _, c := localStore(t)
	testPointInTime(t, s, c)
}

// TestS3: the same through a store on object storage: the reader does
// not care which back end holds the files.
func TestS3(t *testing.T) {
	srv := s3test.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	st, err := s3store.Open(ctx, s3.Location{Insecure: true, Host: srv.Addr, Bucket: s3test.DefaultBucket, Prefix: "p"}, &s3store.Options{
		S3:     s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
		Cache:  t.TempDir(),
		Create: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	c := writeChain(t, st)
	testPointInTime(t, &Store{Repository: st}, c)
}

// TestOpenAcrossPrune: an open point in time holds no lock a writer
// waits for, and reads the files it opened even once a prune removed
// them from the store.
func TestOpenAcrossPrune(t *testing.T) {
	s, w, c := localStore(t)
	p, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return Select(tx, volName, "", "#3") })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	// w waits for no lock (Timeout -1): the reader holds none.
	if err := w.Remove(volName, c.snaps[2].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(w.Path(c.snaps[2].File)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the removed snapshot's file: %v", err)
	}
	if got := readImage(t, p); !bytes.Equal(got, c.images[2]) {
		t.Errorf("the volume read after the prune differs from the one backed up")
	}
	if _, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return Select(tx, volName, "", "#3") }); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("opening the removed snapshot: %v, want ErrNotFound", err)
	}
}

// TestOpenNotRecorded: a file that is not the one its record describes
// (another snapshot's, put in its place) is refused with
// record.ErrNotRecorded and advice naming the store.
func TestOpenNotRecorded(t *testing.T) {
	s, w, c := localStore(t)
	other, err := os.ReadFile(w.Path(c.snaps[1].File))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(w.Path(c.snaps[2].File), other, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return Select(tx, volName, "", "#3") })
	if !errors.Is(err, record.ErrNotRecorded) || !strings.Contains(err.Error(), "thinback verify --store "+w.Dir()) {
		t.Fatalf("Open of a swapped file: %v, want record.ErrNotRecorded naming the store", err)
	}
}

// TestDamaged: an error of a damaged delta file gets the advice to verify
// the store; other errors are left as they are.
func TestDamaged(t *testing.T) {
	s, w, c := localStore(t)
	path := w.Path(c.snaps[0].File)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x40 // inside the full's payloads
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	p, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return Select(tx, volName, "", "#1") })
	if err != nil {
		t.Fatal(err) // the header and the END record are intact
	}
	defer p.Close()
	ch, err := archive.OpenChain(p.Inputs)
	if err == nil {
		err = ch.Scan(context.Background(), archive.ScanOptions{}, func(archive.Segment, []byte) error { return nil })
	}
	var fe *archive.FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("reading the damaged file: %v, want an archive.FormatError", err)
	}
	advice := "a delta file of the store is damaged or incomplete: thinback verify --store " + w.Dir() + " checks them all"
	if got := s.Damaged(err); !errors.Is(got, err) || !strings.HasSuffix(got.Error(), advice) {
		t.Errorf("Damaged: %q, want it to end with %q", got, advice)
	}
	other := errors.New("no such thing")
	if got := s.Damaged(other); got != other {
		t.Errorf("Damaged of another error: %v", got)
	}
}
