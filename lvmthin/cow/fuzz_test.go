package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"path/filepath"
	"slices"
	"testing"
)

// maxFuzzImage bounds the device images the fuzz targets build: enough
// for three metadata areas of 4 KiB chunks, as in the kernel-built stores.
const maxFuzzImage = 3 << 20

// check reads img with Read and compares the outcome with the naive
// reference reader: the same chunks, or the same kind of error at the same
// byte. Runs must come sorted and merged.
func check(t *testing.T, img []byte, originSize int64, memory int) {
	t.Helper()
	opts := Options{Name: "fuzz", Size: int64(len(img)), OriginSize: originSize, MemoryChunks: memory}
	runs, st, err := readAll(bytes.NewReader(img), opts)
	if len(img) == 0 {
		// An empty device is a caller's mistake, refused as such.
		if err == nil {
			t.Fatal("Read accepted a device of 0 bytes")
		}
		return
	}
	want, wantOff, wantErr := reference(img, originSize)
	if wantErr != nil {
		var ce *Error
		if !errors.As(err, &ce) || ce.Err != wantErr || ce.Offset != wantOff {
			t.Fatalf("Read: %v; reference: %v at byte %d", err, wantErr, wantOff)
		}
		return
	}
	if err != nil {
		t.Fatalf("Read: %v; the reference accepts it", err)
	}
	for i := 1; i < len(runs); i++ {
		if runs[i].First <= runs[i-1].First+runs[i-1].Count {
			t.Fatalf("runs %v, %v not sorted and merged", runs[i-1], runs[i])
		}
	}
	if got := expand(runs); !slices.Equal(got, want) || st.Exceptions != int64(len(want)) {
		t.Fatalf("Read gives %d chunks (%d exceptions), the reference %d", len(got), st.Exceptions, len(want))
	}
	if _, err := ReadHeader(bytes.NewReader(img), "fuzz", int64(len(img))); err != nil {
		t.Fatalf("ReadHeader: %v after Read succeeded", err)
	}
}

// FuzzCOWFile reads fuzzed bytes as a whole COW device.
func FuzzCOWFile(f *testing.F) {
	for _, l := range seedLayouts() {
		img := l.build()
		if len(img) <= 1<<16 {
			f.Add(img, uint32(1<<20))
		}
	}
	f.Fuzz(func(t *testing.T, img []byte, originChunks uint32) {
		check(t, img, int64(originChunks)*512+1, 3)
	})
}

// FuzzCOWAreas builds a device from a header chunk and metadata areas
// (data: the header chunk, then one chunk per area, at the chunk size its
// header says), chunks long, so that small inputs reach many areas and
// large devices. It is seeded from the kernel-built stores of
// testdata/cow, compacted so.
func FuzzCOWAreas(f *testing.F) {
	for _, l := range seedLayouts() {
		img := l.build()
		f.Add(compact(img), uint32(len(img)/int(l.chunkSectors*512)), uint32(1<<20))
	}
	paths, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "cow", "*.cow.gz"))
	if len(paths) == 0 {
		f.Fatal("no kernel-built stores in testdata/cow")
	}
	for _, p := range paths {
		img := fixture(f, filepath.Base(p))
		cs := int(binary.LittleEndian.Uint32(img[12:])) * 512
		f.Add(compact(img), uint32(len(img)/cs), uint32(1<<20))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunks uint32, originChunks uint32) {
		img := expandAreas(data, chunks)
		if img == nil {
			return
		}
		check(t, img, int64(originChunks)*512+1, 5)
	})
}

// compact keeps a store's header chunk and its metadata areas up to the
// first one that is not full.
func compact(img []byte) []byte {
	cs := int64(binary.LittleEndian.Uint32(img[12:])) * 512
	per := cs / 16
	out := append([]byte{}, img[:cs]...)
	for a := int64(0); (1+a*(per+1)+1)*cs <= int64(len(img)); a++ {
		area := img[(1+a*(per+1))*cs:][:cs]
		out = append(out, area...)
		if binary.LittleEndian.Uint64(area[cs-8:]) == 0 {
			break
		}
	}
	return out
}

// expandAreas lays compacted data out as a device of the given chunks (at
// most maxFuzzImage bytes); nil if the header's chunk size is unusable for
// it (then FuzzCOWFile covers the input).
func expandAreas(data []byte, chunks uint32) []byte {
	if len(data) < 16 {
		return nil
	}
	sectors := binary.LittleEndian.Uint32(data[12:])
	if sectors == 0 || sectors > MaxChunkSectors || sectors&(sectors-1) != 0 {
		return nil
	}
	cs := int64(sectors) * 512
	size := min(int64(chunks)*cs, maxFuzzImage/cs*cs)
	if size < 16 {
		return nil
	}
	img := make([]byte, size)
	copy(img, data[:min(int64(len(data)), cs)])
	per := cs / 16
	for a, rest := int64(0), data[min(int64(len(data)), cs):]; len(rest) > 0; a++ {
		off := (1 + a*(per+1)) * cs
		if off >= size {
			break
		}
		n := copy(img[off:], rest[:min(int64(len(rest)), cs)])
		rest = rest[n:]
		if n < int(cs) {
			break
		}
	}
	return img
}

// seedLayouts are hand-built stores, good and bad, for the fuzz corpus.
func seedLayouts() []layout {
	many := make([]exc, 70)
	for i := range many {
		many[i] = exc{old: uint64(3 * i)}
	}
	return []layout{
		{chunkSectors: 8, chunks: 16, excs: olds(5, 100, 6)},
		{chunkSectors: 1, chunks: 200, excs: many},
		{chunkSectors: 1, chunks: 1 + 2*33, excs: many[:64]},
		{chunkSectors: 1, chunks: 100, excs: olds(1, 2, 3, 2)},
		{chunkSectors: 8, chunks: 8, excs: []exc{{1, 1}}},
		{chunkSectors: 8, chunks: 4, header: func(b []byte) { b[4] = 0 }},
		{chunkSectors: 2, chunks: 50, excs: olds(9, 8, 7, 1000000)},
	}
}
