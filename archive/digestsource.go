package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// DigestExtent says what a range of a volume held in some snapshot, block by
// block, without the data: the block digests of a DATA range (what DATA
// records carry), or that the range reads as zeroes. It is how a snapshot
// that is only available as delta files is compared with an image.
type DigestExtent struct {
	Offset int64
	Length int64
	Kind   Kind
	// Digests (KindData only) holds one digest per block of the range; the
	// last block is short when the range ends at an unaligned end of the
	// volume.
	Digests []Digest
}

// End returns the offset just past the extent.
func (e DigestExtent) End() int64 { return e.Offset + e.Length }

// A DigestIterator yields what a snapshot held, as DigestExtents in
// ascending, non-overlapping order, each starting on a block boundary, and
// io.EOF after the last. The slices it returns need only stay valid until
// the next call. Blocks no extent describes count as unknown.
type DigestIterator interface {
	Next() (DigestExtent, error)
}

// DigestSourceOptions tune a DigestSource. The zero value is good.
type DigestSourceOptions struct {
	// Workers hashing in parallel; 0 means one per CPU, at most
	// maxHashWorkers.
	Workers int
	// ChunkSize is the bytes of the image one worker reads and hashes at a
	// time; 0 means 1 MiB. It is rounded to the block size.
	ChunkSize int
	// Progress, if set, is called from Next with the bytes of the image
	// examined (read and hashed, or skipped as a hole) since the last call.
	Progress func(n int64)
}

// maxHashWorkers bounds the hashing workers and with them memory: BLAKE3
// hashes 64 KiB blocks at about 4 GB/s per core, so four cores outrun
// reading from the page cache and a few MiB of chunks keep them busy.
const maxHashWorkers = 4

// defaultHashChunk is the work of one hashing job: large enough that the
// cost of handing it to a worker is noise, small enough that the few jobs in
// flight take a few MiB.
const defaultHashChunk = 1 << 20

// DigestStats counts what a DigestSource did.
type DigestStats struct {
	Examined int64 // bytes of the image compared so far
	Read     int64 // bytes of them read: holes of a sparse file are not
	Differed int64 // bytes of them returned as extents
}

// DigestSource is a Source of the blocks of an image (a regular file or a
// block device) that differ from an earlier snapshot of it known only by its
// block digests (a DigestIterator, for example the merged records of the
// snapshot's delta files). It reads the image once, front to back, hashing
// each block with BLAKE3 on several cores, so it finds the changes of an
// image without the earlier image.
//
// A block is unchanged when the earlier snapshot held a block of the same
// length with the same digest, or held zeroes and the block is all zero.
// Every other block is returned: as KindZero when it is all zero (so the
// send pipeline need not read it again), else as KindData. Blocks past the
// end of the earlier snapshot are all returned, so an incremental made from
// a DigestSource covers the grown part of a volume as it must. The holes of
// a sparse regular file are found with SEEK_DATA/SEEK_HOLE and not read: a
// hole where the earlier snapshot held zeroes is unchanged, any other hole
// is a KindZero extent.
//
// Next must not be called concurrently with itself or Close; ReadAt may be
// called from any goroutine. Call Close when done with a DigestSource that
// did not return io.EOF or an error, so its goroutines stop.
type DigestSource struct {
	f        *os.File
	size, bs int64
	chunk    int64
	workers  int
	sparse   bool
	prev     DigestIterator
	progress func(int64)

	started  bool
	cancel   context.CancelFunc
	order    chan *hashJob
	free     chan *hashJob
	wg       sync.WaitGroup
	dispErr  error // set by the dispatcher before it closes order
	pending  []Extent
	stats    DigestStats
	err      error // sticky
	shutdown sync.Once
}

// NewDigestSource returns a Source of the blocks of f (size bytes, a regular
// file or a block device, which must stay open and unchanged while the
// source is used) that differ from the snapshot prev describes, compared
// blockSize bytes at a time. blockSize must be the block size of the digests
// prev yields and of the delta file the source is sent into. prev is read
// from another goroutine, front to back, until Next returns io.EOF or
// Close returns; it is read to its end even when f is shorter, so that it
// can check what it must (a chain of delta files verifies their END
// records).
func NewDigestSource(f *os.File, size, blockSize int64, prev DigestIterator, opts DigestSourceOptions) (*DigestSource, error) {
	if blockSize < MinBlockSize || blockSize > MaxBlockSize || blockSize%MinBlockSize != 0 {
		return nil, fmt.Errorf("archive: block size %d is not a multiple of %d between %d and %d", blockSize, MinBlockSize, MinBlockSize, MaxBlockSize)
	}
	if size < 0 || size > MaxVolumeSize {
		return nil, fmt.Errorf("archive: image size %d out of range", size)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	mode := st.Mode()
	if !mode.IsRegular() && (mode&os.ModeDevice == 0 || mode&os.ModeCharDevice != 0) {
		return nil, fmt.Errorf("%s is not a regular file or a block device (%v)", f.Name(), mode.Type())
	}
	chunk := int64(opts.ChunkSize)
	if chunk <= 0 {
		chunk = defaultHashChunk
	}
	chunk = max(chunk/blockSize, 1) * blockSize
	workers := opts.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), maxHashWorkers)
	}
	return &DigestSource{f: f, size: size, bs: blockSize, chunk: chunk, workers: max(workers, 1),
		sparse: mode.IsRegular(), prev: prev, progress: opts.Progress}, nil
}

// Stats returns what the source did so far.
func (s *DigestSource) Stats() DigestStats { return s.stats }

// ReadAt reads from the image.
func (s *DigestSource) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// hashJob is one chunk of the image on its way through the workers.
type hashJob struct {
	off, n int64
	exp    []expected // per block: what the earlier snapshot held
	hole   []bool     // per block: wholly inside a hole, not read
	buf    []byte
	out    []Extent // blocks that differ, runs of one kind merged
	read   int64
	err    error
	done   chan struct{}
}

// expected is what the earlier snapshot held in one block. kind 0 means
// unknown (no extent described the block): the block differs.
type expected struct {
	kind   Kind
	length int64
	digest Digest
}

// Next returns the next run of blocks that differ, or io.EOF.
func (s *DigestSource) Next() (Extent, error) {
	for len(s.pending) == 0 {
		if s.err != nil {
			return Extent{}, s.err
		}
		if !s.started {
			s.start()
		}
		j, ok := <-s.order
		if !ok {
			s.wg.Wait() // dispErr is set and every goroutine is done
			s.err = io.EOF
			if s.dispErr != nil {
				s.err = s.dispErr
			}
			continue
		}
		<-j.done
		if j.err != nil {
			s.err = j.err
			s.Close()
			continue
		}
		s.pending = append(s.pending, j.out...)
		s.stats.Examined += j.n
		s.stats.Read += j.read
		for _, e := range j.out {
			s.stats.Differed += e.Length
		}
		n := j.n
		s.free <- j
		if s.progress != nil {
			s.progress(n)
		}
	}
	e := s.pending[0]
	s.pending = s.pending[1:]
	return e, nil
}

// Close stops the source's goroutines; Next then fails, unless it had
// already returned io.EOF or an error. Close does not close the image.
func (s *DigestSource) Close() error {
	s.shutdown.Do(func() {
		if s.err == nil {
			s.err = errors.New("archive: DigestSource used after Close")
		}
		if !s.started {
			return
		}
		s.cancel()
		for range s.order {
		}
		s.wg.Wait()
	})
	return nil
}

func (s *DigestSource) start() {
	s.started = true
	inflight := s.workers + 2
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.order = make(chan *hashJob, inflight)
	s.free = make(chan *hashJob, inflight)
	work := make(chan *hashJob, inflight)
	nb := s.chunk / s.bs
	for i := 0; i < inflight; i++ {
		// Buffers are allocated on first use: a small image needs little.
		s.free <- &hashJob{exp: make([]expected, nb), hole: make([]bool, nb)}
	}
	s.wg.Add(1 + s.workers)
	go func() {
		defer s.wg.Done()
		defer close(s.order)
		defer close(work)
		if err := s.dispatch(ctx, work); err != nil && ctx.Err() == nil {
			s.dispErr = err
		}
	}()
	for i := 0; i < s.workers; i++ {
		go func() {
			defer s.wg.Done()
			for j := range work {
				if ctx.Err() != nil {
					j.err = ctx.Err()
				} else {
					j.err = s.compare(j)
				}
				close(j.done)
			}
		}()
	}
}

// dispatch walks the image in chunks, in order, noting for each block what
// the earlier snapshot held and whether it is a hole, and hands the chunks
// to the workers.
func (s *DigestSource) dispatch(ctx context.Context, work chan<- *hashJob) error {
	exp := expectations{it: s.prev, bs: s.bs}
	holes := holeMap{f: s.f, sparse: s.sparse}
	for off := int64(0); off < s.size; off += s.chunk {
		var j *hashJob
		select {
		case j = <-s.free:
		case <-ctx.Done():
			return ctx.Err()
		}
		j.off, j.n = off, min(s.chunk, s.size-off)
		j.out, j.read, j.err, j.done = j.out[:0], 0, nil, make(chan struct{})
		nb := int((j.n + s.bs - 1) / s.bs)
		j.exp, j.hole = j.exp[:nb], j.hole[:nb]
		for i := range nb {
			b := off + int64(i)*s.bs
			e := min(b+s.bs, s.size)
			var err error
			if j.exp[i], err = exp.at(b); err != nil {
				return err
			}
			if j.hole[i], err = holes.isHole(b, e); err != nil {
				return err
			}
		}
		select {
		case s.order <- j:
		case <-ctx.Done():
			return ctx.Err()
		}
		work <- j // never blocks: work has room for every job
	}
	return exp.drain()
}

// compare reads the chunk's blocks that are not holes and decides, block by
// block, which differ from what the earlier snapshot held.
func (s *DigestSource) compare(j *hashJob) error {
	bs := s.bs
	nb := len(j.exp)
	if int64(cap(j.buf)) < s.chunk {
		j.buf = make([]byte, s.chunk)
	}
	buf := j.buf[:j.n]
	for i := 0; i < nb; {
		if j.hole[i] {
			i++
			continue
		}
		k := i
		for k < nb && !j.hole[k] {
			k++
		}
		lo, hi := int64(i)*bs, min(int64(k)*bs, j.n)
		if err := readFull(s.f, buf[lo:hi], j.off+lo); err != nil {
			return err
		}
		j.read += hi - lo
		i = k
	}
	for i := range nb {
		lo, hi := int64(i)*bs, min(int64(i+1)*bs, j.n)
		kind := classify(j.exp[i], j.hole[i], buf[lo:hi])
		if kind == 0 {
			continue
		}
		if n := len(j.out); n > 0 && j.out[n-1].Kind == kind && j.out[n-1].End() == j.off+lo {
			j.out[n-1].Length += hi - lo
			continue
		}
		j.out = append(j.out, Extent{Offset: j.off + lo, Length: hi - lo, Kind: kind})
	}
	return nil
}

// classify returns 0 for a block that holds what the earlier snapshot held,
// else the kind of extent that describes its new contents. A block of
// another length than the earlier snapshot's (the volume's end moved)
// always differs: digests of different lengths cannot be compared.
func classify(exp expected, hole bool, block []byte) Kind {
	n := int64(len(block))
	same := exp.length == n
	switch {
	case hole:
		if same && exp.kind == KindZero {
			return 0
		}
		return KindZero
	case same && exp.kind == KindData:
		// Hashing is needed anyway; the zero test then costs nothing, as
		// no DATA digest is ever the digest of zeroes.
		d := Digest(blake3.Sum256(block))
		switch d {
		case exp.digest:
			return 0
		case zeroDigest(n):
			return KindZero
		}
		return KindData
	case same && exp.kind == KindZero:
		if isZero(block) {
			return 0
		}
		return KindData
	case isZero(block):
		return KindZero
	}
	return KindData
}

// expectations follows a DigestIterator block by block, checking that it
// keeps its promises (order, alignment, one digest per block).
type expectations struct {
	it      DigestIterator
	bs      int64
	cur     DigestExtent
	have    bool // cur holds an extent
	done    bool // the iterator returned io.EOF
	lastEnd int64
}

// at returns what the earlier snapshot held in the block starting at b.
// Blocks must be asked for in ascending order.
func (x *expectations) at(b int64) (expected, error) {
	for !x.done && (!x.have || x.cur.End() <= b) {
		if err := x.advance(); err != nil {
			return expected{}, err
		}
	}
	if !x.have || x.cur.Offset > b || x.cur.End() <= b {
		return expected{}, nil
	}
	e := expected{kind: x.cur.Kind, length: min(x.bs, x.cur.End()-b)}
	if e.kind == KindData {
		e.digest = x.cur.Digests[(b-x.cur.Offset)/x.bs]
	}
	return e, nil
}

func (x *expectations) advance() error {
	e, err := x.it.Next()
	if err == io.EOF {
		x.done, x.have = true, false
		return nil
	}
	if err != nil {
		return err
	}
	switch {
	case e.Length <= 0 || e.Offset < x.lastEnd || e.Offset > MaxVolumeSize || e.Length > MaxVolumeSize-e.Offset:
		return fmt.Errorf("archive: earlier snapshot's %v extent [%d, %d) is empty, out of order or out of range", e.Kind, e.Offset, e.End())
	case e.Offset%x.bs != 0:
		return fmt.Errorf("archive: earlier snapshot's %v extent [%d, %d) is not aligned to the block size %d", e.Kind, e.Offset, e.End(), x.bs)
	case x.lastEnd%x.bs != 0:
		// Only the volume's last extent may end off a block boundary.
		return fmt.Errorf("archive: earlier snapshot's %v extent [%d, %d) follows one that ends at %d, inside a block: that was the end of the volume", e.Kind, e.Offset, e.End(), x.lastEnd)
	case e.Kind == KindData && int64(len(e.Digests)) != blocks(e.Length, x.bs):
		return fmt.Errorf("archive: earlier snapshot's DATA extent [%d, %d) has %d digests, want %d", e.Offset, e.End(), len(e.Digests), blocks(e.Length, x.bs))
	case e.Kind != KindData && e.Kind != KindZero:
		return fmt.Errorf("archive: earlier snapshot's extent [%d, %d) has kind %v", e.Offset, e.End(), e.Kind)
	}
	x.cur, x.have, x.lastEnd = e, true, e.End()
	return nil
}

// drain reads the rest of the iterator, so that it can check what it must.
func (x *expectations) drain() error {
	for !x.done {
		if err := x.advance(); err != nil {
			return err
		}
	}
	return nil
}

// holeMap answers "is this range wholly inside a hole?" for ranges asked in
// ascending order, with one SEEK_DATA and one SEEK_HOLE per data region.
type holeMap struct {
	f          *os.File
	sparse     bool
	valid      bool
	start, end int64 // the first data region that ends after the last range asked
}

func (h *holeMap) isHole(b, e int64) (bool, error) {
	if !h.sparse {
		return false, nil
	}
	if !h.valid || h.end <= b {
		fd := int(h.f.Fd())
		data, err := unix.Seek(fd, b, unix.SEEK_DATA)
		switch {
		case errors.Is(err, unix.ENXIO): // no data from b to the end of the file
			h.start, h.end = math.MaxInt64, math.MaxInt64
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
			h.sparse = false // no SEEK_DATA on this filesystem: read everything
			return false, nil
		case err != nil:
			return false, fmt.Errorf("%s: looking for data at offset %d: %w", h.f.Name(), b, err)
		default:
			hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
			if err != nil {
				return false, fmt.Errorf("%s: looking for a hole at offset %d: %w", h.f.Name(), data, err)
			}
			h.start, h.end = data, hole
		}
		h.valid = true
	}
	// [b, start) holds no data, and the region [start, end) reaches past b.
	return h.start >= e, nil
}
