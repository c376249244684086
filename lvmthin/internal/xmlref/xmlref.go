// Package xmlref is what the tests of thinback's reading of thin tool XML
// share: Scan, the encoding/xml parser that thinxml.Scan replaced, kept as
// the reference the differential tests hold thinxml.Scan to (lvmthin's
// xmldiff_test.go, thinxml's tests); Refusals, the input thinxml.Scan
// refuses on purpose; Record, to compare what parsers report; and
// generators of the tools' output. Only tests import it.
package xmlref

// The reference's code is that of the encoding/xml version, renamed
// (ref...), and must stay so.

import (
	"bufio"
	"encoding/binary"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/thinback/thinback/lvmthin/thinxml"
)

// maxBlockSectors is the kernel's largest thin-pool block size (1 GiB) in
// sectors (DATA_DEV_BLOCK_SIZE_MAX_SECTORS).
const maxBlockSectors = 2097152

type defSpan struct{ off, end int64 }

// badf makes the error for output that does not make sense.
func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{thinxml.ErrMetadata}, args...)...)
}

var refDeltaKinds = map[string]thinxml.RangeKind{
	"same":       thinxml.RangeSame,
	"different":  thinxml.RangeDifferent,
	"left_only":  thinxml.RangeLeftOnly,
	"right_only": thinxml.RangeRightOnly,
}

// Scan parses thin_delta or thin_dump XML from r as a token stream, in
// memory bounded by the size of one element: nothing is kept per range. It
// understands thin-provisioning-tools 0.9 and 1.x output:
//   - thin_delta: <superblock><diff left right> with <same|different|
//     left_only|right_only begin length/> elements, or (--verbose) the same
//     names as groups of <range begin length .../> elements;
//   - thin_dump: <superblock><device dev_id ...> with <range_mapping
//     origin_begin length/> and <single_mapping origin_block/>, and (1.x)
//     shared runs defined once as <def name> ... </def> and used as
//     <ref name/>, which are spooled to a temporary file and expanded.
//
// Unknown elements and attributes are ignored, so later tool versions that
// add some still parse; missing required ones are errors.
func Scan(r io.Reader, opt thinxml.Options, h thinxml.Handler) error {
	// A larger buffer than the decoder's own 4 KiB: fewer reads of the pipe.
	s := &refScanner{opt: opt, h: h, dec: xml.NewDecoder(bufio.NewReaderSize(r, 256<<10))}
	defer s.refCloseDefs()
	return s.scan()
}

type refScanner struct {
	opt thinxml.Options
	h   thinxml.Handler
	dec *xml.Decoder

	stack     []string
	sawSB     bool
	sawDiff   bool
	sawDev    bool
	group     thinxml.RangeKind // current --verbose group, 0 if none
	inDiff    bool
	inDevice  bool
	wantedDev bool // inside the wanted <device>
	defName   string
	inDef     bool
	defs      map[string]defSpan
	defFile   *os.File
	defW      *bufio.Writer
	defR      *bufio.Reader
	defOff    int64
	defStart  int64
	varint    [2 * binary.MaxVarintLen64]byte
}

func (s *refScanner) scan() error {
	for {
		tok, err := s.dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return badf("%v", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if err := s.start(t); err != nil {
				return fmt.Errorf("<%s> at byte %d: %w", t.Name.Local, s.dec.InputOffset(), err)
			}
			s.stack = append(s.stack, t.Name.Local)
		case xml.EndElement:
			if len(s.stack) == 0 || s.stack[len(s.stack)-1] != t.Name.Local {
				return badf("unexpected </%s> at byte %d", t.Name.Local, s.dec.InputOffset())
			}
			s.stack = s.stack[:len(s.stack)-1]
			if err := s.end(t.Name.Local); err != nil {
				return err
			}
		case xml.CharData, xml.Comment, xml.ProcInst, xml.Directive:
		}
	}
	if len(s.stack) != 0 {
		return badf("output ends inside <%s> (truncated)", s.stack[len(s.stack)-1])
	}
	if !s.sawSB {
		return badf("no <superblock> in output")
	}
	if !s.opt.Dump && !s.sawDiff {
		return badf("no <diff> in output")
	}
	if s.opt.Dump && s.opt.DumpDev != 0 && !s.sawDev {
		return fmt.Errorf("thin device %d is not in the pool metadata: %w", s.opt.DumpDev, thinxml.ErrNoDevice)
	}
	return nil
}

func (s *refScanner) start(t xml.StartElement) error {
	name := t.Name.Local
	if name == "superblock" {
		if s.sawSB || len(s.stack) != 0 {
			return badf("second or nested superblock")
		}
		s.sawSB = true
		v, err := refAttrUint(t, "data_block_size", 32)
		if err != nil {
			return err
		}
		if v == 0 || v > maxBlockSectors {
			return badf("data_block_size %d out of range 1..%d sectors", v, maxBlockSectors)
		}
		if s.h.Superblock != nil {
			return s.h.Superblock(v)
		}
		return nil
	}
	if len(s.stack) == 0 {
		return badf("element outside <superblock>")
	}
	switch {
	case name == "diff":
		if s.opt.Dump || s.sawDiff {
			return badf("unexpected <diff>")
		}
		s.sawDiff, s.inDiff = true, true
		if err := refCheckDevAttr(t, "left", s.opt.Left); err != nil {
			return err
		}
		return refCheckDevAttr(t, "right", s.opt.Right)

	case s.inDiff && refDeltaKinds[name] != 0:
		kind := refDeltaKinds[name]
		if s.group != 0 {
			return badf("range kind nested in another")
		}
		if !refHasAttr(t, "begin") {
			s.group = kind // --verbose: a group of <range> elements
			return nil
		}
		return s.deltaRange(t, kind)

	case s.inDiff && name == "range":
		if s.group == 0 {
			return badf("<range> outside a same/different/left_only/right_only group")
		}
		return s.deltaRange(t, s.group)

	case name == "device":
		if !s.opt.Dump || s.inDevice || s.inDef {
			return badf("unexpected <device>")
		}
		s.inDevice = true
		id, err := refAttrUint(t, "dev_id", 32)
		if err != nil {
			return err
		}
		d := thinxml.Device{ID: uint32(id)}
		// These are informational; absent ones stay zero.
		d.MappedBlocks, _ = refAttrUint(t, "mapped_blocks", 64)
		d.Transaction, _ = refAttrUint(t, "transaction", 64)
		d.CreationTime, _ = refAttrUint(t, "creation_time", 64)
		d.SnapshotTime, _ = refAttrUint(t, "snap_time", 64)
		if s.h.Device != nil {
			if err := s.h.Device(d); err != nil {
				return err
			}
		}
		if s.opt.DumpDev != 0 && d.ID == s.opt.DumpDev {
			if s.sawDev {
				return badf("thin device %d appears twice", d.ID)
			}
			s.sawDev, s.wantedDev = true, true
		}
		return nil

	case name == "def":
		if !s.opt.Dump || s.inDevice || s.inDef {
			return badf("unexpected <def>")
		}
		n, ok := refAttr(t, "name")
		if !ok {
			return badf("<def> without name")
		}
		if _, dup := s.defs[n]; dup {
			return badf("<def name=%q> defined twice", n)
		}
		s.inDef, s.defName = true, n
		return s.beginDef()

	case name == "range_mapping" || name == "single_mapping":
		if !s.inDevice && !s.inDef {
			return badf("mapping outside <device> or <def>")
		}
		var begin, length uint64
		var err error
		if name == "single_mapping" {
			begin, err = refAttrUint(t, "origin_block", 64)
			length = 1
		} else {
			begin, err = refAttrUint(t, "origin_begin", 64)
			if err == nil {
				length, err = refAttrUint(t, "length", 64)
			}
		}
		if err != nil {
			return err
		}
		return s.mapping(begin, length)

	case name == "ref":
		if !s.inDevice && !s.inDef {
			return badf("<ref> outside <device> or <def>")
		}
		n, ok := refAttr(t, "name")
		if !ok {
			return badf("<ref> without name")
		}
		return s.expandRef(n)
	}
	return nil // unknown element: ignored
}

func (s *refScanner) end(name string) error {
	switch {
	case name == "diff":
		s.inDiff = false
	case s.inDiff && refDeltaKinds[name] != 0:
		s.group = 0
	case name == "device":
		s.inDevice, s.wantedDev = false, false
	case name == "def":
		s.inDef = false
		return s.endDef()
	}
	return nil
}

func (s *refScanner) deltaRange(t xml.StartElement, kind thinxml.RangeKind) error {
	begin, err := refAttrUint(t, "begin", 64)
	if err != nil {
		return err
	}
	length, err := refAttrUint(t, "length", 64)
	if err != nil {
		return err
	}
	if s.h.Range != nil {
		return s.h.Range(kind, begin, length)
	}
	return nil
}

// mapping routes a thin_dump mapping: into the def being spooled, to the
// handler if it belongs to the wanted device, or nowhere.
func (s *refScanner) mapping(begin, length uint64) error {
	if s.inDef {
		return s.spoolDef(begin, length)
	}
	if !s.wantedDev {
		return nil
	}
	if s.h.Range != nil {
		return s.h.Range(thinxml.RangeMapped, begin, length)
	}
	return nil
}

// beginDef starts spooling a <def>. The spool is a temporary file that is
// unlinked at once, so it disappears with the process whatever happens.
func (s *refScanner) beginDef() error {
	if s.defFile == nil {
		f, err := os.CreateTemp(s.opt.TempDir, "thinback-defs-*")
		if err != nil {
			return err
		}
		_ = os.Remove(f.Name())
		s.defFile = f
		s.defW = bufio.NewWriterSize(f, 64<<10)
		s.defs = map[string]defSpan{}
	}
	s.defStart = s.defOff
	return nil
}

func (s *refScanner) spoolDef(begin, length uint64) error {
	n := binary.PutUvarint(s.varint[:], begin)
	n += binary.PutUvarint(s.varint[n:], length)
	if _, err := s.defW.Write(s.varint[:n]); err != nil {
		return err
	}
	s.defOff += int64(n)
	return nil
}

func (s *refScanner) endDef() error {
	s.defs[s.defName] = defSpan{off: s.defStart, end: s.defOff}
	return nil
}

// expandRef replays a spooled <def> in place of a <ref>, into the def being
// spooled (nested) or as mappings of the current device.
func (s *refScanner) expandRef(name string) error {
	span, ok := s.defs[name]
	if !ok {
		return badf("<ref name=%q> to an undefined <def>", name)
	}
	if !s.inDef && !s.wantedDev {
		return nil
	}
	if err := s.defW.Flush(); err != nil {
		return err
	}
	sr := io.NewSectionReader(s.defFile, span.off, span.end-span.off)
	if s.defR == nil {
		s.defR = bufio.NewReaderSize(sr, 64<<10)
	} else {
		s.defR.Reset(sr)
	}
	for {
		begin, err := binary.ReadUvarint(s.defR)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading spooled <def name=%q>: %w", name, err)
		}
		length, err := binary.ReadUvarint(s.defR)
		if err != nil {
			return fmt.Errorf("reading spooled <def name=%q>: %w", name, err)
		}
		if err := s.mapping(begin, length); err != nil {
			return err
		}
	}
}

func (s *refScanner) refCloseDefs() {
	if s.defFile != nil {
		s.defFile.Close()
	}
}

func refAttr(t xml.StartElement, name string) (string, bool) {
	for _, a := range t.Attr {
		if a.Name.Local == name {
			return a.Value, true
		}
	}
	return "", false
}

func refHasAttr(t xml.StartElement, name string) bool {
	_, ok := refAttr(t, name)
	return ok
}

func refAttrUint(t xml.StartElement, name string, bits int) (uint64, error) {
	v, ok := refAttr(t, name)
	if !ok {
		return 0, badf("missing attribute %s", name)
	}
	n, err := strconv.ParseUint(v, 10, bits)
	if err != nil {
		return 0, badf("attribute %s=%q: not a %d-bit number", name, v, bits)
	}
	return n, nil
}

// checkDevAttr checks that <diff> names the device asked for (a mix-up of
// ids would silently produce another volume's delta).
func refCheckDevAttr(t xml.StartElement, name string, want uint32) error {
	if want == 0 {
		return nil
	}
	got, err := refAttrUint(t, name, 32)
	if err != nil {
		return err
	}
	if uint32(got) != want {
		return badf("diff %s=%d, asked for thin device %d", name, got, want)
	}
	return nil
}
