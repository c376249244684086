package archive

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
)

// FileSize returns the size of a regular file or block device, and whether
// it is a block device. Anything else is an error: sending a directory or a
// character device is a mistake worth naming.
func FileSize(f *os.File) (size int64, blockDevice bool, err error) {
	st, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	switch mode := st.Mode(); {
	case mode.IsRegular():
		return st.Size(), false, nil
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		// Seeking to the end is how the kernel reports a block device's
		// size without an ioctl; ReadAt does not use the file offset.
		n, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return 0, true, fmt.Errorf("%s: reading the block device size: %w", f.Name(), err)
		}
		return n, true, nil
	default:
		return 0, false, kindError(f.Name(), mode)
	}
}

// FileSource is a Source for a whole regular file or block device: every
// byte is DATA (zero blocks among them become ZERO records), except the
// holes of a sparse regular file, which are ZERO extents without being read.
type FileSource struct {
	f       *os.File
	size    int64
	pos     int64
	regions *DataRegions // nil for a block device: no holes
}

// NewFileSource returns a Source for f, which must stay open while it is
// used. It reads size bytes; pass the result of FileSize.
func NewFileSource(f *os.File, size int64, blockDevice bool) *FileSource {
	s := &FileSource{f: f, size: size}
	if !blockDevice {
		s.regions = NewDataRegions(f)
	}
	return s
}

// Next returns the next data region or hole.
func (s *FileSource) Next() (Extent, error) {
	if s.pos >= s.size {
		return Extent{}, io.EOF
	}
	e := Extent{Offset: s.pos, Length: s.size - s.pos, Kind: KindData}
	if s.regions != nil {
		start, end, err := s.regions.At(s.pos)
		if err != nil {
			return Extent{}, err
		}
		if start > s.pos {
			e.Kind, e.Length = KindZero, min(start, s.size)-s.pos
		} else {
			e.Length = min(end, s.size) - s.pos
		}
	}
	s.pos = e.End()
	return e, nil
}

// ReadAt reads from the file.
func (s *FileSource) ReadAt(p []byte, off int64) (int, error) { return s.f.ReadAt(p, off) }

// CompareSource is a Source of the blocks of one file (NEW) that differ
// from another (BASE), for example two raw images of a VM taken at
// different times. It reads both files in full, once, in order; blocks past
// the end of BASE (a grown volume) are all DATA. Adjacent differing blocks
// come out as separate extents; the send pipeline merges them.
type CompareSource struct {
	newF, baseF       *os.File
	newSize, baseSize int64
	blockSize         int64
	pos               int64
	nbuf, bbuf        []byte
	pending           []Extent
	progress          func(int64)
	differed          int64
}

// compareChunk is how much of each file is read at a time.
const compareChunk = 4 << 20

// NewCompareSource returns a Source of the blocks of newF (newSize bytes)
// that differ from baseF (baseSize bytes), compared blockSize bytes at a
// time. progress, if not nil, is called with the bytes of NEW compared.
func NewCompareSource(newF *os.File, newSize int64, baseF *os.File, baseSize, blockSize int64, progress func(int64)) *CompareSource {
	chunk := max(compareChunk/blockSize, 1) * blockSize
	return &CompareSource{newF: newF, baseF: baseF, newSize: newSize, baseSize: baseSize, blockSize: blockSize,
		nbuf: make([]byte, chunk), bbuf: make([]byte, chunk), progress: progress}
}

// Differed returns how many bytes of NEW differed from BASE so far.
func (s *CompareSource) Differed() int64 { return s.differed }

// Next returns the next run of differing blocks.
func (s *CompareSource) Next() (Extent, error) {
	for len(s.pending) == 0 {
		if s.pos >= s.newSize {
			return Extent{}, io.EOF
		}
		if s.pos >= s.baseSize {
			e := Extent{Offset: s.pos, Length: s.newSize - s.pos, Kind: KindData}
			s.differed += e.Length
			s.pos = s.newSize
			return e, nil
		}
		n := int(min(int64(len(s.nbuf)), s.newSize-s.pos))
		bn := int(min(int64(n), s.baseSize-s.pos))
		nb, bb := s.nbuf[:n], s.bbuf[:bn]
		if err := readFull(s.newF, nb, s.pos); err != nil {
			return Extent{}, err
		}
		if err := readFull(s.baseF, bb, s.pos); err != nil {
			return Extent{}, err
		}
		bs := int(s.blockSize)
		for i := 0; i < n; i += bs {
			end := min(i+bs, n)
			if end <= bn && bytes.Equal(nb[i:end], bb[i:end]) {
				continue
			}
			s.pending = append(s.pending, Extent{Offset: s.pos + int64(i), Length: int64(end - i), Kind: KindData})
			s.differed += int64(end - i)
		}
		s.pos += int64(n)
		if s.progress != nil {
			s.progress(int64(n))
		}
	}
	e := s.pending[0]
	s.pending = s.pending[1:]
	return e, nil
}

// skipTo starts the comparison at off, a block boundary, before the first
// Next: a resumed file (see Send) compares nothing below it.
func (s *CompareSource) skipTo(off int64) {
	if s.pos < off && len(s.pending) == 0 {
		s.pos = min(off, s.newSize)
	}
}

// ReadAt reads from NEW.
func (s *CompareSource) ReadAt(p []byte, off int64) (int, error) { return s.newF.ReadAt(p, off) }

func readFull(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%s: reading %d bytes at offset %d: %w (did the file shrink?)", f.Name(), len(p), off, err)
}
