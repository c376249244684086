package verify

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/pointintime"
)

func testKey(t *testing.T, seed byte) *archive.Key {
	t.Helper()
	k, err := archive.NewKey(bytes.Repeat([]byte{seed}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// newEncryptedStore is newStore with every file encrypted under key.
func newEncryptedStore(t *testing.T, key *archive.Key) (*catalog.Store, []catalog.Snapshot) {
	s, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	a1, t1 := backupKey(t, s, "a", nil, archive.Digest{}, 1, key)
	a2, t2 := backupKey(t, s, "a", &a1, t1, 2, key)
	a3, _ := backupKey(t, s, "a", &a2, t2, 3, key)
	b1, _ := backupKey(t, s, "b", nil, archive.Digest{}, 4, key)
	return s, []catalog.Snapshot{a1, a2, a3, b1}
}

// verdicts verifies s with o and returns the verdicts on files, by
// snapshot id.
func verdicts(t *testing.T, s catalog.Repository, o Options) (*Result, map[string]error) {
	t.Helper()
	got := map[string]error{}
	o.File = func(f FileResult) { got[f.Snapshot.ID] = f.Err }
	res, err := Store(context.Background(), s, o)
	if err != nil {
		t.Fatal(err)
	}
	return res, got
}

// TestStoreEncrypted: with its key, every file of an encrypted store is
// read, authenticated and found sound; without it, or under another key,
// each is reported with archive's key error; a flipped byte is a damaged
// file.
func TestStoreEncrypted(t *testing.T) {
	k := testKey(t, 1)
	s, snaps := newEncryptedStore(t, k)
	res, got := verdicts(t, s, Options{Key: k})
	if res.Files != 4 || res.Bad() != 0 || len(res.Problems) != 0 {
		t.Fatalf("with the key: result %+v, verdicts %v", res, got)
	}
	for _, sn := range snaps {
		if err := got[sn.ID]; err != nil {
			t.Errorf("#%d of %s with the key: %v", sn.Seq, sn.Volume, err)
		}
	}
	for name, tc := range map[string]struct {
		key  *archive.Key
		want error
	}{"no key": {nil, archive.ErrKeyRequired}, "another key": {testKey(t, 2), archive.ErrWrongKey}} {
		res, got := verdicts(t, s, Options{Key: tc.key})
		if res.Damaged != 4 {
			t.Errorf("%s: result %+v", name, res)
		}
		for _, sn := range snaps {
			if !errors.Is(got[sn.ID], tc.want) {
				t.Errorf("%s: #%d of %s: %v, want %v", name, sn.Seq, sn.Volume, got[sn.ID], tc.want)
			}
		}
	}

	p := s.Path(snaps[1].File)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	res, got = verdicts(t, s, Options{Key: k})
	var fe *archive.FormatError
	if !errors.As(got[snaps[1].ID], &fe) || res.Damaged != 1 {
		t.Errorf("a flipped byte: %v (result %+v), want one damaged file", got[snaps[1].ID], res)
	}
}

// TestDeviceEncrypted: a device is compared with a point in time of an
// encrypted chain through its keyed digests, given the key; a changed
// byte is found at its offset; without the key the digests cannot be
// read.
func TestDeviceEncrypted(t *testing.T) {
	k := testKey(t, 1)
	s, snaps := newEncryptedStore(t, k)
	path := filepath.Join(t.TempDir(), "dev.img")
	cmp := func(snap catalog.Snapshot, data []byte, key *archive.Key) (*DeviceResult, error) {
		t.Helper()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		ps := &pointintime.Store{Repository: s}
		pit, err := ps.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return tx.Snapshot(snap.ID) })
		if err != nil {
			t.Fatal(err)
		}
		defer pit.Close()
		return Device(context.Background(), pit, path, DeviceOptions{Key: key})
	}
	for i, n := range []int{1, 2, 3} {
		r, err := cmp(snaps[i], imageOf(n), k)
		if err != nil {
			t.Fatal(err)
		}
		if !r.Equal() || r.Size != volSize {
			t.Errorf("snapshot %d: %+v, want equal", n, r)
		}
	}
	changed := imageOf(3)
	changed[5*blockSize+100] ^= 1
	r, err := cmp(snaps[2], changed, k)
	if err != nil {
		t.Fatal(err)
	}
	if r.Equal() || r.Ranges != 1 || len(r.Shown) != 1 || r.Shown[0].First != 5*blockSize+100 || r.Shown[0].Last != 5*blockSize+100 {
		t.Errorf("a changed byte: %+v, want one range at %d", r, 5*blockSize+100)
	}
	// The headers are read without the key; the first record is not.
	_, err = cmp(snaps[2], imageOf(3), nil)
	var de *DeviceError
	if !errors.As(err, &de) || !errors.Is(err, archive.ErrKeyRequired) {
		t.Errorf("without the key: %v, want a DeviceError for ErrKeyRequired", err)
	}
}

// TestStoreKeyless: without the key, Keyless checks every file of an
// encrypted store as far as that goes (structure, file digest, header
// against record) and says its contents were not checked; a flipped
// byte, a truncated file and a file replaced by another of the store are
// still found. A store that is not encrypted is read in full.
func TestStoreKeyless(t *testing.T) {
	k := testKey(t, 1)
	s, snaps := newEncryptedStore(t, k)
	unchecked := map[string]bool{}
	o := Options{Keyless: true, File: func(f FileResult) { unchecked[f.Snapshot.ID] = f.Unchecked }}
	res, err := Store(context.Background(), s, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.Files != 4 || res.Bad() != 0 || res.Unchecked != 4 {
		t.Fatalf("keyless: result %+v, want 4 files, none bad, 4 unchecked", res)
	}
	for _, sn := range snaps {
		if !unchecked[sn.ID] {
			t.Errorf("#%d of %s is not reported unchecked", sn.Seq, sn.Volume)
		}
	}
	// With the key nothing is left unchecked.
	if res, _ := verdicts(t, s, Options{Key: k, Keyless: true}); res.Unchecked != 0 || res.Bad() != 0 {
		t.Errorf("with the key: result %+v", res)
	}

	flip := func(file string, f func([]byte) []byte) {
		p := s.Path(file)
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// A byte of the header: a sealed payload's bytes are covered by no
	// keyless digest (docs/FORMAT.md "Encryption"), only by the key.
	flip(snaps[1].File, func(b []byte) []byte { b[40] ^= 1; return b })
	flip(snaps[2].File, func(b []byte) []byte { return b[:len(b)-10] })
	a1, err := os.ReadFile(s.Path(snaps[0].File))
	if err != nil {
		t.Fatal(err)
	}
	flip(snaps[3].File, func([]byte) []byte { return a1 })
	res, got := verdicts(t, s, Options{Keyless: true})
	if res.Damaged != 2 || res.Bad() != 3 {
		t.Errorf("keyless after the damage: result %+v, want 2 damaged files and a wrong size", res)
	}
	for _, sn := range []catalog.Snapshot{snaps[1], snaps[3]} {
		if got[sn.ID] == nil {
			t.Errorf("#%d of %s: damage not found without the key", sn.Seq, sn.Volume)
		}
	}
	// The truncated file is found by its size, before it is read.
	if len(res.Problems) != 1 || !errors.Is(res.Problems[0], catalog.ErrFileSize) {
		t.Errorf("the truncated file: problems %v, want its size", res.Problems)
	}
	if got[snaps[0].ID] != nil {
		t.Errorf("#1 of a: %v", got[snaps[0].ID])
	}

	// A plain store: read in full, nothing unchecked.
	plain, _ := newEncryptedStore(t, nil)
	if res, _ := verdicts(t, plain, Options{Keyless: true}); res.Unchecked != 0 || res.Bad() != 0 || res.Files != 4 {
		t.Errorf("a plain store: result %+v", res)
	}
}
