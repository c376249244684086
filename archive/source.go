package archive

import (
	"io"
	"strconv"
)

// Kind says what an extent or record holds.
type Kind uint8

const (
	// KindData is a range whose bytes are read from the source and stored.
	KindData Kind = 1
	// KindZero is a range that reads as zeroes (unmapped, discarded or
	// written with zeroes). It is stored without a payload.
	KindZero Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindData:
		return "DATA"
	case KindZero:
		return "ZERO"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Extent is a byte range of a volume and what a delta file must say about it.
type Extent struct {
	Offset int64
	Length int64
	Kind   Kind
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Offset + e.Length }

// Source is what a delta file is made from: the ranges that changed (or, for
// a full, every range of the volume) and a way to read the data of the
// KindData ones.
//
// Next returns extents in ascending, non-overlapping offset order and io.EOF
// after the last. Extents need not be block aligned or bounded in length: the
// send pipeline splits and aligns them. ReadAt is called only for ranges
// inside KindData extents, possibly from several goroutines at once.
type Source interface {
	Next() (Extent, error)
	io.ReaderAt
}

// ListSource is a Source whose extents are known in advance: it returns
// Extents in turn and reads their data from R. It suits a volume whose
// changes were found by other means, and tests.
type ListSource struct {
	R       io.ReaderAt
	Extents []Extent
}

// Next returns the next of s.Extents, and io.EOF after the last.
func (s *ListSource) Next() (Extent, error) {
	if len(s.Extents) == 0 {
		return Extent{}, io.EOF
	}
	x := s.Extents[0]
	s.Extents = s.Extents[1:]
	return x, nil
}

// ReadAt reads from s.R.
func (s *ListSource) ReadAt(p []byte, off int64) (int, error) { return s.R.ReadAt(p, off) }
