package archive

import (
	"bytes"
	"context"
	"errors"
	"testing"
)

// faultyWriterFile is the file of a writer that sealed, with the right
// key (or none), a DATA record whose first digest is not its data's: the
// digest of other data, as a bug or a memory error between hashing and
// compressing would leave it. compressible picks a zstd payload or a raw
// one. It returns the file and the offset of the record's payload.
func faultyWriterFile(t *testing.T, k *Key, compressible bool) ([]byte, int64) {
	t.Helper()
	r := testRand(t)
	data := make([]byte, 4*4096)
	if compressible {
		for i := range data {
			data[i] = "thinback "[i%9]
		}
	} else {
		r.Read(data)
	}
	other := bytes.Repeat([]byte{7}, 4096)
	enc := NewEncoder(LevelFastest, WithKey(k))
	defer enc.Close()
	recs, _ := enc.Encode(nil, 0, data, 4096, make([]byte, 0, MaxEncodedLen(len(data))))
	wrong, _ := enc.Encode(nil, 0, other, 4096, make([]byte, 0, MaxEncodedLen(len(other))))
	if len(recs) != 1 || recs[0].Compressed != compressible {
		t.Fatalf("records %+v, want one, compressed %v", recs, compressible)
	}
	recs[0].Digests[0] = wrong[0].Digests[0]
	var buf bytes.Buffer
	w := NewWriter(&buf, WithKey(k))
	if err := w.WriteHeader(testHeader(int64(len(data)))); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&recs[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd := NewReader(bytes.NewReader(buf.Bytes()), WithKey(k))
	rec, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), rec.PayloadPos
}

func scanWith(file []byte, k *Key, opts ScanOptions) error {
	return Scan(context.Background(), NewReader(bytes.NewReader(file), WithKey(k)), opts, func(*Record, []byte) error { return nil })
}

// TestScanSkipSealedDigests: SkipSealedDigests stops recomputing the
// digests of an encrypted file only, and only there: a file in the clear
// with a wrong digest is damaged whatever the option; an encrypted file
// whose writer sealed a wrong digest under the right key passes a Scan
// with the option (this is what the option gives up, see its comment)
// and is refused by every Scan without it and by Decode, which restore
// and the other readers that hand data on use; and an altered byte of an
// encrypted payload, or of its metadata, is still refused with it.
func TestScanSkipSealedDigests(t *testing.T) {
	k := testKey(t, 1)
	for _, c := range []struct {
		name         string
		key          *Key
		compressible bool
	}{{"plain raw", nil, false}, {"plain zstd", nil, true}, {"encrypted raw", k, false}, {"encrypted zstd", k, true}} {
		t.Run(c.name, func(t *testing.T) {
			file, payloadPos := faultyWriterFile(t, c.key, c.compressible)
			if err := scanWith(file, c.key, ScanOptions{}); !errors.Is(err, ErrChecksum) {
				t.Errorf("Scan: %v, want %v", err, ErrChecksum)
			}
			rd := NewReader(bytes.NewReader(file), WithKey(c.key))
			rec, err := rd.Next()
			if err != nil {
				t.Fatal(err)
			}
			payload, err := rd.ReadPayload(nil)
			if err != nil {
				t.Fatal(err)
			}
			dec := NewDecoder()
			defer dec.Close()
			if _, err := dec.Decode(nil, rec, payload); !errors.Is(err, ErrChecksum) {
				t.Errorf("Decode: %v, want %v", err, ErrChecksum)
			}

			err = scanWith(file, c.key, ScanOptions{SkipSealedDigests: true})
			if c.key == nil && !errors.Is(err, ErrChecksum) {
				t.Errorf("SkipSealedDigests, in the clear: %v, want %v", err, ErrChecksum)
			}
			if c.key != nil && err != nil {
				t.Errorf("SkipSealedDigests, encrypted: %v, want the digests unchecked", err)
			}
			if c.key == nil {
				return
			}
			for _, f := range []struct {
				at   int64
				want error
			}{
				{payloadPos, ErrAuth},                      // the payload's first byte
				{payloadPos + rec.PayloadLen - 1, ErrAuth}, // its tag's last
				{payloadPos - 1, ErrChecksum},              // the sealed metadata's last: the chain breaks
			} {
				if err := scanWith(flip(file, f.at), c.key, ScanOptions{SkipSealedDigests: true}); !errors.Is(err, f.want) {
					t.Errorf("SkipSealedDigests, byte %d flipped: %v, want %v", f.at, err, f.want)
				}
			}
		})
	}
}
