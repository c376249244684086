package lvmthin

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// rangeKind is what a range of the metadata says, in thin_delta's words,
// whichever reader found it (package thinxml or thinmeta).
type rangeKind = thinxml.RangeKind

const (
	rangeSame      = thinxml.RangeSame      // mapped to the same block in both
	rangeDifferent = thinxml.RangeDifferent // mapped in both, to different blocks
	rangeLeftOnly  = thinxml.RangeLeftOnly  // mapped only in the older device
	rangeRightOnly = thinxml.RangeRightOnly // mapped only in the newer device
	rangeMapped    = thinxml.RangeMapped    // a full: mapped in the device
)

// badf makes the error for metadata or tool output that does not make
// sense.
func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMetadata}, args...)...)
}

// extentBuilder turns the block ranges of thin_delta/thin_dump output into
// byte extents of the newer volume:
//   - different and right_only (changed or newly written) and thin_dump
//     mappings become KindData; left_only (unmapped since: discarded) becomes
//     KindZero; same is skipped, except in the fill region;
//   - the fill region [fillFrom, size) must be described completely: for a
//     full it is the whole volume, for an incremental of a grown volume it
//     is the part the base did not have. There, gaps (unmapped in both)
//     become KindZero and same becomes KindData: a target restored from the
//     base has no defined contents past the base's end, even where the base
//     still maps blocks left over from before a shrink;
//   - everything is clipped to size: a shrunk thin LV keeps its mappings
//     past the new end, and the tools report them;
//   - adjacent extents of one kind are merged.
//
// It checks that ranges ascend without overlap and that no offset
// overflows, so nonsense is refused instead of written.
type extentBuilder struct {
	unit     int64 // bytes per block, from data_block_size
	wantUnit int64 // the pool chunk size LVM reports, 0 if unknown
	size     int64
	fillFrom int64
	pos      int64 // end of the previous range, unclipped
	pending  archive.Extent
	ranges   int64
	out      func(archive.Extent) error
}

func (b *extentBuilder) setBlockSize(sectors uint64) error {
	if b.unit != 0 {
		return badf("second data block size")
	}
	unit := int64(sectors) * 512
	if b.wantUnit != 0 && unit != b.wantUnit {
		return badf("metadata data_block_size is %d bytes but LVM reports a pool chunk size of %d bytes", unit, b.wantUnit)
	}
	b.unit = unit
	return nil
}

func (b *extentBuilder) add(kind rangeKind, begin, length uint64) error {
	if b.unit == 0 {
		return badf("range before the data block size is known")
	}
	if length == 0 {
		return badf("empty %s range at block %d", kind, begin)
	}
	maxBlocks := uint64(math.MaxInt64 / b.unit)
	if begin > maxBlocks || length > maxBlocks-begin {
		return badf("%s range at block %d, length %d, overflows 64-bit byte offsets", kind, begin, length)
	}
	start := int64(begin) * b.unit
	end := start + int64(length)*b.unit
	if start < b.pos {
		return badf("%s range at block %d overlaps or precedes the previous range, which ends at block %d",
			kind, begin, b.pos/b.unit)
	}
	b.ranges++
	if err := b.fillGap(start); err != nil {
		return err
	}
	b.pos = end
	switch kind {
	case rangeDifferent, rangeRightOnly, rangeMapped:
		return b.emit(start, end, archive.KindData)
	case rangeLeftOnly:
		return b.emit(start, end, archive.KindZero)
	case rangeSame:
		return b.emit(max(start, b.fillFrom), end, archive.KindData)
	}
	return badf("unknown range kind %v", kind)
}

// fillGap covers the unmapped gap before an offset, inside the fill region.
func (b *extentBuilder) fillGap(upto int64) error {
	return b.emit(max(b.pos, b.fillFrom), upto, archive.KindZero)
}

// finish covers the tail of the fill region and flushes the last extent.
func (b *extentBuilder) finish() error {
	if b.unit == 0 {
		return badf("no data block size in output")
	}
	if err := b.fillGap(b.size); err != nil {
		return err
	}
	if b.pending.Length > 0 {
		err := b.out(b.pending)
		b.pending = archive.Extent{}
		return err
	}
	return nil
}

// emit clips [from, to) to the volume and merges it into the pending extent.
func (b *extentBuilder) emit(from, to int64, kind archive.Kind) error {
	to = min(to, b.size)
	if from >= to {
		return nil
	}
	if b.pending.Length > 0 {
		if b.pending.Kind == kind && b.pending.End() == from {
			b.pending.Length += to - from
			return nil
		}
		if err := b.out(b.pending); err != nil {
			return err
		}
	}
	b.pending = archive.Extent{Offset: from, Length: to - from, Kind: kind}
	return nil
}

// DiscoverStats describes a delta discovery, for logs, benchmarks and
// delta-file headers.
type DiscoverStats struct {
	// Discovery is how the metadata was read: DiscoverNative or
	// DiscoverTools.
	Discovery Discovery
	// Tool is the program that read the metadata for DiscoverTools:
	// thin_delta or thin_dump; "" for DiscoverNative.
	Tool string
	// MetadataBytes is how much metadata the native reader read (0 for
	// the tools, which do not say).
	MetadataBytes int64
	Ranges        int64 // ranges the metadata reader reported (the tools': same included)
	Extents       int64 // extents after clipping and merging
	DataExtents   int64
	ZeroExtents   int64
	DataBytes     int64
	ZeroBytes     int64
	BlockSize     int64 // the pool's data block size in bytes
	SpoolBytes    int64 // size of the temporary extent list
	// ToolTime is how long reading the metadata took: the tool's run,
	// from start to exit (parsing runs concurrently on its output), or
	// the native reader's.
	ToolTime time.Duration
}

// spool writes extents to a temporary file, compactly (two varints per
// extent: the gap since the previous extent, and length<<1|zero), so that
// memory does not grow with the number of extents and the metadata
// snapshot can be released before the extents are used.
type spool struct {
	f       *os.File
	w       *bufio.Writer
	prevEnd int64
	stats   DiscoverStats
	buf     [2 * binary.MaxVarintLen64]byte
}

func newSpool(dir string) (*spool, error) {
	f, err := os.CreateTemp(dir, "thinback-extents-*")
	if err != nil {
		return nil, fmt.Errorf("extent spool: %w", err)
	}
	// Unlinked at once: nothing is left behind, whatever kills us.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("extent spool: %w", err)
	}
	return &spool{f: f, w: bufio.NewWriterSize(f, 64<<10)}, nil
}

func (s *spool) write(e archive.Extent) error {
	if e.Length <= 0 || e.Offset < s.prevEnd {
		return fmt.Errorf("extent spool: extent %+v after offset %d", e, s.prevEnd)
	}
	n := binary.PutUvarint(s.buf[:], uint64(e.Offset-s.prevEnd))
	lk := uint64(e.Length) << 1
	if e.Kind == archive.KindZero {
		lk |= 1
	}
	n += binary.PutUvarint(s.buf[n:], lk)
	if _, err := s.w.Write(s.buf[:n]); err != nil {
		return fmt.Errorf("extent spool: %w", err)
	}
	s.prevEnd = e.End()
	s.stats.Extents++
	s.stats.SpoolBytes += int64(n)
	if e.Kind == archive.KindZero {
		s.stats.ZeroExtents++
		s.stats.ZeroBytes += e.Length
	} else {
		s.stats.DataExtents++
		s.stats.DataBytes += e.Length
	}
	return nil
}

// finish turns the spool into an Extents positioned at the first extent.
func (s *spool) finish() (*Extents, error) {
	if err := s.w.Flush(); err != nil {
		return nil, fmt.Errorf("extent spool: %w", err)
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("extent spool: %w", err)
	}
	return &Extents{f: s.f, r: bufio.NewReaderSize(s.f, 64<<10), left: s.stats.Extents, stats: s.stats}, nil
}

func (s *spool) abort() { s.f.Close() }

// Extents is a discovered list of extents, read back in order from its
// temporary file. Next implements the extent half of archive.Source.
type Extents struct {
	f       *os.File
	r       *bufio.Reader
	prevEnd int64
	left    int64
	stats   DiscoverStats
	err     error
}

// Next returns the next extent, or io.EOF after the last.
func (x *Extents) Next() (archive.Extent, error) {
	if x.err != nil {
		return archive.Extent{}, x.err
	}
	if x.left == 0 {
		x.err = io.EOF
		return archive.Extent{}, io.EOF
	}
	gap, err := binary.ReadUvarint(x.r)
	var lk uint64
	if err == nil {
		lk, err = binary.ReadUvarint(x.r)
	}
	if err == nil && (gap > math.MaxInt64 || lk>>1 == 0 || lk>>1 > math.MaxInt64 ||
		int64(gap) > math.MaxInt64-x.prevEnd || int64(lk>>1) > math.MaxInt64-x.prevEnd-int64(gap)) {
		err = errors.New("corrupt record")
	}
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		x.err = fmt.Errorf("reading extent spool: %w", err)
		return archive.Extent{}, x.err
	}
	e := archive.Extent{Offset: x.prevEnd + int64(gap), Length: int64(lk >> 1), Kind: archive.KindData}
	if lk&1 != 0 {
		e.Kind = archive.KindZero
	}
	x.prevEnd = e.End()
	x.left--
	return e, nil
}

// Stats describes the discovery that produced the list.
func (x *Extents) Stats() DiscoverStats { return x.stats }

// Close removes the list.
func (x *Extents) Close() error {
	if x.f == nil {
		return nil
	}
	err := x.f.Close()
	x.f = nil
	if x.err == nil {
		x.err = errors.New("lvmthin: extents closed")
	}
	return err
}
