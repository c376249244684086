package cow

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/thinback/thinback/lvmthin/internal/blockdev"
)

// Options say what Read reads.
type Options struct {
	// Name names the device or file in messages.
	Name string
	// Size is the COW device's size in bytes (the block device's size,
	// not anything the store says). Metadata areas past it do not exist.
	Size int64
	// OriginSize is the origin's size in bytes: every exception's origin
	// chunk must start inside it.
	OriginSize int64
	// TempDir holds sorted runs of origin chunks when there are more than
	// MemoryChunks exceptions ("" = os.TempDir()).
	TempDir string
	// MemoryChunks bounds the origin chunk numbers held in memory (8 bytes
	// each); 0 means DefaultMemoryChunks.
	MemoryChunks int
	// ReadAhead is how many metadata areas are read at once; 0 means 4.
	// Areas are one chunk each, E chunks apart, so a device serves them
	// faster several at a time.
	ReadAhead int
}

// Run is a range of origin chunks [First, First+Count) the exception table
// lists: chunks written (on the origin or the snapshot) since the snapshot
// was taken.
type Run struct {
	First, Count uint64
}

// Stats describe a Read.
type Stats struct {
	Header        Header
	Exceptions    int64 // exceptions in the table
	Areas         int64 // metadata areas read, the last (partly filled) one included
	MetadataBytes int64 // bytes of metadata read, the header's chunk excluded
	Runs          int64 // runs given to the caller
	Spilled       int64 // sorted runs of chunk numbers spilled to TempDir
}

// defaultReadAhead: four areas in flight keep a disk's queue busy without
// holding much memory (four chunks).
const defaultReadAhead = 4

// ReadHeader reads and checks the header of the COW store in r, of size
// bytes. On ErrInvalidated the header is returned too.
func ReadHeader(r io.ReaderAt, name string, size int64) (Header, error) {
	if size < headerSize {
		return Header{}, corrupt(name, 0, "a device of %d bytes is too small for a snapshot header", size)
	}
	// One aligned block holds the header; O_DIRECT devices need that.
	n := min(size, blockdev.Align)
	buf := blockdev.AlignedBuffer(blockdev.Align)[:n]
	if err := readFull(r, buf, 0); err != nil {
		return Header{}, fmt.Errorf("%s: reading the snapshot header: %w", name, err)
	}
	return parseHeader(buf, name)
}

// geometry is where a store's metadata areas are.
type geometry struct {
	name         string
	chunk        int64 // bytes
	perArea      int64 // E
	stride       int64 // chunks from one area to the next: E+1
	cowChunks    int64 // whole chunks in the device
	areas        int64 // metadata areas that fit in the device
	originChunks uint64
}

func (g *geometry) areaOffset(a int64) int64 { return (1 + a*g.stride) * g.chunk }

// Read reads the exception table of the COW store in r and calls fn with
// the origin chunks it lists, as runs of consecutive chunks in ascending
// order, merged. It checks the header (ErrInvalidated if the snapshot was
// invalidated) and every exception: the data chunk inside the device and
// neither the header nor a metadata area, the origin chunk inside the
// origin and listed once. It stops at the first unused exception or the
// device's end.
//
// Everything is checked before fn sees the first run except repeats of an
// origin chunk among more than MemoryChunks exceptions, which are found
// while the runs are merged: on an error, discard what fn was given.
// Memory is bounded by MemoryChunks, ReadAhead chunks and a read buffer
// per spilled run, whatever the table holds.
func Read(r io.ReaderAt, opts Options, fn func(Run) error) (Stats, error) {
	var st Stats
	name := opts.Name
	if opts.Size <= 0 || opts.OriginSize <= 0 {
		return st, fmt.Errorf("cow: reading %s: device size %d and origin size %d must be positive", name, opts.Size, opts.OriginSize)
	}
	h, err := ReadHeader(r, name, opts.Size)
	st.Header = h
	if err != nil {
		return st, err
	}
	g := &geometry{name: name, chunk: h.ChunkSize(), perArea: h.ExceptionsPerArea()}
	g.stride = g.perArea + 1
	g.cowChunks = opts.Size / g.chunk
	if g.cowChunks < 2 {
		return st, corrupt(name, 0, "a device of %d bytes has no room for a metadata area after the header (chunks of %d bytes)", opts.Size, g.chunk)
	}
	g.areas = (g.cowChunks - 1 + g.stride - 1) / g.stride
	g.originChunks = uint64((opts.OriginSize + g.chunk - 1) / g.chunk)

	set := newChunkSet(opts.MemoryChunks, opts.TempDir)
	defer set.close()
	err = scan(r, g, opts.ReadAhead, &st, func(off int64, oldc, newc uint64) error {
		if err := g.check(off, oldc, newc); err != nil {
			return err
		}
		st.Exceptions++
		return set.add(oldc)
	})
	if err != nil {
		return st, err
	}
	var run Run
	var dup error
	err = set.walk(func(c uint64) error {
		switch {
		case run.Count > 0 && c < run.First+run.Count:
			// Sorted, so a chunk below the run's end is a repeat.
			dup = errRepeat{c}
			return dup
		case run.Count > 0 && c == run.First+run.Count:
			run.Count++
			return nil
		case run.Count > 0:
			st.Runs++
			if err := fn(run); err != nil {
				return err
			}
		}
		run = Run{First: c, Count: 1}
		return nil
	})
	st.Spilled = set.spilled()
	if dup != nil {
		return st, locateRepeat(r, g, dup.(errRepeat).chunk)
	}
	if err != nil {
		return st, err
	}
	if run.Count > 0 {
		st.Runs++
		if err := fn(run); err != nil {
			return st, err
		}
	}
	return st, nil
}

// check validates one exception at byte off.
func (g *geometry) check(off int64, oldc, newc uint64) error {
	switch {
	case newc >= uint64(g.cowChunks):
		return corrupt(g.name, off+8, "new_chunk %d is past the end of the device (%d chunks of %d bytes)", newc, g.cowChunks, g.chunk)
	case (newc-1)%uint64(g.stride) == 0:
		return corrupt(g.name, off+8, "new_chunk %d is metadata area %d, not a data chunk", newc, (newc-1)/uint64(g.stride))
	case oldc >= g.originChunks:
		return corrupt(g.name, off, "old_chunk %d is past the end of the origin (%d chunks of %d bytes)", oldc, g.originChunks, g.chunk)
	}
	return nil
}

type errRepeat struct{ chunk uint64 }

func (e errRepeat) Error() string { return fmt.Sprintf("origin chunk %d listed twice", e.chunk) }

// locateRepeat finds the first two exceptions of an origin chunk, to name
// the offsets: the sort lost them, and this happens only on a bad store.
func locateRepeat(r io.ReaderAt, g *geometry, chunk uint64) error {
	var first int64 = -1
	found := errors.New("found")
	var err error
	scanErr := scan(r, g, 1, &Stats{}, func(off int64, oldc, _ uint64) error {
		if oldc != chunk {
			return nil
		}
		if first < 0 {
			first = off
			return nil
		}
		err = corrupt(g.name, off, "old_chunk %d is listed again; the exception at byte %d has it already", chunk, first)
		return found
	})
	if err != nil {
		return err
	}
	if scanErr != nil {
		return scanErr
	}
	// The store changed under us between the two passes.
	return corrupt(g.name, first, "old_chunk %d is listed twice (the second could not be found again: did the store change while it was read?)", chunk)
}

// scan walks the exception table, calling visit with each used exception's
// byte offset and fields, until the first unused one, the device's end or
// an error. Areas are read readAhead at a time.
func scan(r io.ReaderAt, g *geometry, readAhead int, st *Stats, visit func(off int64, oldc, newc uint64) error) error {
	if readAhead <= 0 {
		readAhead = defaultReadAhead
	}
	ar := startAreas(r, g, readAhead)
	defer ar.stop()
	for a := int64(0); a < g.areas; a++ {
		buf, err := ar.next(a)
		areaOff := g.areaOffset(a)
		if err != nil {
			return fmt.Errorf("%s: reading metadata area %d at byte %d: %w", g.name, a, areaOff, err)
		}
		st.Areas++
		st.MetadataBytes += g.chunk
		for i := int64(0); i < g.perArea; i++ {
			e := buf[i*exceptionSize:]
			oldc, newc := binary.LittleEndian.Uint64(e), binary.LittleEndian.Uint64(e[8:])
			off := areaOff + i*exceptionSize
			if newc == 0 {
				if oldc != 0 {
					// 16-byte exceptions never straddle a sector, so
					// not even a read racing the kernel's write of
					// the area gives half of one.
					return corrupt(g.name, off, "the end-of-table marker (new_chunk 0) has old_chunk %d, not 0", oldc)
				}
				return nil
			}
			if err := visit(off, oldc, newc); err != nil {
				return err
			}
		}
		ar.release(a, buf)
	}
	// Every area that fits is full: the table ends with the device.
	return nil
}

// areaReader reads metadata areas ahead of their use, in a window of
// buffers: reader j reads areas j, j+w, j+2w, ... into its own buffer once
// the consumer hands it back.
type areaReader struct {
	results []chan areaResult
	free    []chan []byte
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
}

type areaResult struct {
	buf []byte
	err error
}

func startAreas(r io.ReaderAt, g *geometry, w int) *areaReader {
	w = int(min(int64(w), max(g.areas, 1)))
	ar := &areaReader{results: make([]chan areaResult, w), free: make([]chan []byte, w), done: make(chan struct{})}
	for j := 0; j < w; j++ {
		ar.results[j] = make(chan areaResult, 1)
		ar.free[j] = make(chan []byte, 1)
		ar.free[j] <- blockdev.AlignedBuffer(int(g.chunk))
		ar.wg.Add(1)
		go func(j int) {
			defer ar.wg.Done()
			for a := int64(j); a < g.areas; a += int64(w) {
				var buf []byte
				select {
				case buf = <-ar.free[j]:
				case <-ar.done:
					return
				}
				err := readFull(r, buf, g.areaOffset(a))
				select {
				case ar.results[j] <- areaResult{buf, err}:
				case <-ar.done:
					return
				}
			}
		}(j)
	}
	return ar
}

func (ar *areaReader) next(a int64) ([]byte, error) {
	res := <-ar.results[a%int64(len(ar.results))]
	return res.buf, res.err
}

func (ar *areaReader) release(a int64, buf []byte) { ar.free[a%int64(len(ar.free))] <- buf }

func (ar *areaReader) stop() {
	ar.once.Do(func() { close(ar.done) })
	ar.wg.Wait()
}

// readFull reads len(p) bytes at off; the device ending first is an error.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("short read, %d of %d bytes: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return err
}
