package thinxml

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strconv"
)

// RangeKind is what a range of thin_delta or thin_dump output says.
type RangeKind uint8

const (
	RangeSame      RangeKind = iota + 1 // mapped to the same block in both
	RangeDifferent                      // mapped in both, to different blocks
	RangeLeftOnly                       // mapped only in the older device
	RangeRightOnly                      // mapped only in the newer device
	RangeMapped                         // thin_dump: mapped in the device
)

func (k RangeKind) String() string {
	switch k {
	case RangeSame:
		return "same"
	case RangeDifferent:
		return "different"
	case RangeLeftOnly:
		return "left_only"
	case RangeRightOnly:
		return "right_only"
	case RangeMapped:
		return "mapping"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Device is a thin device's entry in the pool metadata (thin_dump's
// <device> element).
type Device struct {
	ID           uint32
	MappedBlocks uint64
	Transaction  uint64
	CreationTime uint64 // the pool's snapshot clock when the device was created
	SnapshotTime uint64 // ... when it was last snapshotted
}

// Handler receives what Scan finds, in document order. A nil function
// skips what it would get.
type Handler struct {
	// Superblock gets data_block_size (in 512-byte sectors) before any
	// range is reported.
	Superblock func(blockSectors uint64) error
	// Device gets every <device> element (thin_dump).
	Device func(Device) error
	// Range gets every range of a thin_delta <diff>, and every mapping of
	// the wanted device of a thin_dump (with <ref>s expanded), in blocks.
	Range func(kind RangeKind, begin, length uint64) error
}

// Options say which output Scan reads and what to check in it.
type Options struct {
	// For thin_delta output: the device ids the <diff> must name (0:
	// not checked).
	Left, Right uint32
	// Dump says the output is thin_dump's. DumpDev is the device whose
	// mappings are reported (the mappings of other devices are skipped);
	// if not 0, a dump without it fails with ErrNoDevice.
	DumpDev uint32
	Dump    bool
	// TempDir holds the spool of 1.x thin_dump <def> blocks ("" =
	// os.TempDir()).
	TempDir string
}

// maxBlockSectors is the kernel's largest thin-pool block size (1 GiB) in
// sectors (DATA_DEV_BLOCK_SIZE_MAX_SECTORS).
const maxBlockSectors = 2097152

// Scan parses thin_delta or thin_dump XML from r as it streams, in
// memory bounded by the size of one tag: nothing is kept per range. It
// understands thin-provisioning-tools 0.9 and 1.x output:
//   - thin_delta: <superblock><diff left right> with <same|different|
//     left_only|right_only begin length/> elements, or (--verbose) the same
//     names as groups of <range begin length .../> elements;
//   - thin_dump: <superblock><device dev_id ...> with <range_mapping
//     origin_begin length/> and <single_mapping origin_block/>, and (1.x)
//     shared runs defined once as <def name> ... </def> and used as
//     <ref name/>, which are spooled to a temporary file and expanded.
//
// Unknown elements and attributes are ignored, in any order, so later tool
// versions that add some still parse; missing required ones are errors.
//
// The tools' XML is machine-written and simple, and a general XML decoder
// spends most of discovery's time on it (it allocates for every token), so
// xmlReader reads the subset the tools write, without allocating per
// element. Input outside that subset is refused rather than guessed at
// (ErrMetadata, and the scanner's position): character data other than
// white space (the tools write attributes only), entity and character
// references, CDATA sections, DOCTYPE and other declarations, names that
// are not ASCII, a known attribute twice in one tag, a tag longer than
// MaxTag bytes and elements nested deeper than MaxDepth. Comments,
// processing instructions and a UTF-8 XML declaration are skipped. On
// everything else it reports what the encoding/xml parser it replaced
// did; the tests hold it to that parser (lvmthin/internal/xmlref keeps it).
//
// Output that does not make sense is an ErrMetadata naming the line and
// byte offset; a dump without the wanted device (Options.DumpDev) is an
// ErrNoDevice. An error of the handler is returned as it is, with the
// position.
func Scan(r io.Reader, opt Options, h Handler) error {
	// A large buffer: fewer reads of the pipe, and every tag fits in it.
	s := &xmlScanner{opt: opt, h: h}
	s.x.br = bufio.NewReaderSize(r, 256<<10)
	s.x.line = 1
	defer s.closeDefs()
	return s.scan()
}

// badf makes the error for output that does not make sense.
func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMetadata}, args...)...)
}

// xmlScanner gives the elements xmlReader finds their meaning in thin_delta
// or thin_dump output.
type xmlScanner struct {
	opt Options
	h   Handler
	x   xmlReader

	// stack holds the open elements; names holds the local names of the
	// unknown ones among them (known ones match by id).
	stack     []openElem
	names     []byte
	sawSB     bool
	sawDiff   bool
	sawDev    bool
	group     RangeKind // current --verbose group, 0 if none
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

// openElem is an element on the stack; an unknown element's name is
// names[nameAt:] up to the next element's nameAt.
type openElem struct {
	elem   xmlElem
	nameAt int
}

type defSpan struct{ off, end int64 }

func (s *xmlScanner) scan() error {
	x := &s.x
	for {
		tok, err := x.next()
		if err != nil {
			return err
		}
		switch tok {
		case tokStart:
			if len(s.stack) == MaxDepth {
				return x.tagErr(unsupportedf("<%s> nested deeper than %d elements", x.local, MaxDepth))
			}
			if err := s.start(x.elem); err != nil {
				return x.tagErr(fmt.Errorf("<%s>: %w", x.local, err))
			}
			if x.selfClose {
				if err := s.end(x.elem); err != nil {
					return x.tagErr(fmt.Errorf("<%s/>: %w", x.local, err))
				}
				continue
			}
			top := openElem{elem: x.elem, nameAt: len(s.names)}
			if x.elem == elemUnknown {
				s.names = append(s.names, x.local...)
			}
			s.stack = append(s.stack, top)
		case tokEnd:
			if !s.closes(x.elem, x.local) {
				return x.tagErr(badf("unexpected </%s>", x.local))
			}
			top := s.stack[len(s.stack)-1]
			s.stack = s.stack[:len(s.stack)-1]
			s.names = s.names[:top.nameAt]
			if err := s.end(x.elem); err != nil {
				return x.tagErr(fmt.Errorf("</%s>: %w", x.local, err))
			}
		case tokEOF:
			return s.finish()
		}
	}
}

// closes reports whether an end tag closes the innermost open element.
func (s *xmlScanner) closes(elem xmlElem, local []byte) bool {
	if len(s.stack) == 0 {
		return false
	}
	top := s.stack[len(s.stack)-1]
	return top.elem == elem && (elem != elemUnknown || string(s.names[top.nameAt:]) == string(local))
}

// finish checks the whole output once it has been read.
func (s *xmlScanner) finish() error {
	if n := len(s.stack); n != 0 {
		name := s.stack[n-1].elem.String()
		if s.stack[n-1].elem == elemUnknown {
			name = string(s.names[s.stack[n-1].nameAt:])
		}
		return s.x.errAt(len(s.x.win), badf("output ends inside <%s> (truncated)", name))
	}
	if !s.sawSB {
		return badf("no <superblock> in output")
	}
	if !s.opt.Dump && !s.sawDiff {
		return badf("no <diff> in output")
	}
	if s.opt.Dump && s.opt.DumpDev != 0 && !s.sawDev {
		return fmt.Errorf("thin device %d is not in the pool metadata: %w", s.opt.DumpDev, ErrNoDevice)
	}
	return nil
}

func (s *xmlScanner) start(elem xmlElem) error {
	x := &s.x
	if elem == elemSuperblock {
		if s.sawSB || len(s.stack) != 0 {
			return badf("second or nested superblock")
		}
		s.sawSB = true
		v, err := x.uintAttr(attrDataBlockSize, 32)
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
	switch kind := elem.rangeKind(); {
	case elem == elemDiff:
		if s.opt.Dump || s.sawDiff {
			return badf("unexpected <diff>")
		}
		s.sawDiff, s.inDiff = true, true
		if err := s.checkDevAttr(attrLeft, s.opt.Left); err != nil {
			return err
		}
		return s.checkDevAttr(attrRight, s.opt.Right)

	case s.inDiff && kind != 0:
		if s.group != 0 {
			return badf("range kind nested in another")
		}
		if !x.has(attrBegin) {
			s.group = kind // --verbose: a group of <range> elements
			return nil
		}
		return s.deltaRange(kind)

	case s.inDiff && elem == elemRange:
		if s.group == 0 {
			return badf("<range> outside a same/different/left_only/right_only group")
		}
		return s.deltaRange(s.group)

	case elem == elemDevice:
		if !s.opt.Dump || s.inDevice || s.inDef {
			return badf("unexpected <device>")
		}
		s.inDevice = true
		id, err := x.uintAttr(attrDevID, 32)
		if err != nil {
			return err
		}
		d := Device{ID: uint32(id)}
		// These are informational; absent or bad ones stay zero.
		d.MappedBlocks, _ = x.uintAttr(attrMappedBlocks, 64)
		d.Transaction, _ = x.uintAttr(attrTransaction, 64)
		d.CreationTime, _ = x.uintAttr(attrCreationTime, 64)
		d.SnapshotTime, _ = x.uintAttr(attrSnapTime, 64)
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

	case elem == elemDef:
		if !s.opt.Dump || s.inDevice || s.inDef {
			return badf("unexpected <def>")
		}
		n, ok := x.text(attrName)
		if !ok {
			return badf("<def> without name")
		}
		if _, dup := s.defs[string(n)]; dup {
			return badf("<def name=%q> defined twice", n)
		}
		s.inDef, s.defName = true, string(n)
		return s.beginDef()

	case elem == elemRangeMapping || elem == elemSingleMapping:
		if !s.inDevice && !s.inDef {
			return badf("mapping outside <device> or <def>")
		}
		var begin, length uint64
		var err error
		if elem == elemSingleMapping {
			begin, err = x.uintAttr(attrOriginBlock, 64)
			length = 1
		} else {
			begin, err = x.uintAttr(attrOriginBegin, 64)
			if err == nil {
				length, err = x.uintAttr(attrLength, 64)
			}
		}
		if err != nil {
			return err
		}
		return s.mapping(begin, length)

	case elem == elemRef:
		if !s.inDevice && !s.inDef {
			return badf("<ref> outside <device> or <def>")
		}
		n, ok := x.text(attrName)
		if !ok {
			return badf("<ref> without name")
		}
		return s.expandRef(n)
	}
	return nil // unknown element: ignored
}

func (s *xmlScanner) end(elem xmlElem) error {
	switch {
	case elem == elemDiff:
		s.inDiff = false
	case s.inDiff && elem.rangeKind() != 0:
		s.group = 0
	case elem == elemDevice:
		s.inDevice, s.wantedDev = false, false
	case elem == elemDef:
		s.inDef = false
		return s.endDef()
	}
	return nil
}

func (s *xmlScanner) deltaRange(kind RangeKind) error {
	begin, err := s.x.uintAttr(attrBegin, 64)
	if err != nil {
		return err
	}
	length, err := s.x.uintAttr(attrLength, 64)
	if err != nil {
		return err
	}
	if s.h.Range != nil {
		return s.h.Range(kind, begin, length)
	}
	return nil
}

// checkDevAttr checks that <diff> names the device asked for (a mix-up of
// ids would silently produce another volume's delta).
func (s *xmlScanner) checkDevAttr(a xmlAttr, want uint32) error {
	if want == 0 {
		return nil
	}
	got, err := s.x.uintAttr(a, 32)
	if err != nil {
		return err
	}
	if uint32(got) != want {
		return badf("diff %s=%d, asked for thin device %d", a, got, want)
	}
	return nil
}

// mapping routes a thin_dump mapping: into the def being spooled, to the
// handler if it belongs to the wanted device, or nowhere.
func (s *xmlScanner) mapping(begin, length uint64) error {
	if s.inDef {
		return s.spoolDef(begin, length)
	}
	if !s.wantedDev {
		return nil
	}
	if s.h.Range != nil {
		return s.h.Range(RangeMapped, begin, length)
	}
	return nil
}

// beginDef starts spooling a <def>. The spool is a temporary file that is
// unlinked at once, so it disappears with the process whatever happens.
func (s *xmlScanner) beginDef() error {
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

func (s *xmlScanner) spoolDef(begin, length uint64) error {
	n := binary.PutUvarint(s.varint[:], begin)
	n += binary.PutUvarint(s.varint[n:], length)
	if _, err := s.defW.Write(s.varint[:n]); err != nil {
		return err
	}
	s.defOff += int64(n)
	return nil
}

func (s *xmlScanner) endDef() error {
	s.defs[s.defName] = defSpan{off: s.defStart, end: s.defOff}
	return nil
}

// expandRef replays a spooled <def> in place of a <ref>, into the def being
// spooled (nested) or as mappings of the current device.
func (s *xmlScanner) expandRef(name []byte) error {
	span, ok := s.defs[string(name)]
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

func (s *xmlScanner) closeDefs() {
	if s.defFile != nil {
		s.defFile.Close()
	}
}
