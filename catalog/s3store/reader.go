package s3store

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// Window sizes of a delta file read front to back with seeks (the
// metadata walks of restore, merge and chain digests, which skip over
// payloads): a read after a seek fetches a small window, which holds a
// record's header and digests; reads that carry on where the last window
// ended fetch ever larger ones, up to maxWindow, so a walk over many
// small records, or a plain read, costs few requests.
const (
	minWindow = 64 << 10
	maxWindow = 4 << 20
)

// OpenDelta opens a snapshot's file for reading at any offset: an
// io.ReaderAt of ranged GETs (each pinned to the object's ETag, so an
// object rewritten meanwhile is an error, never a mix), and Read and Seek
// through a window that grows while reading goes on in order. A file
// stored in several pieces reads as one.
func (s *Store) OpenDelta(file string) (catalog.DeltaReader, error) {
	ps, err := s.openPieces(file)
	if err != nil {
		return nil, err
	}
	return &objectFile{name: s.objectPath(file), ps: ps, size: ps.size}, nil
}

// OpenStream opens a snapshot's file for one pass front to back, with
// s3.Options.ReadAhead ranged GETs of ReadChunk bytes in flight: the
// fastest way through a whole file. It is not seekable, so readers take
// it as a stream.
func (s *Store) OpenStream(file string) (io.ReadCloser, error) {
	ps, err := s.openPieces(file)
	if err != nil {
		return nil, err
	}
	return &stream{ps: ps}, nil
}

// Refresh brings the local cache of the catalog up to date with the
// record objects, as Open does: for a reader that lasts (mount, serve),
// to see the backups and prunes made since it opened the store.
func (s *Store) Refresh() error { return s.sync("") }

// pieceSet is the objects of one delta file, in order.
type pieceSet struct {
	rs   []*s3.Reader
	offs []int64 // start of each piece in the file
	size int64
}

// openPieces looks up a file's pieces: the first under the file's name;
// a piece of exactly the store's piece size may have a next one.
func (s *Store) openPieces(file string) (*pieceSet, error) {
	if _, ok := catalog.ParseFile(file); !ok {
		return nil, fmt.Errorf("store %s: %q is not a delta file of the store's layout", s.loc, file)
	}
	ps := &pieceSet{}
	for n := 1; ; n++ {
		r, err := s.s3.OpenObject(s.ctx, pieceName(file, n))
		if n > 1 && errors.Is(err, s3.ErrNotFound) {
			break
		}
		if err != nil {
			return nil, err
		}
		ps.rs = append(ps.rs, r)
		ps.offs = append(ps.offs, ps.size)
		ps.size += r.Size()
		if r.Size() != s.meta.PieceSize {
			break
		}
	}
	return ps, nil
}

// ReadAt reads across pieces.
func (ps *pieceSet) ReadAt(p []byte, off int64) (int, error) {
	if off >= ps.size {
		return 0, io.EOF
	}
	got := 0
	for got < len(p) && off < ps.size {
		i := len(ps.offs) - 1
		for ps.offs[i] > off {
			i--
		}
		r := ps.rs[i]
		in := off - ps.offs[i]
		k := int(min(int64(len(p)-got), r.Size()-in))
		n, err := r.ReadAt(p[got:got+k], in)
		got += n
		off += int64(n)
		if err != nil && !(errors.Is(err, io.EOF) && n == k) {
			return got, err
		}
	}
	if got < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// objectFile is a delta file of the store open for random access. Read
// and Seek are for one goroutine (as an *os.File's offset is); ReadAt may
// run on others meanwhile.
type objectFile struct {
	name string
	ps   *pieceSet
	size int64

	pos   int64  // Read and Seek's offset
	wsize int    // size of the next window fetched in order
	spare []byte // the buffer the next window is fetched into

	mu     sync.Mutex // guards win and wstart, which ReadAt reads too
	win    []byte     // bytes at [wstart, wstart+len(win))
	wstart int64

	ra *readAhead // set by ReadAhead: every read goes through it
}

func (f *objectFile) Name() string { return f.name }

func (f *objectFile) Read(p []byte) (int, error) {
	if f.pos >= f.size {
		return 0, io.EOF
	}
	if f.ra != nil {
		n, err := f.ra.readAt(p, f.pos)
		f.pos += int64(n)
		if n > 0 && errors.Is(err, io.EOF) {
			err = nil
		}
		return n, err
	}
	f.mu.Lock()
	wstart, wend := f.wstart, f.wstart+int64(len(f.win))
	if f.pos >= wstart && f.pos < wend {
		n := copy(p, f.win[f.pos-wstart:])
		f.mu.Unlock()
		f.pos += int64(n)
		return n, nil
	}
	f.mu.Unlock()
	next := f.wsize
	if f.pos != wend || next == 0 {
		next = minWindow // after a seek
	}
	n := int(min(int64(max(next, len(p))), f.size-f.pos))
	if cap(f.spare) < n {
		f.spare = make([]byte, n)
	}
	buf := f.spare[:n]
	got, err := f.ps.ReadAt(buf, f.pos)
	if got == 0 && err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.spare, f.win, f.wstart = f.win, buf[:got], f.pos
	f.mu.Unlock()
	f.wsize = min(2*n, maxWindow)
	k := copy(p, buf[:got])
	f.pos += int64(k)
	return k, nil
}

func (f *objectFile) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += f.pos
	case io.SeekEnd:
		offset += f.size
	default:
		return f.pos, fmt.Errorf("%s: seek: bad whence %d", f.name, whence)
	}
	if offset < 0 {
		return f.pos, fmt.Errorf("%s: seek to %d: negative offset", f.name, offset)
	}
	f.pos = offset
	return offset, nil
}

// ReadAt serves what the window holds (a small payload next to the
// metadata just read) and asks the server for the rest.
func (f *objectFile) ReadAt(p []byte, off int64) (int, error) {
	if f.ra != nil {
		return f.ra.readAt(p, off)
	}
	f.mu.Lock()
	if off >= f.wstart && off+int64(len(p)) <= f.wstart+int64(len(f.win)) {
		n := copy(p, f.win[off-f.wstart:])
		f.mu.Unlock()
		return n, nil
	}
	f.mu.Unlock()
	return f.ps.ReadAt(p, off)
}

func (f *objectFile) Close() error {
	if f.ra != nil {
		f.ra.close()
	}
	f.mu.Lock()
	f.win, f.spare = nil, nil
	f.mu.Unlock()
	return nil
}

// Read-ahead of a file read once from front to back, seeking forward over
// what is not needed, with reads at offsets a little behind (cat: the walk
// of a chain's metadata, and its workers reading the payloads it found).
// Measured on a 2-CPU machine against versitygw on loopback
// (scripts/bench-cat-s3.sh): 2 chunks of 4 MiB ahead beat 4 ahead, 8 of
// 1 MiB, and 64 KiB windows with a GET per payload; and buffers must be
// reused (fresh 4 MiB buffers doubled the CPU time of a cat).
const (
	aheadChunk  = 4 << 20 // bytes fetched by one ranged GET
	aheadChunks = 2       // chunks fetched ahead of the furthest read: GETs in flight
	aheadBehind = 2       // chunks kept behind it, for the payload reads that lag
)

// ReadAhead makes every later read of f go through chunks of 4 MiB, each
// fetched by one ranged GET, with the 2 chunks past the furthest byte read
// so far fetched in the background and the 2 before it kept: memory of at
// most 20 MiB per file, and up to 3 GETs in flight while it is read in
// order. It is for a reader that goes through the file once, front to back,
// seeking forward over ranges it does not need (whole chunks skipped
// are never fetched), as cat does; a reader at random offsets (mount,
// serve) would fetch chunks it never reads, and keeps the default. A read
// before the chunks kept is fetched on its own. Call it before reading,
// from the goroutine that reads.
func (f *objectFile) ReadAhead() {
	// (pointintime.PointInTime.ReadAhead finds it by this method alone.)
	if f.ra == nil {
		f.ra = &readAhead{ps: f.ps, size: f.size, chunks: make(map[int64]*aheadChunkData), hi: -1}
	}
}

// readAhead is the chunks of a file read ahead (objectFile.ReadAhead).
type readAhead struct {
	ps   *pieceSet
	size int64

	mu     sync.Mutex
	chunks map[int64]*aheadChunkData // by index: fetched, or being fetched
	hi     int64                     // the furthest chunk read so far
	wg     sync.WaitGroup            // the fetches running
	free   [][]byte                  // buffers of dropped chunks, for the next
	closed bool
}

type aheadChunkData struct {
	ready chan struct{} // closed when data and err are set
	data  []byte
	err   error
}

// readAt reads p at off from the chunks, fetching what is missing.
func (r *readAhead) readAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	got := 0
	for got < len(p) && off < r.size {
		i := off / aheadChunk
		k := int(min(int64(len(p)-got), min(r.size, (i+1)*aheadChunk)-off))
		n := 0
		if c := r.chunk(i); c != nil {
			<-c.ready
			if c.err != nil {
				return got, c.err
			}
			// Copied under the lock: a chunk dropped meanwhile has given
			// its buffer to another (data nil).
			r.mu.Lock()
			if c.data != nil {
				n = copy(p[got:got+k], c.data[off-i*aheadChunk:])
			}
			r.mu.Unlock()
		}
		if n == 0 { // behind the chunks kept, or dropped meanwhile: read it on its own
			var err error
			n, err = r.ps.ReadAt(p[got:got+k], off)
			if err != nil && !(errors.Is(err, io.EOF) && n == k) {
				return got + n, err
			}
		}
		got += n
		off += int64(n)
	}
	if got < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// chunk returns chunk i, fetching it and the chunks ahead of the
// furthest read when they are not yet, and dropping those left too far
// behind; nil for a chunk before the ones kept.
func (r *readAhead) chunk(i int64) *aheadChunkData {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i > r.hi {
		r.hi = i
		for j, c := range r.chunks {
			if j < i-aheadBehind {
				select {
				case <-c.ready: // its buffer is free for another chunk
					if c.data != nil {
						r.free = append(r.free, c.data[:cap(c.data)])
						c.data = nil
					}
				default: // still being fetched: the fetch drops it
				}
				delete(r.chunks, j)
			}
		}
		last := (r.size - 1) / aheadChunk
		for j := i + 1; j <= min(i+aheadChunks, last); j++ {
			r.fetch(j)
		}
	}
	if i < r.hi-aheadBehind {
		return nil
	}
	return r.fetch(i)
}

// fetch starts fetching chunk i unless it is there or on its way. The
// caller holds r.mu.
func (r *readAhead) fetch(i int64) *aheadChunkData {
	if c, ok := r.chunks[i]; ok {
		return c
	}
	c := &aheadChunkData{ready: make(chan struct{})}
	r.chunks[i] = c
	if r.closed {
		c.err = fmt.Errorf("read of a closed file")
		close(c.ready)
		return c
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(c.ready)
		start := i * aheadChunk
		r.mu.Lock()
		var buf []byte
		if k := len(r.free); k > 0 {
			buf, r.free = r.free[k-1], r.free[:k-1]
		} else {
			buf = make([]byte, aheadChunk)
		}
		r.mu.Unlock()
		buf = buf[:min(aheadChunk, r.size-start)]
		n, err := r.ps.ReadAt(buf, start)
		if err != nil && !(errors.Is(err, io.EOF) && n == len(buf)) {
			c.err = err
			return
		}
		c.data = buf
	}()
	return c
}

// close waits for the fetches under way and drops the chunks.
func (r *readAhead) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.wg.Wait()
	r.mu.Lock()
	clear(r.chunks)
	r.mu.Unlock()
}

// stream reads a file's pieces one after the other with read-ahead.
type stream struct {
	ps  *pieceSet
	i   int
	cur io.ReadCloser
}

func (st *stream) Read(p []byte) (int, error) {
	for {
		if st.cur == nil {
			if st.i == len(st.ps.rs) {
				return 0, io.EOF
			}
			st.cur = st.ps.rs[st.i].NewSequential(0, -1)
			st.i++
		}
		n, err := st.cur.Read(p)
		if errors.Is(err, io.EOF) {
			_ = st.cur.Close()
			st.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (st *stream) Close() error {
	if st.cur != nil {
		err := st.cur.Close()
		st.cur = nil
		return err
	}
	st.i = len(st.ps.rs)
	return nil
}
