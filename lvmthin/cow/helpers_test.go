package cow

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// exc is one exception; new 0 in a layout means "the next data chunk the
// kernel would allocate".
type exc struct{ old, new uint64 }

// layout describes a COW store to build by hand, the way the kernel lays
// one out (header, areas of E exceptions, data chunks in between).
type layout struct {
	chunkSectors uint32
	chunks       int64 // device size in chunks; 0: just enough for the exceptions
	excs         []exc
	header       func(h []byte)   // changes the header chunk
	change       func(img []byte) // changes anything else
}

func (l layout) geometry() (chunk, perArea, stride int64) {
	chunk = int64(l.chunkSectors) * SectorSize
	perArea = chunk / exceptionSize
	return chunk, perArea, perArea + 1
}

// build returns the device image.
func (l layout) build() []byte {
	chunk, perArea, stride := l.geometry()
	n := int64(len(l.excs))
	areas := n/perArea + 1 // a full last area is followed by a zeroed one
	need := 1 + areas*stride
	if n%perArea == 0 {
		need = 1 + (areas-1)*stride + 1
	}
	chunks := l.chunks
	if chunks == 0 {
		chunks = need
	}
	img := make([]byte, chunks*chunk)
	binary.LittleEndian.PutUint32(img[0:], Magic)
	binary.LittleEndian.PutUint32(img[4:], 1)
	binary.LittleEndian.PutUint32(img[8:], Version)
	binary.LittleEndian.PutUint32(img[12:], l.chunkSectors)
	if l.header != nil {
		l.header(img[:chunk])
	}
	next := uint64(2)
	for i, e := range l.excs {
		a := int64(i) / perArea
		off := (1+a*stride)*chunk + (int64(i)%perArea)*exceptionSize
		if e.new == 0 {
			e.new = next
			next++
			if (next-1)%uint64(stride) == 0 {
				next++
			}
		}
		if off+exceptionSize > int64(len(img)) {
			break
		}
		binary.LittleEndian.PutUint64(img[off:], e.old)
		binary.LittleEndian.PutUint64(img[off+8:], e.new)
	}
	if l.change != nil {
		l.change(img)
	}
	return img
}

// olds returns a layout's exceptions for the given origin chunks.
func olds(chunks ...uint64) []exc {
	var out []exc
	for _, c := range chunks {
		out = append(out, exc{old: c})
	}
	return out
}

// readAll reads a store and collects its runs.
func readAll(r io.ReaderAt, opts Options) ([]Run, Stats, error) {
	var runs []Run
	st, err := Read(r, opts, func(run Run) error {
		runs = append(runs, run)
		return nil
	})
	return runs, st, err
}

// testRand returns a random source and logs its seed; THINBACK_SEED
// replays a run.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// fixture returns a decompressed COW store from testdata/cow.
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "cow", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, zr); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return b.Bytes()
}

// reference reads a store the naive way, in memory, for comparison: the
// same rules, written out as plainly as they are stated, with a map for
// repeats. It returns the sorted origin chunks, or the offset and sentinel
// of the first problem (entry problems in table order, then repeats).
func reference(img []byte, originSize int64) (chunks []uint64, errOff int64, sentinel error) {
	size := int64(len(img))
	if size < 16 {
		return nil, 0, ErrCorrupt
	}
	le32 := func(o int64) uint32 { return binary.LittleEndian.Uint32(img[o:]) }
	le64 := func(o int64) uint64 { return binary.LittleEndian.Uint64(img[o:]) }
	magic, valid, version, cs := le32(0), le32(4), le32(8), le32(12)
	switch {
	case magic != Magic:
		return nil, 0, ErrCorrupt
	case version != 1:
		return nil, 8, ErrVersion
	case cs == 0 || cs > 2048 || cs&(cs-1) != 0:
		return nil, 12, ErrCorrupt
	case valid > 1:
		return nil, 4, ErrCorrupt
	}
	chunk := int64(cs) * 512
	for o := int64(16); o < min(chunk, 4096, size); o++ {
		if img[o] != 0 {
			return nil, o, ErrCorrupt
		}
	}
	if valid == 0 {
		return nil, 4, ErrInvalidated
	}
	devChunks := size / chunk
	if devChunks < 2 {
		return nil, 0, ErrCorrupt
	}
	perArea := chunk / 16
	originChunks := uint64((originSize + chunk - 1) / chunk)
	type entry struct {
		old uint64
		off int64
	}
	var table []entry
	for a := int64(0); ; a++ {
		loc := 1 + a*(perArea+1)
		if loc >= devChunks {
			break
		}
		full := true
		for i := int64(0); i < perArea; i++ {
			o := loc*chunk + i*16
			old, nw := le64(o), le64(o+8)
			if nw == 0 {
				if old != 0 {
					return nil, o, ErrCorrupt
				}
				full = false
				break
			}
			if nw >= uint64(devChunks) || (nw-1)%uint64(perArea+1) == 0 {
				return nil, o + 8, ErrCorrupt
			}
			if old >= originChunks {
				return nil, o, ErrCorrupt
			}
			table = append(table, entry{old, o})
		}
		if !full {
			break
		}
	}
	// Read reports the second exception of the smallest repeated chunk.
	count := map[uint64]int{}
	second := map[uint64]int64{}
	for _, e := range table {
		count[e.old]++
		if count[e.old] == 2 {
			second[e.old] = e.off
		}
	}
	found := false
	var minDup uint64
	for c := range second {
		if !found || c < minDup {
			minDup, found = c, true
		}
	}
	if found {
		return nil, second[minDup], ErrCorrupt
	}
	for _, e := range table {
		chunks = append(chunks, e.old)
	}
	slices.Sort(chunks)
	return chunks, -1, nil
}

// expand turns runs into chunk numbers.
func expand(runs []Run) []uint64 {
	var out []uint64
	for _, r := range runs {
		for c := r.First; c < r.First+r.Count; c++ {
			out = append(out, c)
		}
	}
	return out
}
