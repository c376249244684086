package s3store

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

// TestReadAhead reads a file of several pieces as cat reads a delta file
// after ReadAhead: one goroutine front to back, reading a little and
// seeking forward over ranges (payloads), which other goroutines read at
// their offsets meanwhile, lagging behind; then reads far behind the
// chunks kept, and across the end. Every byte read is the file's (a
// chunk dropped while it is read, its buffer given to the next, would
// show here and under -race).
func TestReadAhead(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	st := h.open()
	r := newRand(t)
	want := randBytes(r, 2*testPiece+3*aheadChunk+12345)
	defer lock(t, st, "vol")()
	sn := write(t, st, "vol", "", want, 0)

	f, err := st.OpenDelta(sn.File)
	if err != nil {
		t.Fatal(err)
	}
	f.(interface{ ReadAhead() }).ReadAhead()
	type span struct{ off, n int64 }
	spans := make(chan span, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for s := range spans {
				p := make([]byte, s.n)
				n, err := f.ReadAt(p, s.off)
				if (err != nil && !(errors.Is(err, io.EOF) && s.off+int64(n) == int64(len(want)))) || !bytes.Equal(p[:n], want[s.off:s.off+int64(n)]) {
					mu.Lock()
					bad = append(bad, "ReadAt")
					mu.Unlock()
				}
			}
		}()
	}
	pos := int64(0)
	for pos < int64(len(want)) {
		hdr := make([]byte, 1+r.IntN(200))
		n, err := io.ReadFull(f, hdr)
		if err != nil && !(errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)) {
			t.Fatalf("Read at %d: %v", pos, err)
		}
		if !bytes.Equal(hdr[:n], want[pos:pos+int64(n)]) {
			t.Fatalf("Read at %d: other bytes than the file's", pos)
		}
		pos += int64(n)
		skip := min(int64(r.IntN(3<<20)), int64(len(want))-pos)
		if skip > 0 {
			spans <- span{pos, skip}
		}
		if pos, err = f.Seek(skip, io.SeekCurrent); err != nil {
			t.Fatal(err)
		}
	}
	close(spans)
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("%d reads at offsets gave other bytes or errors", len(bad))
	}
	// Far behind the chunks kept, and across the end.
	for _, s := range []span{{0, 100}, {aheadChunk - 10, 20}, {int64(len(want)) - 50, 100}} {
		p := make([]byte, s.n)
		n, err := f.ReadAt(p, s.off)
		end := min(s.off+s.n, int64(len(want)))
		if int64(n) != end-s.off || !bytes.Equal(p[:n], want[s.off:end]) || (end < s.off+s.n && !errors.Is(err, io.EOF)) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v, or other bytes", s.n, s.off, n, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
