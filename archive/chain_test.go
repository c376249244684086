package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testChain is the states of a volume and the delta files between them:
// files[0] a full of states[0], files[i] an incremental from states[i-1].
type testChain struct {
	states [][]byte
	hdrs   []*Header
	files  [][]byte
}

// diffSource is a Source of the blocks of cur that differ from prev (all
// of them past prev's end), as a send from two snapshots would give.
func diffSource(prev, cur []byte, bs int64) *memSource {
	s := &memSource{data: cur}
	for off := int64(0); off < int64(len(cur)); off += bs {
		end := min(off+bs, int64(len(cur)))
		if end <= int64(len(prev)) && bytes.Equal(cur[off:end], prev[off:end]) {
			continue
		}
		if n := len(s.extents); n > 0 && s.extents[n-1].End() == off {
			s.extents[n-1].Length += end - off
			continue
		}
		s.extents = append(s.extents, Extent{Offset: off, Length: end - off, Kind: KindData})
	}
	return s
}

// randomChain makes a chain of n states with random writes, zeroed runs
// and resizes to unaligned sizes, in records of random lengths.
func randomChain(t testing.TB, r *rand.Rand, n int, bs int64) *testChain {
	c := &testChain{}
	state := volume(r, 4+r.Intn(40), r.Intn(4096))
	for i := 0; i < n; i++ {
		if i > 0 {
			state = append([]byte(nil), state...)
			for k := r.Intn(10); k > 0; k-- {
				off := r.Intn(len(state))
				w := state[off:min(len(state), off+1+r.Intn(3*int(bs)))]
				if r.Intn(3) == 0 {
					clear(w)
				} else {
					r.Read(w)
				}
			}
			switch r.Intn(5) {
			case 0:
				state = append(state, volume(r, r.Intn(4), 1+r.Intn(4000))...)
			case 1:
				state = state[:1+r.Intn(len(state))]
			}
		}
		h := testHeader(int64(len(state)))
		h.BlockSize = bs
		h.Snapshot = Snapshot{ID: NewID(), Name: fmt.Sprintf("snap%d", i)}
		var src Source = fullSource(state)
		if i > 0 {
			prev := c.hdrs[i-1]
			h.Parent, h.ParentSize = prev.Snapshot, prev.VolumeSize
			src = diffSource(c.states[i-1], state, bs)
		}
		chunk := []int{int(bs), 3 * int(bs), 64 << 10, 1 << 20}[r.Intn(4)]
		c.states = append(c.states, state)
		c.hdrs = append(c.hdrs, h)
		c.files = append(c.files, build(t, h, src, SendOptions{ChunkSize: chunk}))
	}
	return c
}

// open writes files[lo:hi] to disk and returns them as chain inputs.
func (c *testChain) open(t testing.TB, lo, hi int) []ChainInput {
	t.Helper()
	dir := t.TempDir()
	var inputs []ChainInput
	for i := lo; i < hi; i++ {
		name := filepath.Join(dir, fmt.Sprintf("%d.tbk", i))
		inputs = append(inputs, ChainInput{Name: name, File: openBytes(t, name, c.files[i])})
	}
	return inputs
}

func openBytes(t testing.TB, name string, b []byte) *os.File {
	t.Helper()
	if err := os.WriteFile(name, b, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestChainSegmentsRandom: the segments of any stretch of a random chain,
// written over the state before it (nothing, for a stretch from the full),
// give the stretch's last state; they are disjoint and ascending, and only
// the payloads of the records they use are read.
func TestChainSegmentsRandom(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 30; round++ {
		bs := []int64{4096, 8192, 16384}[r.Intn(3)]
		c := randomChain(t, r, 1+r.Intn(5), bs)
		lo := r.Intn(len(c.files))
		hi := lo + 1 + r.Intn(len(c.files)-lo)
		where := fmt.Sprintf("round %d: files [%d, %d) of %d, block size %d", round, lo, hi, len(c.files), bs)
		ch, err := OpenChain(c.open(t, lo, hi))
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if ch.BlockSize() != bs || ch.Header().Snapshot != c.hdrs[hi-1].Snapshot || len(ch.Files()) != hi-lo {
			t.Fatalf("%s: block size %d, header %+v", where, ch.BlockSize(), ch.Header())
		}
		var got []byte
		if lo > 0 {
			got = append(got, c.states[lo-1]...)
		}
		want := c.states[hi-1]
		got = append(got, make([]byte, max(0, len(want)-len(got)))...)[:len(want)]
		dec := NewDecoder()
		pos := int64(0)
		for {
			seg, err := ch.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if seg.Offset < pos || seg.Length <= 0 || seg.End() > int64(len(want)) || seg.Record == nil ||
				seg.Offset < seg.Record.Offset || seg.End() > seg.Record.End() || seg.Kind != seg.Record.Kind {
				t.Fatalf("%s: segment %+v after %d", where, seg, pos)
			}
			pos = seg.End()
			if seg.Kind == KindZero {
				clear(got[seg.Offset:seg.End()])
				continue
			}
			p, err := ch.ReadPayload(seg.Input, seg.Record, nil)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			data, err := dec.Decode(nil, seg.Record, p)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			copy(got[seg.Offset:], data[seg.Offset-seg.Record.Offset:seg.End()-seg.Record.Offset])
		}
		dec.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: the segments do not give the last state", where)
		}
		if _, err := ch.Next(); err != io.EOF {
			t.Fatalf("%s: Next after the end: %v", where, err)
		}
	}
}

// TestCheckLinks: each rule between the files of a chain, with the
// sentinel and what the message must name.
func TestCheckLinks(t *testing.T) {
	hdr := func(name string, size int64, parent *Header) *Header {
		h := testHeader(size)
		h.Snapshot = Snapshot{ID: DeriveID("test", name), Name: name}
		if parent != nil {
			h.Parent, h.ParentSize = parent.Snapshot, parent.VolumeSize
		}
		return h
	}
	full := hdr("s1", 1<<20, nil)
	incr := hdr("s2", 2<<20, full)
	incr3 := hdr("s3", 2<<20, incr)
	otherVol := *incr
	otherVol.VolumeUUID = "another"
	wrongSize := *incr
	wrongSize.ParentSize = 3 << 20
	snapback := hdr("undo", 8<<20, incr)
	snapback.Optional |= FeatureSnapback
	snapback.Snapshot, snapback.ParentSize = full.Snapshot, 8<<20
	afterUndo := hdr("s4", 1<<20, full) // from the state the undo file restores
	for _, tc := range []struct {
		name  string
		hdrs  []*Header
		names []string // what the message must name
	}{
		{"chain", []*Header{full, incr, incr3}, nil},
		{"from an incremental", []*Header{incr, incr3}, nil},
		{"full after the first", []*Header{incr, full}, []string{"f0", "f1", "is a full"}},
		{"gap", []*Header{full, incr3}, []string{"f0", "f1", "s2", "s1"}},
		{"other volume", []*Header{full, &otherVol}, []string{"another"}},
		{"parent size", []*Header{full, &wrongSize}, []string{"f0", "f1", "3145728", "1048576"}},
		{"snapback sizes", []*Header{incr, snapback, afterUndo}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			files := make([]ChainFile, len(tc.hdrs))
			for i, h := range tc.hdrs {
				files[i] = ChainFile{Name: fmt.Sprintf("f%d", i), Header: h}
			}
			err := CheckLinks(files)
			if tc.names == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNotChain) {
				t.Fatalf("got %v, want ErrNotChain", err)
			}
			for _, n := range tc.names {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("the message does not name %q: %v", n, err)
				}
			}
		})
	}
}

// TestOpenChainRefusals: what OpenChain adds to CheckLinks (one block
// size, at least one file), and damage found as the files are read,
// naming the file, sticky.
func TestOpenChainRefusals(t *testing.T) {
	r := testRand(t)
	c := randomChain(t, r, 3, 4096)
	other := randomChain(t, r, 2, 8192)
	// An incremental of the same snapshot as c's third, in other blocks.
	h := *c.hdrs[2]
	h.BlockSize = 8192
	c8 := build(t, &h, diffSource(c.states[1], c.states[2], 8192), SendOptions{})
	inputs := c.open(t, 0, 2)
	inputs = append(inputs, ChainInput{Name: "eight.tbk", File: openBytes(t, filepath.Join(t.TempDir(), "eight.tbk"), c8)})
	if _, err := OpenChain(inputs); !errors.Is(err, ErrBlockSize) || !strings.Contains(err.Error(), "eight.tbk") {
		t.Fatalf("block sizes: %v", err)
	}
	if _, err := OpenChain(nil); !errors.Is(err, ErrNotChain) {
		t.Fatalf("no files: %v", err)
	}
	if _, err := OpenChain(append(c.open(t, 0, 1), other.open(t, 1, 2)...)); !errors.Is(err, ErrNotChain) {
		t.Fatalf("files of two chains: %v", err)
	}
	if _, err := OpenChainDigests(c.open(t, 1, 3)); !errors.Is(err, ErrNotChain) {
		t.Fatalf("digests of a chain without its full: %v", err)
	}

	cut := append([]byte(nil), c.files[2][:len(c.files[2])-1]...)
	inputs = c.open(t, 0, 2)
	name := filepath.Join(t.TempDir(), "cut.tbk")
	inputs = append(inputs, ChainInput{Name: name, File: openBytes(t, name, cut)})
	ch, err := OpenChain(inputs)
	if err != nil {
		t.Fatal(err)
	}
	for err == nil {
		_, err = ch.Next()
	}
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "cut.tbk") {
		t.Fatalf("truncated file: %v", err)
	}
	if _, again := ch.Next(); again != err {
		t.Fatalf("error not sticky: %v, then %v", err, again)
	}
}

// TestReadPayloadAtTruncated: a file that shrank after its records were
// read gives ErrTruncated, not a bare I/O error.
func TestReadPayloadAtTruncated(t *testing.T) {
	r := testRand(t)
	c := randomChain(t, r, 1, 4096)
	name := filepath.Join(t.TempDir(), "full.tbk")
	f := openBytes(t, name, c.files[0])
	rd := NewReader(f)
	var last *Record
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == KindData {
			last = rec
		}
	}
	if p, err := ReadPayloadAt(f, last, nil); err != nil || int64(len(p)) != last.PayloadLen {
		t.Fatalf("before truncation: %d bytes, %v", len(p), err)
	}
	if err := os.Truncate(name, last.PayloadPos+last.PayloadLen/2); err != nil {
		t.Fatal(err)
	}
	_, err := ReadPayloadAt(f, last, nil)
	var fe *FormatError
	if !errors.Is(err, ErrTruncated) || !errors.As(err, &fe) || fe.Record != last.Num {
		t.Fatalf("after truncation: %v", err)
	}
}
