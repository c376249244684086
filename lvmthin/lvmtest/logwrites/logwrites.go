// Package logwrites reads the log that the kernel's dm-log-writes target
// keeps of every write, flush and FUA that reached a device, and replays
// it onto a copy of the device's starting image, up to any entry: replayed
// up to each flush or FUA entry, it gives every state a power cut could
// have left on the device (the way filesystems and bbolt test themselves).
// It is test machinery for the real-kernel tests (see lvmtest); it imports
// nothing of thinback's.
//
// # The log
//
// The layout is the kernel's (drivers/md/dm-log-writes.c, described in
// Documentation/admin-guide/device-mapper/log-writes.rst). All integers
// are little-endian. The log is a sequence of sectors of the logged
// device's logical block size S:
//
//	sector 0:   super   = magic(8) || version(8) || nr_entries(8) || sectorsize(4)
//	sector 1…:  entry_1 || data_1 || entry_2 || data_2 || …
//	entry       = sector(8) || nr_sectors(8) || flags(8) || data_len(8) || mark, padded to S
//	data        = nr_sectors × S bytes written at byte sector × S of the device;
//	              absent for a discard (which covers nr_sectors) and a mark
//
// Sectors and counts are in units of S. Entries appear in the order the
// writes completed, except that writes which completed without a flush are
// logged only when the next flush completes, just before it: the log
// describes what was on stable storage, not in a cache. A flush entry
// (REQ_PREFLUSH) may carry data, which comes after the flush. A mark
// (dmsetup message DEV 0 mark NAME) carries its name in its entry sector
// (data_len bytes, at most S-33). The super's nr_entries is rewritten after
// each FUA or mark entry, and when the target is removed (which logs a
// last mark, "dm-log-writes-end").
package logwrites

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic and Version identify a log's super sector.
const (
	Magic   = 0x6a736677736872
	Version = 1
)

// Entry flags, as the kernel sets them.
const (
	FlagFlush    = 1 << 0 // REQ_PREFLUSH: everything logged before is on stable storage
	FlagFUA      = 1 << 1 // REQ_FUA: this write is on stable storage when it completes
	FlagDiscard  = 1 << 2 // a discard of NrSectors from Sector; no data follows
	FlagMark     = 1 << 3 // a mark added with "dmsetup message DEV 0 mark NAME"
	FlagMetadata = 1 << 4 // REQ_META: the filesystem says this is metadata
	knownFlags   = FlagFlush | FlagFUA | FlagDiscard | FlagMark | FlagMetadata
)

// EndMark is the mark the kernel logs when the target is removed.
const EndMark = "dm-log-writes-end"

const (
	superLen = 28
	entryLen = 32
	// maxSectorSize bounds the sector size read from a log: logical block
	// sizes are powers of two from 512 to the page size.
	maxSectorSize = 64 << 10
)

// Errors of reading a log. Test with errors.Is.
var (
	// ErrFormat: the log is not a dm-log-writes log, or an entry is
	// malformed (unknown flags, a mark too long, data on a discard).
	ErrFormat = errors.New("logwrites: not a valid dm-log-writes log")
	// ErrTruncated: the log ends before the entries its super counts.
	ErrTruncated = errors.New("logwrites: log truncated")
	// ErrRange: an entry writes outside the device being replayed onto.
	ErrRange = errors.New("logwrites: write outside the device")
)

// Entry is one logged write, flush, discard or mark.
type Entry struct {
	Index     int    // its position in the log, from 0
	Sector    uint64 // first sector written or discarded, in SectorSize units
	NrSectors uint64 // sectors written or discarded
	Flags     uint64
	Mark      string // a mark's name
	dataOff   int64  // byte offset of the data in the log
}

// Flushed reports whether the entry is a point where everything logged up
// to and including it is on stable storage: a flush or a FUA write.
func (e Entry) Flushed() bool { return e.Flags&(FlagFlush|FlagFUA) != 0 }

func (e Entry) String() string {
	var kind string
	switch {
	case e.Flags&FlagMark != 0:
		return fmt.Sprintf("#%d mark %q", e.Index, e.Mark)
	case e.Flags&FlagDiscard != 0:
		kind = "discard"
	case e.NrSectors == 0:
		kind = "flush"
	default:
		kind = "write"
	}
	for _, f := range []struct {
		bit  uint64
		name string
	}{{FlagFlush, "+flush"}, {FlagFUA, "+fua"}, {FlagMetadata, "+meta"}} {
		if e.Flags&f.bit != 0 && !(kind == "flush" && f.bit == FlagFlush) {
			kind += f.name
		}
	}
	return fmt.Sprintf("#%d %s sector %d count %d", e.Index, kind, e.Sector, e.NrSectors)
}

// Log is a parsed dm-log-writes log.
type Log struct {
	r          io.ReaderAt
	SectorSize int64
	Entries    []Entry
}

// Read parses the log in r, which is size bytes long. It reads the super
// and every entry header (not the data), checking that each entry and its
// data lie within size; nothing is allocated from a count read from the
// log before it is checked against size.
func Read(r io.ReaderAt, size int64) (*Log, error) {
	var sb [superLen]byte
	if size < superLen {
		return nil, fmt.Errorf("%w: %d bytes, shorter than its super sector", ErrTruncated, size)
	}
	if _, err := r.ReadAt(sb[:], 0); err != nil {
		return nil, fmt.Errorf("logwrites: reading the super sector: %w", err)
	}
	le := binary.LittleEndian
	if m := le.Uint64(sb[0:]); m != Magic {
		return nil, fmt.Errorf("%w: magic %#x, want %#x", ErrFormat, m, uint64(Magic))
	}
	if v := le.Uint64(sb[8:]); v != Version {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrFormat, v, Version)
	}
	n := le.Uint64(sb[16:])
	ss := int64(le.Uint32(sb[24:]))
	if ss < 512 || ss > maxSectorSize || ss&(ss-1) != 0 {
		return nil, fmt.Errorf("%w: sector size %d", ErrFormat, ss)
	}
	// Every entry takes at least one sector after the super.
	if room := uint64(size/ss) - 1; size/ss < 1 || n > room {
		return nil, fmt.Errorf("%w: the super counts %d entries, %d bytes hold at most %d", ErrTruncated, n, size, max(size/ss-1, 0))
	}
	l := &Log{r: r, SectorSize: ss, Entries: make([]Entry, 0, min(n, 4096))}
	buf := make([]byte, ss)
	off := ss
	for i := 0; uint64(i) < n; i++ {
		if off > size-ss {
			return nil, fmt.Errorf("%w: entry %d at byte %d, the log is %d bytes", ErrTruncated, i, off, size)
		}
		if _, err := r.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("logwrites: reading entry %d at byte %d: %w", i, off, err)
		}
		e := Entry{Index: i, Sector: le.Uint64(buf[0:]), NrSectors: le.Uint64(buf[8:]), Flags: le.Uint64(buf[16:])}
		dataLen := le.Uint64(buf[24:])
		off += ss
		if e.Flags&^knownFlags != 0 {
			return nil, fmt.Errorf("%w: entry %d at byte %d has unknown flags %#x", ErrFormat, i, off-ss, e.Flags&^knownFlags)
		}
		switch {
		case e.Flags&FlagMark != 0:
			if dataLen > uint64(ss-entryLen) || e.NrSectors != 0 {
				return nil, fmt.Errorf("%w: mark entry %d at byte %d: %d bytes of name, %d sectors", ErrFormat, i, off-ss, dataLen, e.NrSectors)
			}
			e.Mark = string(buf[entryLen : entryLen+dataLen])
			l.Entries = append(l.Entries, e)
			continue
		case dataLen != 0:
			// The kernel logs inline data only for marks.
			return nil, fmt.Errorf("%w: entry %d at byte %d has %d bytes of inline data", ErrFormat, i, off-ss, dataLen)
		case e.Flags&FlagDiscard != 0:
			if e.Flags&(FlagFlush|FlagFUA) != 0 {
				return nil, fmt.Errorf("%w: discard entry %d at byte %d is also a flush or FUA", ErrFormat, i, off-ss)
			}
			l.Entries = append(l.Entries, e)
			continue
		}
		if e.NrSectors > uint64((size-off)/ss) {
			return nil, fmt.Errorf("%w: entry %d at byte %d has %d sectors of data, the log ends at byte %d", ErrTruncated, i, off-ss, e.NrSectors, size)
		}
		e.dataOff = off
		off += int64(e.NrSectors) * ss
		l.Entries = append(l.Entries, e)
	}
	return l, nil
}

// Points returns the indexes of the flush and FUA entries, in order: the
// states a power cut could leave, each with every entry up to it replayed.
func (l *Log) Points() []int {
	var p []int
	for _, e := range l.Entries {
		if e.Flushed() {
			p = append(p, e.Index)
		}
	}
	return p
}

// Mark returns the index of the first mark named name.
func (l *Log) Mark(name string) (int, bool) {
	for _, e := range l.Entries {
		if e.Flags&FlagMark != 0 && e.Mark == name {
			return e.Index, true
		}
	}
	return 0, false
}

// Replayer writes a log's entries, in order, onto a copy of the device's
// starting image.
type Replayer struct {
	log  *Log
	dst  io.WriterAt
	size int64 // the device's size in bytes
	next int   // the first entry not yet replayed
	buf  []byte
}

// NewReplayer replays l onto dst, which holds the logged device's contents
// as they were when logging started and is size bytes long; an entry that
// writes past size is an error (ErrRange), not a grown file.
func NewReplayer(l *Log, dst io.WriterAt, size int64) *Replayer {
	return &Replayer{log: l, dst: dst, size: size}
}

// Next returns the index of the first entry not replayed yet.
func (p *Replayer) Next() int { return p.next }

// ReplayTo replays every entry up to and including entry i. Entries
// replayed already are not replayed again: the replay only goes forward.
func (p *Replayer) ReplayTo(i int) error {
	if i >= len(p.log.Entries) {
		return fmt.Errorf("logwrites: replay to entry %d of a log of %d entries", i, len(p.log.Entries))
	}
	if i < p.next-1 {
		return fmt.Errorf("logwrites: replay to entry %d, entries up to %d are replayed already", i, p.next-1)
	}
	if p.buf == nil {
		p.buf = make([]byte, 1<<20)
	}
	ss := p.log.SectorSize
	for ; p.next <= i; p.next++ {
		e := p.log.Entries[p.next]
		if e.Flags&FlagMark != 0 || e.NrSectors == 0 {
			continue
		}
		if e.Sector > uint64(p.size/ss) || e.NrSectors > uint64(p.size/ss)-e.Sector {
			return fmt.Errorf("%w: entry %d writes %d sectors at sector %d of a %d-byte device", ErrRange, e.Index, e.NrSectors, e.Sector, p.size)
		}
		at, n := int64(e.Sector)*ss, int64(e.NrSectors)*ss
		if e.Flags&FlagDiscard != 0 {
			// A discarded range is undefined; replay it as zeroes, as
			// xfstests' replay-log does on a device without discard.
			clear(p.buf)
		}
		for done := int64(0); done < n; {
			c := min(int64(len(p.buf)), n-done)
			if e.Flags&FlagDiscard == 0 {
				if _, err := p.log.r.ReadAt(p.buf[:c], e.dataOff+done); err != nil {
					return fmt.Errorf("logwrites: reading the data of entry %d at byte %d: %w", e.Index, e.dataOff+done, err)
				}
			}
			if _, err := p.dst.WriteAt(p.buf[:c], at+done); err != nil {
				return fmt.Errorf("logwrites: replaying entry %d at byte %d: %w", e.Index, at+done, err)
			}
			done += c
		}
	}
	return nil
}
