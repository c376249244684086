package cow

import (
	"bufio"
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// DefaultMemoryChunks is how many origin chunk numbers Read keeps in memory
// (8 bytes each: 16 MiB) before it spills a sorted run to a temporary file.
// A store of 1 M exceptions (4 GiB of changes in 4 KiB chunks) stays in
// memory; larger ones are merged from runs of this size, with a 64 KiB
// buffer per run.
const DefaultMemoryChunks = 2 << 20

// runBuffer is the read buffer of one spilled run while runs are merged.
const runBuffer = 64 << 10

// chunkSet collects origin chunk numbers in any order and gives them back
// in ascending order (repeats included), in memory bounded by limit
// numbers plus a read buffer per spilled run.
type chunkSet struct {
	mem   []uint64
	limit int
	dir   string
	f     *os.File // unlinked file of spilled runs
	w     *bufio.Writer
	runs  []spillRun
	pos   int64
	buf   [8]byte
}

type spillRun struct{ off, n int64 }

func newChunkSet(limit int, dir string) *chunkSet {
	if limit <= 0 {
		limit = DefaultMemoryChunks
	}
	return &chunkSet{limit: limit, dir: dir}
}

func (s *chunkSet) add(c uint64) error {
	if len(s.mem) == s.limit {
		if err := s.spill(); err != nil {
			return err
		}
	}
	if len(s.mem) == cap(s.mem) {
		// Double (append grows large slices by a quarter, which
		// copies five times as much on the way to 16 MiB).
		grown := make([]uint64, len(s.mem), min(s.limit, max(1024, 2*cap(s.mem))))
		copy(grown, s.mem)
		s.mem = grown
	}
	s.mem = append(s.mem, c)
	return nil
}

// spill writes the numbers in memory as one sorted run.
func (s *chunkSet) spill() error {
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "thinback-cow-*")
		if err != nil {
			return fmt.Errorf("spilling exceptions: %w", err)
		}
		// Unlinked at once: nothing is left behind, whatever kills us.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return fmt.Errorf("spilling exceptions: %w", err)
		}
		s.f, s.w = f, bufio.NewWriterSize(f, runBuffer)
	}
	slices.Sort(s.mem)
	for _, c := range s.mem {
		binary.LittleEndian.PutUint64(s.buf[:], c)
		if _, err := s.w.Write(s.buf[:]); err != nil {
			return fmt.Errorf("spilling exceptions: %w", err)
		}
	}
	s.runs = append(s.runs, spillRun{off: s.pos, n: int64(len(s.mem))})
	s.pos += 8 * int64(len(s.mem))
	s.mem = s.mem[:0]
	return nil
}

// spilled returns how many sorted runs went to the temporary file.
func (s *chunkSet) spilled() int64 { return int64(len(s.runs)) }

// walk calls fn with every number, ascending. It is called once.
func (s *chunkSet) walk(fn func(uint64) error) error {
	if len(s.runs) == 0 {
		slices.Sort(s.mem)
		for _, c := range s.mem {
			if err := fn(c); err != nil {
				return err
			}
		}
		return nil
	}
	if len(s.mem) > 0 {
		if err := s.spill(); err != nil {
			return err
		}
	}
	s.mem = nil
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spilling exceptions: %w", err)
	}
	h := make(runHeap, 0, len(s.runs))
	for _, r := range s.runs {
		// A run smaller than the buffer gets a buffer of its size.
		bs := int(min(runBuffer, 8*r.n))
		rr := &runReader{r: bufio.NewReaderSize(io.NewSectionReader(s.f, r.off, 8*r.n), bs), left: r.n}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			h = append(h, rr)
		}
	}
	heap.Init(&h)
	for len(h) > 0 {
		rr := h[0]
		if err := fn(rr.cur); err != nil {
			return err
		}
		ok, err := rr.next()
		if err != nil {
			return err
		}
		if ok {
			heap.Fix(&h, 0)
		} else {
			heap.Pop(&h)
		}
	}
	return nil
}

func (s *chunkSet) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
	s.mem = nil
}

// runReader reads one spilled run.
type runReader struct {
	r    *bufio.Reader
	left int64
	cur  uint64
	buf  [8]byte
}

func (rr *runReader) next() (bool, error) {
	if rr.left == 0 {
		return false, nil
	}
	if _, err := io.ReadFull(rr.r, rr.buf[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return false, fmt.Errorf("reading spilled exceptions: %w", err)
	}
	rr.left--
	rr.cur = binary.LittleEndian.Uint64(rr.buf[:])
	return true, nil
}

type runHeap []*runReader

func (h runHeap) Len() int           { return len(h) }
func (h runHeap) Less(i, j int) bool { return h[i].cur < h[j].cur }
func (h runHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *runHeap) Push(x any)        { *h = append(*h, x.(*runReader)) }
func (h *runHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
