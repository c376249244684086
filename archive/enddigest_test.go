package archive

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// EndDigest reads the digest the file ends in, which is the digest a
// Reader computes when it reads the file to its END; of a file cut short
// it reads other bytes, and of a file shorter than any delta file it
// reports the truncation.
func TestEndDigest(t *testing.T) {
	r := testRand(t)
	vol := volume(r, 64, 100)
	file := build(t, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})

	rd := NewReader(bytes.NewReader(file))
	if _, err := rd.Header(); err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	got, err := EndDigest(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	if got != rd.Trailer().Digest {
		t.Fatalf("EndDigest = %x, the reader's file digest %x", got, rd.Trailer().Digest)
	}
	cut := file[:len(file)-1]
	if got, err := EndDigest(bytes.NewReader(cut), int64(len(cut))); err != nil || got == rd.Trailer().Digest {
		t.Errorf("a file cut by a byte: EndDigest = %x, %v; want other bytes than the digest", got, err)
	}
	if _, err := EndDigest(bytes.NewReader(file[:20]), 20); !errors.Is(err, ErrTruncated) {
		t.Errorf("a 20-byte file: %v, want ErrTruncated", err)
	}
	// A reader that ends early is an error, not a short digest.
	if _, err := EndDigest(bytes.NewReader(file[:100]), int64(len(file))); err == nil {
		t.Error("a reader shorter than the size given: no error")
	}
}
