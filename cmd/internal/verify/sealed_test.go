package verify

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

// faultyWriterFile is a delta file whose writer, holding key (or none),
// stored a DATA record whose first block digest is another block's, as a
// bug or a memory error between hashing and compressing would.
func faultyWriterFile(t *testing.T, key *archive.Key) []byte {
	t.Helper()
	data := bytes.Repeat([]byte("thinback "), 4*blockSize/9+1)[:4*blockSize]
	enc := archive.NewEncoder(archive.LevelFastest, archive.WithKey(key))
	defer enc.Close()
	recs, _ := enc.Encode(nil, 0, data, blockSize, nil)
	other, _ := enc.Encode(nil, 0, bytes.Repeat([]byte{7}, blockSize), blockSize, nil)
	recs[0].Digests[0] = other[0].Digests[0]
	var buf bytes.Buffer
	w := archive.NewWriter(&buf, archive.WithKey(key))
	h := &archive.Header{BlockSize: blockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3, VolumeName: "a", VolumeSize: int64(len(data)),
		Snapshot: archive.Snapshot{ID: archive.DeriveID("test", "faulty"), Name: "a.1", Time: time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)}, Tool: "thinback test"}
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if err := w.WriteRecord(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFileSealedDigests: verify reads an encrypted file's payloads
// authenticated, without recomputing the digests sealed with them
// (archive.ScanOptions.SkipSealedDigests), so a file whose own writer
// sealed a wrong digest under the right key passes it: this is what that
// gives up. Restore's reading (a Scan that hands data on) still refuses
// it, and a file in the clear with a wrong digest is damaged for verify.
func TestFileSealedDigests(t *testing.T) {
	ctx := context.Background()
	k := testKey(t, 1)
	sealed := faultyWriterFile(t, k)
	if _, _, err := FileKey(ctx, bytes.NewReader(sealed), true, k); err != nil {
		t.Errorf("verify, encrypted: %v, want the sealed digests trusted", err)
	}
	err := archive.Scan(ctx, archive.NewReader(bytes.NewReader(sealed), archive.WithKey(k)), archive.ScanOptions{},
		func(*archive.Record, []byte) error { return nil })
	if !errors.Is(err, archive.ErrChecksum) {
		t.Errorf("a Scan handing data on, encrypted: %v, want %v", err, archive.ErrChecksum)
	}
	if _, _, err := File(ctx, bytes.NewReader(faultyWriterFile(t, nil)), true); !errors.Is(err, archive.ErrChecksum) {
		t.Errorf("verify, in the clear: %v, want %v", err, archive.ErrChecksum)
	}
}
