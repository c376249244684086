package archive

import (
	"bytes"
	"context"
	"flag"
	"io"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"
)

var seedFlag = flag.Int64("seed", 0, "seed for random tests (0: time-based, printed)")

// testRand returns a seeded generator and logs the seed so that a failure
// can be replayed with -seed.
func testRand(t testing.TB) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("random seed %d (replay with -seed=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// memSource is a Source over a byte slice with explicit extents.
type memSource struct {
	data    []byte
	extents []Extent
	i       int
}

func (s *memSource) Next() (Extent, error) {
	if s.i >= len(s.extents) {
		return Extent{}, io.EOF
	}
	s.i++
	return s.extents[s.i-1], nil
}

func (s *memSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(s.data)) {
		return 0, io.EOF
	}
	n := copy(p, s.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// fullSource covers the whole slice with one DATA extent.
func fullSource(data []byte) *memSource {
	return &memSource{data: data, extents: []Extent{{0, int64(len(data)), KindData}}}
}

func testHeader(size int64) *Header {
	return &Header{
		BlockSize:  4096,
		Codec:      CodecZstd,
		Hash:       HashBLAKE3,
		VolumeName: "vg0/vm1",
		VolumeUUID: "TeKdNn-FRIB-XuDL-7Dxt-pYlS-XpfK-tHF4vU",
		VolumeSize: size,
		Snapshot:   Snapshot{ID: DeriveID("test", "snap1"), Name: "vg0/vm1.snap1", Time: time.Date(2026, 11, 21, 3, 0, 0, 0, time.UTC)},
		Tool:       "thinback test",
		Attrs:      []Attr{{"lvm.thin_id", "7"}},
	}
}

// build writes a delta file of src with header h and returns its bytes.
func build(t testing.TB, h *Header, src Source, opts SendOptions) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, src, opts); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// applyTo applies file onto vol (a byte slice standing for a volume) with
// Scan, returning the first error.
func applyTo(file []byte, vol []byte) ([]byte, error) {
	rd := NewReader(bytes.NewReader(file))
	h, err := rd.Header()
	if err != nil {
		return vol, err
	}
	if int64(len(vol)) < h.VolumeSize {
		vol = append(vol, make([]byte, h.VolumeSize-int64(len(vol)))...)
	}
	vol = vol[:h.VolumeSize]
	err = Scan(context.Background(), rd, ScanOptions{}, func(rec *Record, data []byte) error {
		if rec.Kind == KindZero {
			clear(vol[rec.Offset:rec.End()])
		} else {
			copy(vol[rec.Offset:], data)
		}
		return nil
	})
	return vol, err
}

// volume makes test data: random blocks, compressible text, zero runs and
// a short last block.
func volume(r *rand.Rand, blocks int, tail int) []byte {
	bs := 4096
	v := make([]byte, blocks*bs+tail)
	for i := 0; i < blocks; i++ {
		b := v[i*bs : (i+1)*bs]
		switch r.Intn(4) {
		case 0: // zero
		case 1:
			r.Read(b)
		default:
			var s []byte
			for len(s) < bs {
				s = strconv.AppendInt(s, r.Int63n(1000), 10)
				s = append(s, " lorem ipsum "...)
			}
			copy(b, s)
		}
	}
	if tail > 0 {
		r.Read(v[blocks*bs:])
	}
	return v
}

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
