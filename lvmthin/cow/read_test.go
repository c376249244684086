package cow

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestReadHandBuilt(t *testing.T) {
	const origin = 1 << 30
	// Chunks of one sector: 32 exceptions per area, areas 33 chunks apart.
	full0 := make([]exc, 32)
	for i := range full0 {
		full0[i] = exc{old: uint64(1000 - 10*i)}
	}
	spread := append(append([]exc{}, full0...), olds(7, 8, 9, 3)...)
	fillAll := make([]exc, 64) // two full areas, and no room for a third
	for i := range fillAll {
		fillAll[i] = exc{old: uint64(i * 2)}
	}
	tests := []struct {
		name       string
		l          layout
		originSize int64
		runs       []Run
		exceptions int64
		areas      int64
	}{
		{"empty table", layout{chunkSectors: 8, chunks: 16}, origin, nil, 0, 1},
		{"as the kernel writes it", layout{chunkSectors: 8, chunks: 16, excs: olds(5, 100, 6)}, origin,
			[]Run{{5, 2}, {100, 1}}, 3, 1},
		{"merged runs out of order", layout{chunkSectors: 8, chunks: 64, excs: olds(9, 3, 4, 8, 2, 10, 40)}, origin,
			[]Run{{2, 3}, {8, 3}, {40, 1}}, 7, 1},
		{"full area continues in the next", layout{chunkSectors: 1, excs: spread}, origin,
			append([]Run{{3, 1}, {7, 3}}, func() []Run {
				var r []Run
				for i := 31; i >= 0; i-- {
					r = append(r, Run{uint64(1000 - 10*i), 1})
				}
				return r
			}()...), 36, 2},
		{"a full area at the end of the device ends the table", layout{chunkSectors: 1, chunks: 1 + 2*33, excs: fillAll}, origin,
			func() []Run {
				var r []Run
				for i := 0; i < 64; i++ {
					r = append(r, Run{uint64(2 * i), 1})
				}
				return r
			}(), 64, 2},
		{"partial last chunk of the origin", layout{chunkSectors: 8, chunks: 16, excs: olds(2)}, 2*4096 + 1,
			[]Run{{2, 1}}, 1, 1},
		{"64 KiB chunks", layout{chunkSectors: 128, chunks: 8, excs: olds(1, 0, 2)}, origin, []Run{{0, 3}}, 3, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.l.build()
			for _, ra := range []int{1, 0, 7} {
				runs, st, err := readAll(bytes.NewReader(img), Options{Name: "cow", Size: int64(len(img)), OriginSize: tt.originSize, ReadAhead: ra})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(runs, tt.runs) {
					t.Fatalf("runs %v\nwant %v", runs, tt.runs)
				}
				if st.Exceptions != tt.exceptions || st.Areas != tt.areas || st.Runs != int64(len(tt.runs)) ||
					st.Header.ChunkSectors != tt.l.chunkSectors || st.MetadataBytes != tt.areas*int64(tt.l.chunkSectors)*512 {
					t.Errorf("stats %+v", st)
				}
			}
		})
	}
}

func TestReadBad(t *testing.T) {
	put32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	put64 := func(off int, v uint64) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint64(b[off:], v) }
	}
	dupAcross := make([]exc, 40)
	for i := range dupAcross {
		dupAcross[i] = exc{old: uint64(i)}
	}
	dupAcross[35].old = 4 // area 1, exception 3
	tests := []struct {
		name     string
		l        layout
		size     int64 // device size given to Read; 0: the image's
		sentinel error
		want     string
	}{
		{"zero magic", layout{chunkSectors: 8, chunks: 4, header: put32(0, 0)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 0: no snapshot header (magic is 0): not a COW device, or a snapshot that was never activated"},
		{"bad magic", layout{chunkSectors: 8, chunks: 4, header: put32(0, 0x12345678)}, 0, ErrCorrupt,
			`corrupt snapshot exception store: cow, byte 0: bad magic 0x12345678, want 0x70416e53 ("SnAp")`},
		{"big-endian magic", layout{chunkSectors: 8, chunks: 4, header: put32(0, 0x536e4170)}, 0, ErrCorrupt,
			`corrupt snapshot exception store: cow, byte 0: bad magic 0x536e4170, want 0x70416e53 ("SnAp")`},
		{"version 2", layout{chunkSectors: 8, chunks: 4, header: put32(8, 2)}, 0, ErrVersion,
			"unsupported snapshot exception store version: cow, byte 8: version 2, want 1"},
		{"chunk size 0", layout{chunkSectors: 8, chunks: 4, header: put32(12, 0)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 12: chunk size of 0 sectors: want a power of two from 1 to 2048"},
		{"chunk size 24", layout{chunkSectors: 8, chunks: 4, header: put32(12, 24)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 12: chunk size of 24 sectors: want a power of two from 1 to 2048"},
		{"chunk size 4096", layout{chunkSectors: 8, chunks: 4, header: put32(12, 4096)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 12: chunk size of 4096 sectors: want a power of two from 1 to 2048"},
		{"valid 7", layout{chunkSectors: 8, chunks: 4, header: put32(4, 7)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4: valid flag is 7, want 0 or 1"},
		{"garbage after the header", layout{chunkSectors: 8, chunks: 4, header: func(b []byte) { b[100] = 0xaa }}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 100: byte 0xaa after the header fields, where the kernel writes zeroes"},
		{"invalidated", layout{chunkSectors: 8, chunks: 4, excs: olds(1, 2), header: put32(4, 0)}, 0, ErrInvalidated,
			"snapshot invalidated: cow, byte 4: valid flag is 0: the kernel invalidated the snapshot (its COW space filled up, or an I/O error); its exception table is incomplete"},
		{"device of 10 bytes", layout{chunkSectors: 8, chunks: 1}, 10, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 0: a device of 10 bytes is too small for a snapshot header"},
		{"no room for area 0", layout{chunkSectors: 8, chunks: 1}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 0: a device of 4096 bytes has no room for a metadata area after the header (chunks of 4096 bytes)"},
		{"new_chunk past the end", layout{chunkSectors: 8, chunks: 16, excs: []exc{{1, 2}, {2, 16}}}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4120: new_chunk 16 is past the end of the device (16 chunks of 4096 bytes)"},
		{"new_chunk in a partial last chunk", layout{chunkSectors: 8, chunks: 16, excs: []exc{{1, 15}}}, 15*4096 + 512, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4104: new_chunk 15 is past the end of the device (15 chunks of 4096 bytes)"},
		{"new_chunk is area 0", layout{chunkSectors: 8, chunks: 16, excs: []exc{{1, 1}}}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4104: new_chunk 1 is metadata area 0, not a data chunk"},
		{"new_chunk is area 1", layout{chunkSectors: 1, chunks: 100, excs: []exc{{1, 2}, {2, 34}}}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 536: new_chunk 34 is metadata area 1, not a data chunk"},
		{"end marker with an origin chunk", layout{chunkSectors: 8, chunks: 16, excs: olds(1, 2), change: put64(4096+32, 77)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4128: the end-of-table marker (new_chunk 0) has old_chunk 77, not 0"},
		{"old_chunk past the origin", layout{chunkSectors: 8, chunks: 16, excs: olds(1, 256)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4112: old_chunk 256 is past the end of the origin (256 chunks of 4096 bytes)"},
		{"origin chunk twice in one area", layout{chunkSectors: 8, chunks: 16, excs: olds(3, 9, 5, 9)}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 4144: old_chunk 9 is listed again; the exception at byte 4112 has it already"},
		{"origin chunk twice across areas", layout{chunkSectors: 1, chunks: 100, excs: dupAcross}, 0, ErrCorrupt,
			"corrupt snapshot exception store: cow, byte 17456: old_chunk 4 is listed again; the exception at byte 576 has it already"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := tt.l.build()
			size := tt.size
			if size == 0 {
				size = int64(len(img))
			}
			if size < int64(len(img)) {
				img = img[:size]
			}
			_, _, err := readAll(bytes.NewReader(img), Options{Name: "cow", Size: size, OriginSize: 1 << 20})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("%v is not %v", err, tt.sentinel)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("%v is not a *cow.Error", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n%s\nwant\n%s", err, tt.want)
			}
			// The naive reader agrees on the offset and the kind.
			if _, off, sentinel := reference(img, 1<<20); ce != nil && (off != ce.Offset || sentinel != ce.Err) {
				t.Errorf("reference says %v at byte %d", sentinel, off)
			}
		})
	}
}

// TestReadHeaderInvalidated: ReadHeader returns the header with the error.
func TestReadHeaderInvalidated(t *testing.T) {
	img := layout{chunkSectors: 16, chunks: 4, header: func(b []byte) { b[4] = 0 }}.build()
	h, err := ReadHeader(bytes.NewReader(img), "cow", int64(len(img)))
	if !errors.Is(err, ErrInvalidated) || h.Magic != Magic || h.Valid != 0 || h.Version != 1 || h.ChunkSize() != 8192 || h.ExceptionsPerArea() != 512 {
		t.Fatalf("ReadHeader = %+v, %v", h, err)
	}
	img[4] = 1
	if h, err := ReadHeader(bytes.NewReader(img), "cow", int64(len(img))); err != nil || h.Valid != 1 {
		t.Fatalf("ReadHeader = %+v, %v", h, err)
	}
}

// shortReader is a device that ends before the size it was opened with
// (it shrank) or fails at an offset.
type shortReader struct {
	b      []byte
	failAt int64
}

func (s shortReader) ReadAt(p []byte, off int64) (int, error) {
	if s.failAt > 0 && off+int64(len(p)) > s.failAt {
		return 0, errors.New("input/output error")
	}
	return bytes.NewReader(s.b).ReadAt(p, off)
}

func TestReadIOErrors(t *testing.T) {
	img := layout{chunkSectors: 1, chunks: 200, excs: make([]exc, 40)}.build()
	for i := 0; i < 40; i++ {
		binary.LittleEndian.PutUint64(img[512+(i/32)*33*512+(i%32)*16:], uint64(i))
	}
	opts := Options{Name: "cow", Size: int64(len(img)), OriginSize: 1 << 20}
	if _, _, err := readAll(bytes.NewReader(img), opts); err != nil {
		t.Fatal(err)
	}
	_, _, err := readAll(shortReader{b: img[:30*512]}, opts)
	if !errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrCorrupt) ||
		err.Error() != "cow: reading metadata area 1 at byte 17408: short read, 0 of 512 bytes: unexpected EOF" {
		t.Errorf("truncated device: %v", err)
	}
	_, _, err = readAll(shortReader{b: img, failAt: 17408 + 1}, opts)
	if err == nil || err.Error() != "cow: reading metadata area 1 at byte 17408: input/output error" {
		t.Errorf("failing device: %v", err)
	}
	_, _, err = readAll(shortReader{b: img, failAt: 1}, opts)
	if err == nil || err.Error() != "cow: reading the snapshot header: input/output error" {
		t.Errorf("failing header: %v", err)
	}
	if _, _, err := readAll(bytes.NewReader(img), Options{Name: "cow", Size: 0, OriginSize: 1}); err == nil {
		t.Error("size 0 accepted")
	}
	stop := errors.New("stop")
	if _, err := Read(bytes.NewReader(img), opts, func(Run) error { return stop }); err != stop {
		t.Errorf("callback error: %v", err)
	}
}

// TestReadSpill forces sorted runs to a temporary file: the result is the
// same as in memory, repeats are still found with their offsets, and the
// runs are counted.
func TestReadSpill(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 20; round++ {
		n := 1 + r.IntN(3000)
		originChunks := uint64(n + r.IntN(4*n))
		perm := r.Perm(int(originChunks))
		excs := make([]exc, n)
		for i := range excs {
			excs[i] = exc{old: uint64(perm[i])}
		}
		dup := round%3 == 2 && n > 1
		if dup {
			i, j := r.IntN(n), r.IntN(n)
			for i == j {
				j = r.IntN(n)
			}
			excs[j].old = excs[i].old
		}
		img := layout{chunkSectors: 1, excs: excs}.build()
		want, wantOff, wantErr := reference(img, int64(originChunks)*512)
		for _, mem := range []int{0, 1, 7, 1 + r.IntN(n)} {
			opts := Options{Name: "cow", Size: int64(len(img)), OriginSize: int64(originChunks) * 512, MemoryChunks: mem, TempDir: t.TempDir()}
			runs, st, err := readAll(bytes.NewReader(img), opts)
			if wantErr != nil {
				var ce *Error
				if !errors.As(err, &ce) || ce.Err != wantErr || ce.Offset != wantOff {
					t.Fatalf("round %d, memory %d: %v, want %v at byte %d", round, mem, err, wantErr, wantOff)
				}
				continue
			}
			if err != nil {
				t.Fatalf("round %d, memory %d: %v", round, mem, err)
			}
			if got := expand(runs); !slices.Equal(got, want) {
				t.Fatalf("round %d, memory %d: %d chunks, want %d", round, mem, len(got), len(want))
			}
			if wantSpill := int64(0); mem > 0 && n > mem {
				wantSpill = int64((n + mem - 1) / mem)
				if st.Spilled != wantSpill {
					t.Errorf("round %d, memory %d: %d runs spilled, want %d", round, mem, st.Spilled, wantSpill)
				}
			}
			for i := 1; i < len(runs); i++ {
				if runs[i].First <= runs[i-1].First+runs[i-1].Count {
					t.Fatalf("runs %v and %v not merged or out of order", runs[i-1], runs[i])
				}
			}
		}
	}
}

func TestErrorText(t *testing.T) {
	e := &Error{Name: "/dev/mapper/vg-s-cow", Offset: 4104, Err: ErrCorrupt, Detail: "x"}
	if !strings.Contains(e.Error(), "/dev/mapper/vg-s-cow, byte 4104: x") || !errors.Is(e, ErrCorrupt) {
		t.Error(e)
	}
}
