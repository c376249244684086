package lvmthin

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"slices"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/internal/xmlref"
	"github.com/thinback/thinback/lvmthin/lvmtest"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// The differential tests hold thinxml.Scan to xmlref.Scan, the encoding/xml
// parser it replaced: on the same input both must report the same
// superblock, devices and ranges and build the same extents, or both fail.
//
// thinxml.Scan reads a subset of XML, the one the thin tools write, and refuses
// on purpose, with thinxml.ErrUnsupported, some input that encoding/xml accepts
// and the tools never write. xmlref.Refusals lists it, from the reference's own
// reading of the input, so a refusal is checked both ways: thinxml.Scan may
// fail with thinxml.ErrUnsupported only where xmlref.Refusals allows it, and must fail
// where xmlref.Refusals requires it. The decisions:
//
//   - Non-blank character data, CDATA sections included, is refused: the
//     tools' formats have attributes only, so text means that the output
//     is not what we think, and skipping it would take an entity decoder
//     and UTF-8 checks on the fast path. (encoding/xml skips it.)
//   - Entity and character references in attribute values are refused:
//     the tools' values are numbers and names. encoding/xml decodes them,
//     so begin="&#49;" was block 1.
//   - DOCTYPE and other <!...> declarations are refused; encoding/xml
//     returns them as tokens and the old parser ignored them.
//   - Names (of elements, attributes, processing instructions) must be
//     ASCII; encoding/xml accepts any Unicode letters.
//   - An attribute named like one the parsers read (on any element) may
//     appear only once per tag: XML forbids repeats, and of two values
//     neither is clearly meant; encoding/xml keeps every copy and the old
//     parser took the first.
//   - Tags are at most thinxml.MaxTag bytes and elements nest at most
//     thinxml.MaxDepth deep, so that memory does not depend on the input;
//     encoding/xml has no bound.
//   - Processing instructions are skipped, but an XML declaration must say
//     version 1.0 and UTF-8 in plain pseudo-attributes, if anything, and
//     the target must be an ASCII name within thinxml.MaxTag bytes: one may be
//     refused where encoding/xml's loose reading accepts it.
//
// Both accept, alike: comments, namespace prefixes (local names match, as
// before), attributes without white space between them, single quotes,
// white space around '=', line ends \r\n and \r (in names too), numbers
// with leading zeros, and any UTF-8 text in the attributes neither reads.
//
// The other direction does not occur: thinxml.Scan accepts nothing that the
// reference refuses (compareOutcome fails a test that finds any).

// errClass is what callers can tell apart in a parser's error: thinxml's
// sentinels at the scan level, this package's once parseDelta returns them.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound), errors.Is(err, thinxml.ErrNoDevice):
		return "ErrNotFound"
	case errors.Is(err, ErrMetadata), errors.Is(err, thinxml.ErrMetadata):
		return "ErrMetadata"
	}
	return "other"
}

// compareOutcome checks thinxml.Scan's outcome (events or extents, and error)
// against the reference's on the same input; diff describes how the
// results differ, "" if not at all.
func compareOutcome(data []byte, refErr, newErr error, same, newIsPrefix bool) error {
	must, may := xmlref.Refusals(data)
	unsupported := errors.Is(newErr, thinxml.ErrUnsupported)
	switch {
	case refErr == nil && newErr == nil:
		if must != "" {
			return fmt.Errorf("accepted input with %s, which it must refuse", must)
		}
		if !same {
			return errors.New("results differ")
		}
	case newErr == nil:
		return fmt.Errorf("accepted what the reference refuses (%v)", refErr)
	case refErr == nil:
		if !unsupported || must == "" && may == "" {
			return fmt.Errorf("refused what the reference accepts: %v", newErr)
		}
		if !newIsPrefix {
			return fmt.Errorf("refused (%v) after reporting what the reference did not", newErr)
		}
	default:
		if errClass(newErr) != errClass(refErr) && !(unsupported && (must != "" || may != "")) {
			return fmt.Errorf("error %v (%s), the reference's %v (%s)", newErr, errClass(newErr), refErr, errClass(refErr))
		}
		if errClass(newErr) == "other" {
			return fmt.Errorf("unclassified error %v", newErr)
		}
		if !newIsPrefix {
			return fmt.Errorf("failed (%v) after reporting what the reference did not before it failed (%v)", newErr, refErr)
		}
	}
	return nil
}

// checkScanAgainstReference compares what both parsers report on data.
func checkScanAgainstReference(t testing.TB, data []byte, opt thinxml.Options, chunk int) {
	t.Helper()
	refEv, refErr := xmlref.Record(xmlref.Scan, bytes.NewReader(data), opt)
	newEv, newErr := xmlref.Record(thinxml.Scan, xmlref.ChunkReader{R: bytes.NewReader(data), N: chunk}, opt)
	isPrefix := len(newEv) <= len(refEv) && slices.Equal(newEv, refEv[:len(newEv)])
	if err := compareOutcome(data, refErr, newErr, slices.Equal(newEv, refEv), isPrefix); err != nil {
		t.Fatalf("scanXML (options %+v, reads of %d bytes): %v\nscanXML   %v: %v\nreference %v: %v\ninput %q",
			opt, chunk, err, newErr, firstEvents(newEv), refErr, firstEvents(refEv), data)
	}
}

func firstEvents(ev []xmlref.Event) string {
	if len(ev) > 8 {
		return fmt.Sprintf("%v ... (%d events)", ev[:8], len(ev))
	}
	return fmt.Sprint(ev)
}

// checkDeltaAgainstReference compares the extents that parseDelta builds
// with each parser.
func checkDeltaAgainstReference(t testing.TB, data []byte, opts DiscoverOptions, chunk int) {
	t.Helper()
	parse := func(scan xmlScanFunc, r io.Reader) ([]archive.Extent, DiscoverStats, error) {
		x, err := parseDeltaWith(scan, r, opts)
		if err != nil {
			return nil, DiscoverStats{}, err
		}
		defer x.Close()
		return collectExtents(t, x), x.Stats(), nil
	}
	refExt, refSt, refErr := parse(xmlref.Scan, bytes.NewReader(data))
	newExt, newSt, newErr := parse(thinxml.Scan, xmlref.ChunkReader{R: bytes.NewReader(data), N: chunk})
	same := reflect.DeepEqual(newExt, refExt) && newSt == refSt
	// Extents are built as ranges come, and none is kept after an error.
	if err := compareOutcome(data, refErr, newErr, same, true); err != nil {
		t.Fatalf("parseDelta (base %v, snapshot %v, reads of %d bytes): %v\nscanXML   %v %+v: %v\nreference %v %+v: %v\ninput %q",
			opts.Base, opts.Snap, chunk, err, newExt, newSt, newErr, refExt, refSt, refErr, data)
	}
}

// diffCase is one input and how to read it, as the fuzz target's
// arguments say.
type diffCase struct {
	data     []byte
	mode     uint8 // bit 0: thin_dump output; bit 1: check device ids
	left     uint32
	right    uint32 // for a dump: the wanted device
	chunk    uint8  // bytes per read, 0 for any
	baseSize int64
	snapSize int64
}

func (c diffCase) check(t testing.TB, dir string) {
	t.Helper()
	opt := thinxml.Options{TempDir: dir, Dump: c.mode&1 != 0}
	if c.mode&2 != 0 {
		if opt.Dump {
			opt.DumpDev = c.right
		} else {
			opt.Left, opt.Right = c.left, c.right
		}
	}
	checkScanAgainstReference(t, c.data, opt, int(c.chunk))

	if c.snapSize <= 0 || c.baseSize < 0 || c.right == 0 || !opt.Dump && (c.left == 0 || c.left == c.right) {
		return // Discover refuses these before parsing
	}
	opts := DiscoverOptions{Snap: ThinDevice{ID: c.right, Size: c.snapSize}, TempDir: dir}
	if !opt.Dump {
		opts.Base = &ThinDevice{ID: c.left, Size: c.baseSize}
	}
	checkDeltaAgainstReference(t, c.data, opts, int(c.chunk))
}

// diffSeeds returns the inputs the differential tests start from: the
// fixtures, and the real tools' output for random pools when the tools are
// installed.
func diffSeeds(t testing.TB, r *rand.Rand, blocks int) []diffCase {
	var seeds []diffCase
	n := int64(fixtureBlocks * fixtureUnit)
	for _, name := range []string{"delta-0.9.xml", "delta-0.9-verbose.xml", "delta-1.x.xml", "delta-1.x-verbose.xml"} {
		data := readFixture(t, name)
		seeds = append(seeds, diffCase{data, 2, 2, 3, 0, n, n}, diffCase{data, 0, 2, 3, 7, 64 * fixtureUnit, n + 512})
	}
	seeds = append(seeds, diffCase{readFixture(t, "delta-0.9-reverse.xml"), 2, 3, 2, 1, n, 150 * fixtureUnit})
	for _, name := range []string{"dump-0.9.xml", "dump-0.9-devices.xml", "dump-1.x-defs.xml"} {
		data := readFixture(t, name)
		seeds = append(seeds, diffCase{data, 3, 0, 3, 0, 0, n}, diffCase{data, 3, 0, 1, 5, 0, 201 * fixtureUnit},
			diffCase{data, 1, 0, 0, 3, 0, 0})
	}

	for _, p := range []string{"thin_restore", "thin_delta", "thin_dump"} {
		if _, err := exec.LookPath(p); err != nil {
			if lvmtest.RequireVM() {
				t.Fatalf("%s not found (install thin-provisioning-tools): THINBACK_REQUIRE_VM=1 needs it", p)
			}
			t.Logf("%s not found: seeds from the fixtures only", p)
			return seeds
		}
	}
	p := randomPair(r, blocks)
	meta := p.restore(t)
	size := int64(blocks) * int64(p.blockSectors) * 512
	tool := func(args ...string) []byte {
		out, err := exec.Command(args[0], append(args[1:], meta)...).Output()
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		return out
	}
	seeds = append(seeds,
		diffCase{tool("thin_delta", "--snap1", "1", "--snap2", "2"), 2, 1, 2, 0, size, size},
		diffCase{tool("thin_delta", "--verbose", "--snap1", "1", "--snap2", "2"), 2, 1, 2, 3, size / 2, size},
		diffCase{tool("thin_delta", "--snap1", "2", "--snap2", "1"), 2, 2, 1, 0, size, size / 3},
		diffCase{tool("thin_dump", "--dev-id", "2"), 3, 0, 2, 0, 0, size},
		diffCase{tool("thin_dump"), 3, 0, 1, 2, 0, size + 4096},
		diffCase{tool("thin_dump", "--skip-mappings"), 1, 0, 0, 0, 0, 0},
	)
	return seeds
}

// TestScanXMLToolOutputs compares the parsers on the real tools' output
// for random pools, read whole and in small pieces.
func TestScanXMLToolOutputs(t *testing.T) {
	r := testRand(t)
	dir := t.TempDir()
	for _, c := range diffSeeds(t, r, 3000) {
		for _, chunk := range []uint8{0, 1, 97} {
			c.chunk = chunk
			c.check(t, dir)
		}
	}
}

// TestScanXMLMutations compares the parsers on random mutations of the
// seeds, in every test run; FuzzScanXML searches further.
func TestScanXMLMutations(t *testing.T) {
	r := testRand(t)
	dir := t.TempDir()
	seeds := diffSeeds(t, r, 150)
	iters := 3000
	if testing.Short() {
		iters = 300
	}
	for i := 0; i < iters; i++ {
		c := seeds[r.IntN(len(seeds))]
		c.data = mutateXML(r, c.data)
		c.chunk = uint8(r.IntN(3) * r.IntN(40))
		if r.IntN(4) == 0 {
			c.mode ^= 2
		}
		c.check(t, dir)
	}
}

// xmlSnippets are what mutateXML inserts: pieces of XML the scanners must
// agree on, good and bad.
var xmlSnippets = []string{
	"<", ">", "/>", "</", "=", `"`, "'", "&", ";", "&amp;", "&#49;", "&lt;", "&bogus;", " ", "\n", "\r\n", "\r", "\t",
	"\x00", "\xff", "é", ":", "a:", "-", "--", "<!-- c -->", "<!---->", "<!-- a -- b -->", "<?pi x?>",
	`<?xml version="1.0" encoding="UTF-8"?>`, `<?xml version="1.1"?>`, `<?xml encoding="latin1"?>`,
	"<![CDATA[x]]>", "<!DOCTYPE superblock>", "]]>", "text", "<x/>", "<x>", "</x>", "<y>", "</y>", "<é/>", "<a:b/>",
	` x="1"`, ` begin="7"`, ` length="0"`, ` length="1"`, ` name="2317"`, ` dev_id="3"`, ` data_block_size="8"`,
	`<range begin="1" length="1"/>`, `<same>`, `</same>`, `<different begin="9" length="2"/>`, `<diff left="2" right="3">`,
	`<device dev_id="3">`, `</device>`, `<def name="n">`, `</def>`, `<ref name="2317"/>`, `<ref name="n"/>`,
	"<def name=\"a\r\nb\">", "<ref name=\"a\nb\"/>", "<ref name=\"a\r\"/>",
	`<single_mapping origin_block="300" data_block="1" time="0"/>`, "0", "9", "18446744073709551616", "4294967296", "-1", "+1",
}

// xmlNumbers replace numbers: the limits of 32 and 64 bits, leading
// zeros, and what is not a number.
var xmlNumbers = []string{"0", "1", "3", "4294967295", "4294967296", "4294967299", "18446744073709551615",
	"18446744073709551616", "99999999999999999999", "000000000000000000000000003", "00004294967296", "", "+3", "-3", " 3",
	"3 ", "0x3", "1_0", "3e0", "2097152", "2097153"}

// mutateXML changes data at random in one to three places: bytes replaced,
// snippets inserted, numbers replaced, spans deleted, repeated or moved, or
// the end cut off.
func mutateXML(r *rand.Rand, data []byte) []byte {
	b := slices.Clone(data)
	for n := 1 + r.IntN(3); n > 0; n-- {
		at := r.IntN(len(b) + 1)
		switch r.IntN(7) {
		case 6:
			// The next number (a run of digits) from at.
			i := at
			for i < len(b) && (b[i] < '0' || b[i] > '9') {
				i++
			}
			j := i
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			b = slices.Replace(b, i, j, []byte(xmlNumbers[r.IntN(len(xmlNumbers))])...)
		case 0:
			if at < len(b) {
				s := xmlSnippets[r.IntN(len(xmlSnippets))]
				b[at] = s[0]
			}
		case 1, 2:
			b = slices.Insert(b, at, []byte(xmlSnippets[r.IntN(len(xmlSnippets))])...)
		case 3:
			b = slices.Delete(b, at, min(len(b), at+1+r.IntN(20)))
		case 4:
			end := min(len(b), at+1+r.IntN(80))
			piece := slices.Clone(b[at:end])
			b = slices.Insert(b, r.IntN(len(b)+1), piece...)
		case 5:
			if r.IntN(3) == 0 {
				b = b[:at]
			}
		}
	}
	return b
}

// FuzzScanXML compares thinxml.Scan with the encoding/xml parser it replaced,
// on the events they report and the extents parseDelta builds from them.
func FuzzScanXML(f *testing.F) {
	for _, c := range diffSeeds(f, testRand(f), 120) {
		f.Add(c.data, c.mode, c.left, c.right, c.chunk, c.baseSize, c.snapSize)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, mode uint8, left, right uint32, chunk uint8, baseSize, snapSize int64) {
		diffCase{data, mode, left, right, chunk, baseSize, snapSize}.check(t, dir)
	})
}
