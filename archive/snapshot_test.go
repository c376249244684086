package archive

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// readCheck reads [off, off+n) of s and compares it with the state: the
// bytes up to the end of the volume, io.EOF when the range goes past it.
func readCheck(t *testing.T, where string, s *SnapshotReader, state []byte, off, n int64) {
	t.Helper()
	p := make([]byte, n)
	for i := range p {
		p[i] = 0xA5 // a read must overwrite everything it returns
	}
	got, err := s.ReadAt(p, off)
	size := int64(len(state))
	want := max(0, min(n, size-off))
	switch {
	case off+n > size && err != io.EOF:
		t.Fatalf("%s: ReadAt(%d, %d) past the end %d: err %v, want io.EOF", where, n, off, size, err)
	case off+n <= size && err != nil:
		t.Fatalf("%s: ReadAt(%d, %d): %v", where, n, off, err)
	case int64(got) != want:
		t.Fatalf("%s: ReadAt(%d, %d) read %d bytes, want %d", where, n, off, got, want)
	}
	if want > 0 && !bytes.Equal(p[:got], state[off:off+want]) {
		for i := range p[:got] {
			if p[i] != state[off+int64(i)] {
				t.Fatalf("%s: ReadAt(%d, %d) differs at volume byte %d", where, n, off, off+int64(i))
			}
		}
	}
}

// TestSnapshotReaderRandom: every snapshot of random chains (writes,
// zeroed runs, unaligned growth and shrinking, records of random
// lengths) reads back as the volume held it: whole, at random offsets and
// lengths, across every boundary of its index (record, file and ZERO
// boundaries), and past its end; from several goroutines at once.
func TestSnapshotReaderRandom(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 25; round++ {
		bs := []int64{4096, 8192, 16384}[r.Intn(3)]
		c := randomChain(t, r, 1+r.Intn(5), bs)
		inputs := c.open(t, 0, len(c.files))
		for k := 1; k <= len(c.files); k++ {
			where := fmt.Sprintf("round %d: snapshot %d of %d, block size %d", round, k, len(c.files), bs)
			for _, in := range inputs[:k] {
				if _, err := in.File.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
			}
			opts := SnapshotOptions{CacheSize: []int64{1, 64 << 10, 0}[r.Intn(3)], ReadAhead: []int64{-1, 0, 3 * bs}[r.Intn(3)]}
			s, err := OpenSnapshot(context.Background(), inputs[:k], opts)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			state := c.states[k-1]
			size := int64(len(state))
			if s.Size() != size || s.Header().Snapshot != c.hdrs[k-1].Snapshot {
				t.Fatalf("%s: size %d, header %+v", where, s.Size(), s.Header())
			}
			readCheck(t, where, s, state, 0, size)
			readCheck(t, where, s, state, 0, size+1+r.Int63n(3*bs))
			readCheck(t, where, s, state, size, 10)
			readCheck(t, where, s, state, size+r.Int63n(bs), 1+r.Int63n(bs))
			for i := 0; i < s.Segments(); i++ {
				b := s.segOff.at(i)
				for _, d := range []int64{-1, 0, 1} {
					if off := b + d; off >= 0 && off < size {
						readCheck(t, where, s, state, off, 1+r.Int63n(3*bs))
						readCheck(t, where, s, state, max(0, off-r.Int63n(2*bs)), 1+r.Int63n(4*bs))
					}
				}
			}
			var wg sync.WaitGroup
			for g := 0; g < 4; g++ {
				seed := r.Int63()
				wg.Add(1)
				go func() {
					defer wg.Done()
					rr := rand.New(rand.NewSource(seed))
					for i := 0; i < 60; i++ {
						off := rr.Int63n(size + bs)
						n := 1 + rr.Int63n(5*bs)
						p := make([]byte, n)
						got, err := s.ReadAt(p, off)
						want := max(0, min(n, size-off))
						if int64(got) != want || (off+n > size) != (err == io.EOF) || (err != nil && err != io.EOF) {
							t.Errorf("%s: ReadAt(%d, %d) = %d, %v", where, n, off, got, err)
							return
						}
						if want > 0 && !bytes.Equal(p[:got], state[off:off+want]) {
							t.Errorf("%s: ReadAt(%d, %d) returned other bytes", where, n, off)
							return
						}
					}
				}()
			}
			wg.Wait()
			if t.Failed() {
				t.FailNow()
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ReadAt(make([]byte, 1), 0); err == nil {
				t.Fatalf("%s: a read after Close succeeded", where)
			}
		}
	}
}

// TestSnapshotReaderSeek: SeekData skips only zeroes and lands on a block
// that holds data; SeekHole lands on an all-zero block or the end; both
// refuse offsets past the end.
func TestSnapshotReaderSeek(t *testing.T) {
	r := testRand(t)
	zero := func(b []byte) bool { return !bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) }
	for round := 0; round < 20; round++ {
		c := randomChain(t, r, 1+r.Intn(4), 4096)
		s, err := OpenSnapshot(context.Background(), c.open(t, 0, len(c.files)), SnapshotOptions{})
		if err != nil {
			t.Fatal(err)
		}
		state := c.states[len(c.states)-1]
		size := int64(len(state))
		block := func(o int64) []byte { return state[o/4096*4096 : min(o/4096*4096+4096, size)] }
		for k := 0; k < 200; k++ {
			off := r.Int63n(size)
			if d, ok := s.SeekData(off); ok {
				// (The last block, when the volume shrank into it, may be
				// the rest of a DATA block that happens to be zeroes.)
				last := d/4096*4096+4096 >= size
				if d < off || d >= size || !zero(state[off:d]) || (zero(block(d)) && !last) {
					t.Fatalf("round %d: SeekData(%d) = %d", round, off, d)
				}
			} else if !zero(state[off:]) {
				t.Fatalf("round %d: SeekData(%d) found no data, but there is", round, off)
			}
			h, ok := s.SeekHole(off)
			if !ok || h < off || h > size || (h < size && !zero(block(h))) {
				t.Fatalf("round %d: SeekHole(%d) = %d, %v", round, off, h, ok)
			}
		}
		if _, ok := s.SeekData(size); ok {
			t.Fatal("SeekData past the end")
		}
		if _, ok := s.SeekHole(size); ok {
			t.Fatal("SeekHole past the end")
		}
		s.Close()
	}
}

// TestSnapshotReaderScan: a chain's Scan gives the snapshot, in order,
// segment by segment, without gaps.
func TestSnapshotReaderScan(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 20; round++ {
		c := randomChain(t, r, 1+r.Intn(5), 4096)
		ch, err := OpenChain(c.open(t, 0, len(c.files)))
		if err != nil {
			t.Fatal(err)
		}
		var got []byte
		err = ch.Scan(context.Background(), ScanOptions{Workers: 1 + r.Intn(4)}, func(seg Segment, data []byte) error {
			if seg.Offset != int64(len(got)) {
				return fmt.Errorf("segment at %d after %d bytes", seg.Offset, len(got))
			}
			if seg.Kind == KindZero {
				got = append(got, make([]byte, seg.Length)...)
				return nil
			}
			if int64(len(data)) != seg.Length {
				return fmt.Errorf("segment of %d bytes with %d bytes of data", seg.Length, len(data))
			}
			got = append(got, data...)
			return nil
		})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !bytes.Equal(got, c.states[len(c.states)-1]) {
			t.Fatalf("round %d: Scan does not give the last state", round)
		}
	}
}

// corruptChain is a chain whose last file has one DATA record that the
// snapshot reads, with a byte of its payload flipped on disk after the
// index was built (or before: the index does not read payloads).
type corruptChain struct {
	c      *testChain
	inputs []ChainInput
	rec    *Record // the damaged record (of the last file)
	path   string  // the last file
}

func newCorruptChain(t *testing.T, r *rand.Rand) *corruptChain {
	t.Helper()
	for {
		c := randomChain(t, r, 2+r.Intn(3), 4096)
		last := c.files[len(c.files)-1]
		rd := NewReader(bytes.NewReader(last))
		var data []*Record
		for {
			rec, err := rd.Next()
			if err != nil {
				break
			}
			if rec.Kind == KindData {
				data = append(data, rec)
			}
		}
		if len(data) == 0 {
			continue // the last file changed nothing but zeroes: try another
		}
		cc := &corruptChain{c: c, inputs: c.open(t, 0, len(c.files)), rec: data[r.Intn(len(data))]}
		cc.path = cc.inputs[len(cc.inputs)-1].Name
		return cc
	}
}

func (cc *corruptChain) flip(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile(cc.path)
	if err != nil {
		t.Fatal(err)
	}
	// A flipped bit of a zstd frame can leave what it decodes to as it
	// was (padding bits): flip the first byte, from the payload's middle
	// on, that does damage the record.
	payload := b[cc.rec.PayloadPos : cc.rec.PayloadPos+cc.rec.PayloadLen]
	dec := NewDecoder()
	defer dec.Close()
	for k := range payload {
		i := (len(payload)/2 + k) % len(payload)
		payload[i] ^= 0x40
		if _, err := dec.Decode(nil, cc.rec, payload); err != nil {
			f, err := os.OpenFile(cc.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.WriteAt(payload[i:i+1], cc.rec.PayloadPos+int64(i)); err != nil {
				t.Fatal(err)
			}
			return
		}
		payload[i] ^= 0x40
	}
	t.Fatalf("no flipped byte damages record %d", cc.rec.Num)
}

// TestSnapshotReaderCorrupt: a damaged record fails the reads of its range
// only, with ErrChecksum and an error naming the file and the record, and
// one log line; every byte outside its range still reads, and reads that
// end just before it or start just after it succeed.
func TestSnapshotReaderCorrupt(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 15; round++ {
		cc := newCorruptChain(t, r)
		var mu sync.Mutex
		var logs []string
		s, err := OpenSnapshot(context.Background(), cc.inputs, SnapshotOptions{Log: func(m string) {
			mu.Lock()
			defer mu.Unlock()
			logs = append(logs, m)
		}})
		if err != nil {
			t.Fatal(err)
		}
		cc.flip(t) // after indexing: the index does not read payloads
		state := cc.c.states[len(cc.c.states)-1]
		lo, hi := cc.rec.Offset, cc.rec.End()
		where := fmt.Sprintf("round %d: record %d [%d, %d) of %s", round, cc.rec.Num, lo, hi, filepath.Base(cc.path))
		// Which bytes of the snapshot does the damaged record define?
		bad := make([]bool, len(state))
		for i := 0; i < s.Segments(); i++ {
			if ref := s.segRec.at(i); ref >= 0 && s.recs.ptr(int(ref)).input == uint32(len(cc.inputs)-1) && s.recs.ptr(int(ref)).num == cc.rec.Num {
				for b := s.segOff.at(i); b < s.segEnd(i); b++ {
					bad[b] = true
				}
			}
		}
		firstBad := -1
		for b := range bad {
			if bad[b] {
				if firstBad < 0 {
					firstBad = b
				}
				p := make([]byte, 1)
				_, err := s.ReadAt(p, int64(b))
				if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), filepath.Base(cc.path)) || !strings.Contains(err.Error(), fmt.Sprintf("record %d ", cc.rec.Num)) {
					t.Fatalf("%s: reading byte %d: %v, want ErrChecksum naming the file and record", where, b, err)
				}
			} else {
				// Every other byte reads, alone and in the runs around it.
				readCheck(t, where, s, state, int64(b), 1)
			}
		}
		if firstBad < 0 {
			continue // the record is wholly superseded by... nothing newer: cannot be, but skip
		}
		// Ranges up to and from the bad range read; a range across it fails
		// with the bytes before it.
		readCheck(t, where, s, state, 0, int64(firstBad))
		p := make([]byte, len(state))
		n, err := s.ReadAt(p, 0)
		if !errors.Is(err, ErrChecksum) || n != firstBad || !bytes.Equal(p[:n], state[:n]) {
			t.Fatalf("%s: a whole read gave %d bytes, %v; want %d good bytes and ErrChecksum", where, n, err, firstBad)
		}
		mu.Lock()
		if len(logs) != 1 || !strings.Contains(logs[0], filepath.Base(cc.path)) || !strings.Contains(logs[0], fmt.Sprintf("record %d ", cc.rec.Num)) ||
			!strings.Contains(logs[0], fmt.Sprintf("[%d, %d)", lo, hi)) {
			t.Fatalf("%s: logged %q, want one line naming the file, the record and its range", where, logs)
		}
		mu.Unlock()
		s.Close()
	}
}

// TestSnapshotReaderFileChanges: what happens to an open reader when its
// files change under it. A removed name (a prune) changes nothing: the
// open file is read. A file that shrank fails the reads of the records it
// lost with ErrTruncated; metadata rewritten in place fails with an error
// that says the file changed, never with other data.
func TestSnapshotReaderFileChanges(t *testing.T) {
	r := testRand(t)
	cc := newCorruptChain(t, r)
	state := cc.c.states[len(cc.c.states)-1]
	open := func() *SnapshotReader {
		for _, in := range cc.inputs {
			if _, err := in.File.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
		}
		s, err := OpenSnapshot(context.Background(), cc.inputs, SnapshotOptions{CacheSize: 1, ReadAhead: -1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	s := open()
	for _, in := range cc.inputs {
		if err := os.Remove(in.Name); err != nil {
			t.Fatal(err)
		}
	}
	readCheck(t, "names removed", s, state, 0, int64(len(state)))
	s.Close()
	// Put the last file back under its name to change it in place.
	if err := os.WriteFile(cc.path, cc.c.files[len(cc.c.files)-1], 0o600); err != nil {
		t.Fatal(err)
	}
	last, err := os.OpenFile(cc.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer last.Close()
	cc.inputs[len(cc.inputs)-1].File = last

	s = open()
	// A digest of the damaged record rewritten: the file changed.
	off := cc.rec.Pos + rhdrLen + dataMetaFixed
	var b [1]byte
	if _, err := last.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := last.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadAt(make([]byte, cc.rec.Length), cc.rec.Offset)
	if !errors.Is(err, ErrChecksum) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("read after a digest was rewritten: %v, want ErrChecksum saying the file changed", err)
	}
	b[0] ^= 1
	if _, err := last.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	readCheck(t, "digest restored", s, state, 0, int64(len(state)))
	// The file shrinks to before the record's payload ends, under a
	// reader whose cache does not hold the record yet.
	s.Close()
	s = open()
	if err := last.Truncate(cc.rec.PayloadPos + cc.rec.PayloadLen - 1); err != nil {
		t.Fatal(err)
	}
	_, err = s.ReadAt(make([]byte, 1), cc.rec.Offset)
	if !errors.Is(err, ErrTruncated) && !errors.Is(err, ErrChecksum) {
		t.Fatalf("read after the file shrank: %v, want ErrTruncated (record %d [%d, %d), payload [%d, +%d), segments %d, cached %d)", err, cc.rec.Num, cc.rec.Offset, cc.rec.End(), cc.rec.PayloadPos, cc.rec.PayloadLen, s.Segments(), len(s.cache.m))
	}
	s.Close()
}

// TestOpenSnapshotRefuses: a chain that does not start with a full, or
// whose files do not form a chain, is refused when opened.
func TestOpenSnapshotRefuses(t *testing.T) {
	r := testRand(t)
	c := randomChain(t, r, 3, 4096)
	if _, err := OpenSnapshot(context.Background(), c.open(t, 1, 3), SnapshotOptions{}); !errors.Is(err, ErrNotChain) {
		t.Fatalf("a chain from an incremental: %v, want ErrNotChain", err)
	}
	in := c.open(t, 0, 3)
	in[1], in[2] = in[2], in[1]
	if _, err := OpenSnapshot(context.Background(), in, SnapshotOptions{}); !errors.Is(err, ErrNotChain) {
		t.Fatalf("files out of order: %v, want ErrNotChain", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := OpenSnapshot(ctx, c.open(t, 0, 3), SnapshotOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled: %v", err)
	}
}

// patternSource is a volume of n records of 4 KiB, each of compressible,
// distinct data: a file with many records and little payload.
type patternSource struct {
	size int64
	done bool
}

func (p *patternSource) Next() (Extent, error) {
	if p.done {
		return Extent{}, io.EOF
	}
	p.done = true
	return Extent{Offset: 0, Length: p.size, Kind: KindData}, nil
}

func (p *patternSource) ReadAt(b []byte, off int64) (int, error) {
	for i := 0; i < len(b); i += 4096 {
		blk := b[i:min(i+4096, len(b))]
		clear(blk)
		copy(blk, fmt.Sprintf("block at %d", off+int64(i)))
	}
	return len(b), nil
}

// manyRecords writes a full of n records of one 4 KiB block each.
func manyRecords(t testing.TB, n int) string {
	t.Helper()
	h := testHeader(int64(n) * 4096)
	name := filepath.Join(t.TempDir(), "many.tbk")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := NewWriter(f)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, &patternSource{size: h.VolumeSize}, SendOptions{ChunkSize: 4096}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestSnapshotIndexBytes: the index costs at most 72 bytes per record,
// whatever the volume's size: memory proportional to the records.
func TestSnapshotIndexBytes(t *testing.T) {
	const n = 20000
	name := manyRecords(t, n)
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := OpenSnapshot(context.Background(), []ChainInput{{Name: name, File: f}}, SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Records() != n {
		t.Fatalf("%d records indexed, want %d", s.Records(), n)
	}
	per := float64(s.IndexBytes()) / n
	t.Logf("index: %d bytes for %d records, %.1f bytes per record (a 1 TiB volume in 1 M records: %.0f MiB)", s.IndexBytes(), n, per, per*(1<<20)/(1<<20))
	if per > 72 {
		t.Fatalf("the index costs %.1f bytes per record, want at most 72", per)
	}
}

// BenchmarkOpenSnapshot indexes a file of many records and reports the
// heap the index keeps, per record (measured, not computed).
func BenchmarkOpenSnapshot(b *testing.B) {
	const n = 100000
	name := manyRecords(b, n)
	f, err := os.Open(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var heap float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s, err := OpenSnapshot(context.Background(), []ChainInput{{Name: name, File: f}}, SnapshotOptions{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		heap = float64(after.HeapAlloc-before.HeapAlloc) / n
		runtime.KeepAlive(s)
		s.Close()
	}
	b.ReportMetric(heap, "heap-B/record")
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkSnapshotRead reads a snapshot front to back in 128 KiB reads
// (as FUSE asks), cold, with and without read-ahead.
func BenchmarkSnapshotRead(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	data := volume(r, 16<<8, 0) // 16 MiB
	file := build(b, testHeader(int64(len(data))), fullSource(data), SendOptions{})
	for _, ahead := range []int64{-1, 0} {
		b.Run(fmt.Sprintf("readahead=%d", ahead), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			p := make([]byte, 128<<10)
			for i := 0; i < b.N; i++ {
				s, err := OpenSnapshot(context.Background(), []ChainInput{{Name: "f", File: bytes.NewReader(file)}}, SnapshotOptions{ReadAhead: ahead})
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < s.Size(); off += int64(len(p)) {
					if _, err := s.ReadAt(p, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
				s.Close()
			}
		})
	}
}
