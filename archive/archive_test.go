package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRoundTripFull(t *testing.T) {
	r := testRand(t)
	for _, tc := range []struct {
		name   string
		blocks int
		tail   int
		chunk  int
	}{
		{"aligned", 300, 0, 0},
		{"short last block", 300, 1000, 0},
		{"small chunks", 97, 17, 8192},
		{"one block", 1, 0, 0},
		{"only a short block", 0, 123, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vol := volume(r, tc.blocks, tc.tail)
			file := build(t, testHeader(int64(len(vol))), fullSource(vol), SendOptions{ChunkSize: tc.chunk})
			got, err := applyTo(file, bytes.Repeat([]byte{0xAA}, len(vol)))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, vol) {
				t.Fatal("applied full differs from the volume")
			}
		})
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	h := testHeader(1 << 30)
	h.Parent = Snapshot{ID: DeriveID("test", "snap0"), Name: "vg0/vm1.snap0", Time: time.Date(2026, 11, 20, 3, 0, 0, 5, time.UTC)}
	h.ParentSize = 1 << 29
	h.Optional = FeatureSnapback
	h.SetAttr("lvm.thin_id", "8")
	h.SetAttr("lvm.pool", "pool0")
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&Record{Kind: KindZero, Offset: 1 << 29, Length: 1 << 29}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	rd := NewReader(&buf)
	got, err := rd.Header()
	if err != nil {
		t.Fatal(err)
	}
	want := *h
	want.Version = Version
	if !reflect.DeepEqual(got, &want) {
		t.Fatalf("header round trip:\n got %+v\nwant %+v", got, &want)
	}
	if got.IsFull() || !got.IsSnapback() || got.Attr("lvm.thin_id") != "8" {
		t.Fatalf("accessors: full %v snapback %v thin %q", got.IsFull(), got.IsSnapback(), got.Attr("lvm.thin_id"))
	}
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if tr := rd.Trailer(); tr.Records != 1 || tr.ZeroBytes != 1<<29 || tr.Digest != w.Trailer().Digest {
		t.Fatalf("trailer %+v, writer's %+v", tr, w.Trailer())
	}
}

func TestIncrementalAndCoverage(t *testing.T) {
	r := testRand(t)
	base := volume(r, 64, 0)
	next := append([]byte(nil), base...)
	r.Read(next[4096*3 : 4096*5])
	clear(next[4096*10 : 4096*12])
	h := testHeader(int64(len(next)))
	h.Parent = Snapshot{ID: DeriveID("test", "snap0"), Name: "snap0"}
	h.ParentSize = int64(len(base))
	src := &memSource{data: next, extents: []Extent{
		{4096 * 3, 4096 * 2, KindData},
		{4096 * 10, 4096 * 2, KindZero},
	}}
	file := build(t, h, src, SendOptions{})
	got, err := applyTo(file, append([]byte(nil), base...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, next) {
		t.Fatal("incremental applied to base differs from next")
	}

	// A volume that grew must have its new part covered.
	h.VolumeSize = int64(len(next)) + 8192
	h.ParentSize = int64(len(next))
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&Record{Kind: KindZero, Offset: 0, Length: 4096}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, ErrWriteOrder) {
		t.Fatalf("Close of a grown incremental without its tail: %v, want ErrWriteOrder", err)
	}
	// So must all of a full.
	w = NewWriter(io.Discard)
	if err := w.WriteHeader(testHeader(8192)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&Record{Kind: KindZero, Offset: 4096, Length: 4096}); !errors.Is(err, ErrWriteOrder) {
		t.Fatalf("full with a gap: %v, want ErrWriteOrder", err)
	}
}

func TestWriterRefusesBadRecords(t *testing.T) {
	digest := []Digest{{1}}
	for _, tc := range []struct {
		name string
		recs []Record
	}{
		{"unaligned", []Record{{Kind: KindZero, Offset: 0, Length: 4096}, {Kind: KindZero, Offset: 4097, Length: 4096}}},
		{"overlap", []Record{{Kind: KindData, Offset: 0, Length: 8192, Digests: []Digest{{1}, {2}}, Payload: make([]byte, 8192)}, {Kind: KindData, Offset: 4096, Length: 4096, Digests: digest, Payload: make([]byte, 4096)}}},
		{"past the end", []Record{{Kind: KindZero, Offset: 0, Length: 32 << 20}}},
		{"digest count", []Record{{Kind: KindData, Offset: 0, Length: 8192, Digests: digest, Payload: make([]byte, 8192)}}},
		{"compressed does not shrink", []Record{{Kind: KindData, Offset: 0, Length: 4096, Digests: digest, Compressed: true, Payload: make([]byte, 4096)}}},
		{"too long", []Record{{Kind: KindData, Offset: 0, Length: MaxDataLen + 4096, Digests: make([]Digest, MaxDataLen/4096+1), Payload: make([]byte, MaxDataLen+4096)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHeader(16 << 20)
			h.Parent.ID = DeriveID("test", "parent")
			h.ParentSize = h.VolumeSize
			w := NewWriter(io.Discard)
			if err := w.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			var err error
			for i := range tc.recs {
				if err = w.WriteRecord(&tc.recs[i]); err != nil {
					break
				}
			}
			if err == nil {
				err = w.Close()
			}
			if !errors.Is(err, ErrWriteOrder) {
				t.Fatalf("got %v, want ErrWriteOrder", err)
			}
			if err2 := w.Close(); err2 != err {
				t.Fatalf("error is not sticky: %v then %v", err, err2)
			}
		})
	}
}

func TestWriterRefusesBadHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(h *Header)
	}{
		{"block size", func(h *Header) { h.BlockSize = 1000 }},
		{"block size too large", func(h *Header) { h.BlockSize = 8 << 20 }},
		{"codec", func(h *Header) { h.Codec = 9 }},
		{"zero id", func(h *Header) { h.Snapshot.ID = ID{} }},
		{"own parent", func(h *Header) { h.Parent.ID = h.Snapshot.ID }},
		{"full with parent size", func(h *Header) { h.ParentSize = 5 }},
		{"long name", func(h *Header) { h.VolumeName = string(make([]byte, 5000)) }},
		{"bad utf8", func(h *Header) { h.Tool = "\xff" }},
		{"duplicate attr", func(h *Header) { h.Attrs = []Attr{{"a", "1"}, {"a", "2"}} }},
		{"required feature", func(h *Header) { h.Required = 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := testHeader(1 << 20)
			tc.mod(h)
			if err := NewWriter(io.Discard).WriteHeader(h); err == nil {
				t.Fatal("WriteHeader accepted an invalid header")
			}
		})
	}
}

func TestZeroBlocksNeverData(t *testing.T) {
	vol := make([]byte, 1<<20)
	copy(vol[4096*7:], "hello")
	file := build(t, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})
	rd := NewReader(bytes.NewReader(file))
	var kinds []Extent
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, Extent{rec.Offset, rec.Length, rec.Kind})
	}
	want := []Extent{{0, 4096 * 7, KindZero}, {4096 * 7, 4096, KindData}, {4096 * 8, 1<<20 - 4096*8, KindZero}}
	if !reflect.DeepEqual(kinds, want) {
		t.Fatalf("records %v, want %v", kinds, want)
	}
}

func TestAligner(t *testing.T) {
	const bs, size = 100, 1050
	for _, tc := range []struct {
		name string
		in   []Extent
		want []Extent
	}{
		{"aligned", []Extent{{0, 200, KindData}, {200, 300, KindZero}}, []Extent{{0, 200, KindData}, {200, 300, KindZero}}},
		{"data widened", []Extent{{150, 10, KindData}}, []Extent{{100, 100, KindData}}},
		{"zero edges become data", []Extent{{150, 300, KindZero}}, []Extent{{100, 100, KindData}, {200, 200, KindZero}, {400, 100, KindData}}},
		{"zero inside one block", []Extent{{110, 20, KindZero}}, []Extent{{100, 100, KindData}}},
		{"zero across two partial blocks", []Extent{{150, 100, KindZero}}, []Extent{{100, 200, KindData}}},
		{"adjacent zeros make a block", []Extent{{0, 50, KindZero}, {50, 150, KindZero}}, []Extent{{0, 200, KindZero}}},
		{"data then zero in one block", []Extent{{0, 150, KindData}, {150, 250, KindZero}}, []Extent{{0, 200, KindData}, {200, 200, KindZero}}},
		{"zero then data in one block", []Extent{{0, 150, KindZero}, {150, 10, KindData}}, []Extent{{0, 100, KindZero}, {100, 100, KindData}}},
		{"short last block zero", []Extent{{1000, 50, KindZero}}, []Extent{{1000, 50, KindZero}}},
		{"short last block data", []Extent{{1020, 30, KindData}}, []Extent{{1000, 50, KindData}}},
		{"merge data", []Extent{{0, 10, KindData}, {20, 10, KindData}, {150, 10, KindData}}, []Extent{{0, 200, KindData}}},
		{"gap kept", []Extent{{0, 10, KindData}, {500, 10, KindData}}, []Extent{{0, 100, KindData}, {500, 100, KindData}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &aligner{src: &memSource{extents: tc.in}, bs: bs, size: size}
			var got []Extent
			for {
				e, err := a.next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, e)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	for _, bad := range [][]Extent{
		{{100, 10, KindData}, {50, 10, KindData}},
		{{1000, 100, KindData}},
		{{0, 0, KindData}},
		{{0, 10, Kind(9)}},
	} {
		a := &aligner{src: &memSource{extents: bad}, bs: bs, size: size}
		var err error
		for err == nil {
			_, err = a.next()
		}
		if err == io.EOF {
			t.Errorf("aligner accepted %v", bad)
		}
	}
}

// TestAlignerRandom checks, on random unaligned extents, the property that
// matters: applying the aligned file gives the new volume exactly.
func TestAlignerRandom(t *testing.T) {
	r := testRand(t)
	for iter := 0; iter < 200; iter++ {
		size := int64(4096*(1+r.Intn(40)) + r.Intn(4096))
		base := make([]byte, size)
		r.Read(base)
		next := append([]byte(nil), base...)
		var ext []Extent
		for off := int64(r.Intn(3000)); off < size; {
			n := min(int64(1+r.Intn(20000)), size-off)
			k := KindData
			if r.Intn(2) == 0 {
				k = KindZero
				clear(next[off : off+n])
			} else {
				r.Read(next[off : off+n])
			}
			ext = append(ext, Extent{off, n, k})
			off += n + int64(r.Intn(3))*int64(r.Intn(9000))
		}
		h := testHeader(size)
		h.Parent = Snapshot{ID: DeriveID("test", "base")}
		h.ParentSize = size
		file := build(t, h, &memSource{data: next, extents: ext}, SendOptions{ChunkSize: 4096 * (1 + r.Intn(4))})
		got, err := applyTo(file, append([]byte(nil), base...))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, next) {
			t.Fatalf("iteration %d: applied file differs (extents %v)", iter, ext)
		}
	}
}

func TestSendSourceErrors(t *testing.T) {
	vol := make([]byte, 1<<20)
	vol[5] = 1
	src := fullSource(vol[:1<<19]) // the source is shorter than the volume
	src.extents[0].Length = 1 << 20
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(testHeader(1 << 20)); err != nil {
		t.Fatal(err)
	}
	err := Send(context.Background(), w, src, SendOptions{ChunkSize: 64 << 10})
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short source: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w = NewWriter(io.Discard)
	if err := w.WriteHeader(testHeader(1 << 20)); err != nil {
		t.Fatal(err)
	}
	if err := Send(ctx, w, fullSource(vol), SendOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled send: %v", err)
	}
}

// badSource is a source whose device fails every read that touches the
// 4 KiB block at bad, as a disk with a bad sector fails a whole request.
type badSource struct {
	*memSource
	bad int64
}

func (s badSource) ReadAt(p []byte, off int64) (int, error) {
	if off < s.bad+ReadErrorBlock && s.bad < off+int64(len(p)) {
		return 0, &os.PathError{Op: "read", Path: "/dev/sdz", Err: syscall.EIO}
	}
	return s.memSource.ReadAt(p, off)
}

// TestSendReadError checks that a source failing a whole chunk for one bad
// block is reported at that block's offset, with the source's own error.
func TestSendReadError(t *testing.T) {
	vol := make([]byte, 4<<20)
	for i := range vol {
		vol[i] = byte(i%251) | 1
	}
	const bad = 3<<20 + 12<<10 // inside the fourth 1 MiB chunk
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(testHeader(int64(len(vol)))); err != nil {
		t.Fatal(err)
	}
	err := Send(context.Background(), w, badSource{fullSource(vol), bad}, SendOptions{})
	var re *ReadError
	if !errors.As(err, &re) || re.Offset != bad || !errors.Is(err, syscall.EIO) {
		t.Fatalf("Send over a bad block at %d: %v", bad, err)
	}
	if !strings.Contains(err.Error(), "/dev/sdz") || !strings.Contains(err.Error(), fmt.Sprint(bad)) {
		t.Fatalf("the error names neither the device nor the offset: %v", err)
	}
}

// badFile is a file on a disk that fails every read touching the 4 KiB
// block at bad, with the error os.File gives.
type badFile struct {
	data []byte
	bad  int64
}

func (f badFile) ReadAt(p []byte, off int64) (int, error) {
	if off < f.bad+ReadErrorBlock && f.bad < off+int64(len(p)) {
		return 0, &os.PathError{Op: "read", Path: "store/x.tbk", Err: syscall.EIO}
	}
	return copy(p, f.data[off:]), nil
}

// TestReadPayloadAtReadError checks that a payload read failing for one
// bad block is reported at that block's offset in the file.
func TestReadPayloadAtReadError(t *testing.T) {
	data := make([]byte, 64<<10)
	rec := &Record{Num: 3, PayloadPos: 1000, PayloadLen: 40000}
	const bad = 24576
	_, err := ReadPayloadAt(badFile{data, bad}, rec, nil)
	var re *ReadError
	if !errors.As(err, &re) || re.Offset != bad || !errors.Is(err, syscall.EIO) ||
		!strings.Contains(err.Error(), "record 3") || !strings.Contains(err.Error(), "store/x.tbk") {
		t.Fatalf("payload read over a bad block at %d: %v", bad, err)
	}
	// A bad block in the payload's first, partial block.
	if _, err := ReadPayloadAt(badFile{data, 0}, rec, nil); !errors.As(err, &re) || re.Offset != 1000 {
		t.Fatalf("payload read over a bad block at 0: %v", err)
	}
}

// badSeeker is a delta file on a disk with a bad 4 KiB block at bad, read
// as a Reader reads files: sequentially, with seeks and positioned reads.
type badSeeker struct {
	*bytes.Reader
	bad int64
}

func (f badSeeker) touches(off, n int64) bool { return off < f.bad+ReadErrorBlock && f.bad < off+n }

func (f badSeeker) Read(p []byte) (int, error) {
	cur, _ := f.Seek(0, io.SeekCurrent)
	if f.touches(cur, int64(len(p))) {
		return 0, &os.PathError{Op: "read", Path: "store/x.tbk", Err: syscall.EIO}
	}
	return f.Reader.Read(p)
}

func (f badSeeker) ReadAt(p []byte, off int64) (int, error) {
	if f.touches(off, int64(len(p))) {
		return 0, &os.PathError{Op: "read", Path: "store/x.tbk", Err: syscall.EIO}
	}
	return f.Reader.ReadAt(p, off)
}

// TestReaderReadError checks that a Reader reading through a bad block of
// a file, in a payload or in a record header, reports the block's offset.
func TestReaderReadError(t *testing.T) {
	vol := make([]byte, 4<<20)
	testRand(t).Read(vol) // incompressible: payloads of 1 MiB
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(testHeader(int64(len(vol)))); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, fullSource(vol), SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// Where the second record starts, and a block inside its payload.
	rd := NewReader(bytes.NewReader(buf.Bytes()))
	var second *Record
	for i := 0; i < 2; i++ {
		rec, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		second = rec
	}
	inPayload := (second.PayloadPos + second.PayloadLen/2) &^ (ReadErrorBlock - 1)
	for _, tc := range []struct {
		name      string
		bad, want int64
		what      string
		payloads  bool // read the payloads, else skip them (seek)
	}{
		{"payload", inPayload, inPayload, "the payload of record 2", true},
		{"header", second.PayloadPos - 1, (second.PayloadPos - 1) &^ (ReadErrorBlock - 1), "record 2", false},
	} {
		rd := NewReader(badSeeker{bytes.NewReader(buf.Bytes()), tc.bad &^ (ReadErrorBlock - 1)})
		var err error
		for err == nil {
			if _, err = rd.Next(); err == nil && tc.payloads {
				_, err = rd.ReadPayload(nil)
			}
		}
		var re *ReadError
		if !errors.As(err, &re) || re.What != tc.what || !errors.Is(err, syscall.EIO) {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if re.Offset < tc.want || re.Offset > tc.bad {
			t.Fatalf("%s: reported at byte %d, the bad block is at %d: %v", tc.name, re.Offset, tc.want, err)
		}
	}
}

func TestIDs(t *testing.T) {
	a, b := DeriveID("lvm", "x"), DeriveID("lvm", "x")
	if a != b || a == DeriveID("lvm", "y") || a == DeriveID("file", "x") {
		t.Fatal("DeriveID is not a function of namespace and key")
	}
	if a[6]>>4 != 8 || NewID()[6]>>4 != 4 {
		t.Fatal("UUID version bits")
	}
	p, err := ParseID(a.String())
	if err != nil || p != a {
		t.Fatalf("ParseID(%s) = %v, %v", a, p, err)
	}
	if _, err := ParseID("nope"); err == nil {
		t.Fatal("ParseID accepted garbage")
	}
}

// TestCheckpoint checks that a file cut right after any checkpoint is a
// complete, valid delta file, and that writing on overwrites the END.
func TestCheckpoint(t *testing.T) {
	r := testRand(t)
	vol := volume(r, 40, 0)
	h := testHeader(int64(len(vol)))
	h.Parent.ID = DeriveID("test", "parent")
	h.ParentSize = h.VolumeSize
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	enc := NewEncoder(LevelFastest)
	defer enc.Close()
	for off := 0; off < len(vol); off += 8 * 4096 {
		recs, _ := enc.Encode(nil, int64(off), vol[off:off+8*4096], 4096, nil)
		for i := range recs {
			if err := w.WriteRecord(&recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		end, err := w.Checkpoint()
		if err != nil {
			t.Fatal(err)
		}
		snapshot := append(append([]byte(nil), buf.Bytes()...), end...)
		want := make([]byte, len(vol))
		copy(want, vol[:off+8*4096])
		got, err := applyTo(snapshot, make([]byte, len(vol)))
		if err != nil {
			t.Fatalf("file at checkpoint %d: %v", off, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("file at checkpoint %d applies wrongly", off)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got, err := applyTo(buf.Bytes(), nil); err != nil || !bytes.Equal(got, vol) {
		t.Fatalf("closed file: %v", err)
	}
}

// TestCheckpointErrorSticky: a Checkpoint refused (a full whose records do
// not cover its volume yet cannot be complete) fails the Writer, as every
// Writer error does: later calls return the same error.
func TestCheckpointErrorSticky(t *testing.T) {
	h := testHeader(16 * 4096)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRecord(&Record{Kind: KindZero, Offset: 0, Length: 4096}); err != nil {
		t.Fatal(err)
	}
	_, err := w.Checkpoint()
	if !errors.Is(err, ErrWriteOrder) {
		t.Fatalf("Checkpoint of an incomplete full: %v", err)
	}
	if _, again := w.Checkpoint(); again != err {
		t.Fatalf("Checkpoint again: %v, want %v", again, err)
	}
	if again := w.WriteRecord(&Record{Kind: KindZero, Offset: 4096, Length: 15 * 4096}); again != err {
		t.Fatalf("WriteRecord after a failed Checkpoint: %v, want %v", again, err)
	}
	if again := w.Close(); again != err {
		t.Fatalf("Close after a failed Checkpoint: %v, want %v", again, err)
	}
}

// TestAlignerMaxData: a bounded aligner returns long DATA runs in pieces of
// maxData bytes, and otherwise the same extents as an unbounded one, so
// that Send makes the same jobs and records either way.
func TestAlignerMaxData(t *testing.T) {
	r := testRand(t)
	const bs = 4096
	collect := func(a *aligner) []Extent {
		var out []Extent
		for {
			e, err := a.next()
			if err == io.EOF {
				return out
			}
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	for iter := 0; iter < 200; iter++ {
		size := int64(bs*(1+r.Intn(400)) + r.Intn(bs))
		var ext []Extent
		for off := int64(r.Intn(3000)); off < size; {
			n := min(int64(1+r.Intn(50000)), size-off)
			k := KindData
			if r.Intn(3) == 0 {
				k = KindZero
			}
			ext = append(ext, Extent{off, n, k})
			off += n + int64(r.Intn(2))*int64(r.Intn(20000))
		}
		maxData := int64(bs * (1 + r.Intn(8)))
		want := collect(&aligner{src: &memSource{extents: ext}, bs: bs, size: size})
		got := collect(&aligner{src: &memSource{extents: ext}, bs: bs, size: size, maxData: maxData})
		var joined []Extent
		for _, e := range got {
			if e.Kind == KindData && e.Length > maxData {
				t.Fatalf("DATA extent of %d bytes, bound %d", e.Length, maxData)
			}
			if n := len(joined); n > 0 && e.Kind == KindData && joined[n-1].Kind == KindData && joined[n-1].End() == e.Offset {
				if joined[n-1].Length%maxData != 0 {
					t.Fatalf("a DATA run was cut after %d bytes, not a multiple of %d", joined[n-1].Length, maxData)
				}
				joined[n-1].Length += e.Length
				continue
			}
			joined = append(joined, e)
		}
		if !reflect.DeepEqual(joined, want) {
			t.Fatalf("iteration %d: bounded aligner gave %v, unbounded %v", iter, got, want)
		}
	}
}

// aheadSource is a volume of adjacent small DATA extents that notes how far
// its extents had been read when its data was first read.
type aheadSource struct {
	memSource
	mu           sync.Mutex
	listed       int64
	listedAtRead int64
}

func (s *aheadSource) Next() (Extent, error) {
	e, err := s.memSource.Next()
	if err == nil {
		s.mu.Lock()
		s.listed = e.End()
		s.mu.Unlock()
	}
	return e, err
}

func (s *aheadSource) ReadAt(p []byte, off int64) (int, error) {
	s.mu.Lock()
	if s.listedAtRead == 0 {
		s.listedAtRead = s.listed
	}
	s.mu.Unlock()
	return s.memSource.ReadAt(p, off)
}

// TestSendStartsBeforeSourceEnds: Send reads the data of a long run of
// DATA extents while the source is still listing it, so a source that reads
// the volume to find its changes (DigestSource) is followed closely.
func TestSendStartsBeforeSourceEnds(t *testing.T) {
	const size = 256 << 20
	src := &aheadSource{memSource: memSource{data: make([]byte, size)}}
	for off := int64(0); off < size; off += 1 << 20 {
		src.extents = append(src.extents, Extent{off, 1 << 20, KindData})
	}
	h := testHeader(size)
	h.BlockSize = DefaultBlockSize
	w := NewWriter(io.Discard)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, src, SendOptions{Workers: 2}); err != nil {
		t.Fatal(err)
	}
	if src.listedAtRead >= size {
		t.Fatalf("Send read nothing before the source listed all %d bytes", size)
	}
	t.Logf("first read after %d bytes were listed", src.listedAtRead)
}
