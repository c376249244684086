package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"testing"
)

// lowestRead is a Source that records the lowest offset read from it.
type lowestRead struct {
	*memSource
	mu  sync.Mutex
	low int64
}

func (s *lowestRead) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	s.low = min(s.low, off)
	s.mu.Unlock()
	return s.memSource.ReadAt(p, off)
}

// buildWith writes a delta file of src with header h, under key k when set.
func buildWith(t testing.TB, h *Header, src Source, k *Key) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, WithKey(k))
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, src, SendOptions{Workers: 2, ChunkSize: 3 * 4096}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// applyResumed is applyTo for a file read under k (nil: in the clear).
func applyResumed(file, vol []byte, k *Key) ([]byte, *Header, error) {
	rd := NewReader(bytes.NewReader(file), WithKey(k))
	h, err := rd.Header()
	if err != nil {
		return vol, nil, err
	}
	if int64(len(vol)) < h.VolumeSize {
		vol = append(vol, make([]byte, h.VolumeSize-int64(len(vol)))...)
	}
	vol = vol[:h.VolumeSize]
	err = Scan(context.Background(), rd, ScanOptions{}, func(rec *Record, data []byte) error {
		if rec.Offset < h.ResumeFrom {
			return errors.New("a record below the resume offset was handed out")
		}
		if rec.Kind == KindZero {
			clear(vol[rec.Offset:rec.End()])
		} else {
			copy(vol[rec.Offset:], data)
		}
		return nil
	})
	return vol, h, err
}

// TestResumed writes the rest of a full and of an incremental from
// offsets inside a record, on record boundaries and at the volume's end,
// in the clear and encrypted: the resumed file, applied over a volume
// whose bytes from the offset on are garbage, gives the snapshot, and no
// byte below the offset is read from the source.
func TestResumed(t *testing.T) {
	r := testRand(t)
	const blocks = 40
	base := volume(r, blocks, 0)
	next := append([]byte(nil), base...)
	r.Read(next[5*4096 : 9*4096])
	clear(next[20*4096 : 22*4096])
	r.Read(next[30*4096 : 37*4096])
	incrExtents := []Extent{{5 * 4096, 4 * 4096, KindData}, {20 * 4096, 2 * 4096, KindZero}, {30 * 4096, 7 * 4096, KindData}}

	for _, k := range []*Key{nil, testKey(t, 3)} {
		for _, from := range []int64{4096, 7 * 4096, 21 * 4096, 31 * 4096, 39 * 4096, blocks * 4096} {
			for _, incr := range []bool{false, true} {
				h := testHeader(int64(len(base)))
				src := &lowestRead{memSource: fullSource(base), low: 1 << 62}
				want, before := base, []byte(nil)
				if incr {
					h.Snapshot = Snapshot{ID: DeriveID("test", "snap2"), Name: "vg0/vm1.snap2"}
					h.Parent, h.ParentSize = Snapshot{ID: DeriveID("test", "snap1")}, int64(len(base))
					src = &lowestRead{memSource: &memSource{data: next, extents: incrExtents}, low: 1 << 62}
					want, before = next, base
				}
				h.ResumeFrom = from
				file := buildWith(t, h, src, k)
				if src.low < from {
					t.Fatalf("from %d, incremental %v: the source was read at %d, below the resume offset", from, incr, src.low)
				}
				// The target got everything below from; above it, what it
				// holds is anything (the interrupted apply's last writes).
				vol := make([]byte, len(base))
				copy(vol, before)
				copy(vol, want[:from])
				if incr {
					copy(vol[from:], base[from:])
				} else {
					r.Read(vol[from:])
				}
				got, rh, err := applyResumed(file, vol, k)
				if err != nil {
					t.Fatalf("from %d, incremental %v, key %v: %v", from, incr, k != nil, err)
				}
				if !rh.IsResumed() || rh.ResumeFrom != from || rh.IsEncrypted() != (k != nil) {
					t.Fatalf("header: resumed %v from %d, encrypted %v", rh.IsResumed(), rh.ResumeFrom, rh.IsEncrypted())
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("from %d, incremental %v, key %v: the volume differs from the snapshot", from, incr, k != nil)
				}
				if incr && k != nil && rh.ParentTag != k.ownParentTag(rh) {
					t.Fatalf("a resumed encrypted incremental is not bound to its parent snapshot")
				}
			}
		}
	}
}

// TestResumedErrors: a resumed file whose offset is not a multiple of the
// block size, or lies beyond the volume, or that has a record before its
// offset, is refused with exactly that said.
func TestResumedErrors(t *testing.T) {
	h := testHeader(8 * 4096)
	h.ResumeFrom = 4096
	resumedHeader := func(from int64) []byte {
		hc := *h
		hc.Required, hc.ResumeFrom = FeatureResumed, from
		return withRequired(t, &hc, FeatureResumed)
	}
	for _, tc := range []struct {
		name, want string
		file       []byte
		sentinel   error
	}{
		{"offset not a multiple of the block size", "header: malformed delta file: resume offset 1000 is not a positive multiple of the block size 4096",
			resumedHeader(1000), ErrHeader},
		{"offset beyond the volume", "header: malformed delta file: resume offset 40960 is beyond the volume size 32768",
			resumedHeader(10 * 4096), ErrHeader},
		{"offset zero", "header: malformed delta file: resume offset 0 is not a positive multiple of the block size 4096",
			resumedHeader(0), ErrHeader},
		{"record before the offset", "record 1 at byte 241: malformed delta file: ZERO record at volume offset 0 precedes the resume offset 4096",
			craft(t, 1, h, func(w *Writer) {
				var meta [zeroMetaLen]byte
				binary.LittleEndian.PutUint64(meta[8:], 4096)
				w.writeRaw(typeZero, 0, meta[:], nil)
				w.lay.need = w.lay.volumeSize
			}), ErrHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := NewReader(bytes.NewReader(tc.file))
			var err error
			for err == nil {
				_, err = rd.Next()
			}
			if !errors.Is(err, tc.sentinel) || err.Error() != tc.want {
				t.Fatalf("got %v\nwant %s", err, tc.want)
			}
		})
	}

	// A writer refuses the same.
	for _, from := range []int64{1000, 10 * 4096} {
		hc := *h
		hc.ResumeFrom = from
		if err := NewWriter(&bytes.Buffer{}).WriteHeader(&hc); err == nil {
			t.Errorf("WriteHeader took a resume offset of %d", from)
		}
	}
	// A resumed file is not a snapshot: it is no part of a chain.
	full := build(t, testHeader(8*4096), fullSource(make([]byte, 8*4096)), SendOptions{})
	rest := build(t, h, &memSource{data: make([]byte, 8*4096), extents: []Extent{{0, 8 * 4096, KindZero}}}, SendOptions{})
	for _, in := range [][]ChainInput{
		{{Name: "rest", File: bytes.NewReader(rest)}},
		{{Name: "full", File: bytes.NewReader(full)}, {Name: "rest", File: bytes.NewReader(rest)}},
	} {
		if _, err := OpenChain(in); !errors.Is(err, ErrNotChain) {
			t.Errorf("OpenChain of %d files with a resumed one: %v, want ErrNotChain", len(in), err)
		}
	}
}
