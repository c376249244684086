package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
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
	// maxHashWorkers (see WorkerCount for an explicit number).
	Workers int
	// ChunkSize is the bytes of the image one worker reads and hashes at a
	// time; 0 means 1 MiB. It is rounded to the block size.
	ChunkSize int
	// Progress, if set, is called from Next with the bytes of the image
	// examined (read and hashed, or skipped as a hole) since the last call.
	Progress func(n int64)
	// Key, when the earlier snapshot's digests are keyed (read from a chain
	// encrypted under it, see OpenChainDigests), hashes the image's blocks
	// under it too.
	Key *Key
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
	key      *Key
	prev     DigestIterator
	progress func(int64)

	started  bool
	cancel   context.CancelFunc
	results  chan digestResult // closed once the pipeline returned
	runErr   error             // the pipeline's result, set before results is closed
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
	workers := WorkerCount(opts.Workers)
	if opts.Workers <= 0 {
		workers = min(workers, maxHashWorkers)
	}
	return &DigestSource{f: f, size: size, bs: blockSize, chunk: chunk, workers: workers,
		sparse: mode.IsRegular(), key: opts.Key, prev: prev, progress: opts.Progress}, nil
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
}

// digestResult is what Next learns from one chunk.
type digestResult struct {
	out     []Extent
	n, read int64
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
		r, ok := <-s.results
		if !ok {
			s.err = io.EOF
			if s.runErr != nil {
				s.err = s.runErr
			}
			continue
		}
		s.pending = append(s.pending, r.out...)
		s.stats.Examined += r.n
		s.stats.Read += r.read
		for _, e := range r.out {
			s.stats.Differed += e.Length
		}
		if s.progress != nil {
			s.progress(r.n)
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
		for range s.results {
		}
	})
	return nil
}

// start runs the pipeline that reads and hashes the image on a goroutine
// of its own, which hands each chunk's result to Next in order.
func (s *DigestSource) start() {
	s.started = true
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.results = make(chan digestResult)
	nb := s.chunk / s.bs
	exp := expectations{it: s.prev, bs: s.bs}
	var regions *DataRegions
	if s.sparse {
		regions = NewDataRegions(s.f)
	}
	off := int64(0)
	p := Ordered[*hashJob]{
		Workers:  s.workers,
		InFlight: s.workers + 2,
		// Buffers are allocated on first use: a small image needs little.
		New: func() *hashJob { return &hashJob{exp: make([]expected, nb), hole: make([]bool, nb)} },
		Produce: func(_ context.Context, j *hashJob) error {
			if off >= s.size {
				// Read the rest of the iterator, so that it can check
				// what it must (a chain's END records).
				if err := exp.drain(); err != nil {
					return err
				}
				return io.EOF
			}
			err := s.plan(j, off, &exp, regions)
			off += j.n
			return err
		},
		Work: func(_ int, j *hashJob) error { return s.compare(j) },
		Consume: func(j *hashJob) error {
			// The job is reused once this returns: hand on a copy.
			r := digestResult{out: slices.Clone(j.out), n: j.n, read: j.read}
			select {
			case s.results <- r:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		},
	}
	go func() {
		defer close(s.results)
		s.runErr = p.Run(ctx)
	}()
}

// plan notes, for each block of the chunk at off, what the earlier
// snapshot held and whether it is a hole.
func (s *DigestSource) plan(j *hashJob, off int64, exp *expectations, regions *DataRegions) error {
	j.off, j.n = off, min(s.chunk, s.size-off)
	j.out, j.read = j.out[:0], 0
	nb := int((j.n + s.bs - 1) / s.bs)
	j.exp, j.hole = j.exp[:nb], j.hole[:nb]
	for i := range nb {
		b := off + int64(i)*s.bs
		e := min(b+s.bs, s.size)
		var err error
		if j.exp[i], err = exp.at(b); err != nil {
			return err
		}
		j.hole[i] = false
		if regions != nil {
			start, _, err := regions.At(b)
			if err != nil {
				return err
			}
			// [b, start) holds no data, and the region at start reaches
			// past b.
			j.hole[i] = start >= e
		}
	}
	return nil
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
		kind := classify(s.key, j.exp[i], j.hole[i], buf[lo:hi])
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
func classify(key *Key, exp expected, hole bool, block []byte) Kind {
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
		d := key.blockDigest(block)
		switch d {
		case exp.digest:
			return 0
		case key.zeroDigest(n):
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
