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
}

func (f *objectFile) Name() string { return f.name }

func (f *objectFile) Read(p []byte) (int, error) {
	if f.pos >= f.size {
		return 0, io.EOF
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
	f.mu.Lock()
	f.win, f.spare = nil, nil
	f.mu.Unlock()
	return nil
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
