package lvmthin

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/lvmtest"
)

// The differential tests hold scanXML to refScanXML, the encoding/xml
// parser it replaced: on the same input both must report the same
// superblock, devices and ranges and build the same extents, or both fail.
//
// scanXML reads a subset of XML, the one the thin tools write, and refuses
// on purpose, with errUnsupportedXML, some input that encoding/xml accepts
// and the tools never write. refusals lists it, from the reference's own
// reading of the input, so a refusal is checked both ways: scanXML may
// fail with errUnsupportedXML only where refusals allows it, and must fail
// where refusals requires it. The decisions:
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
//   - Tags are at most maxXMLTag bytes and elements nest at most
//     maxXMLDepth deep, so that memory does not depend on the input;
//     encoding/xml has no bound.
//   - Processing instructions are skipped, but an XML declaration must say
//     version 1.0 and UTF-8 in plain pseudo-attributes, if anything, and
//     the target must be an ASCII name within maxXMLTag bytes: one may be
//     refused where encoding/xml's loose reading accepts it.
//
// Both accept, alike: comments, namespace prefixes (local names match, as
// before), attributes without white space between them, single quotes,
// white space around '=', line ends \r\n and \r (in names too), numbers
// with leading zeros, and any UTF-8 text in the attributes neither reads.
//
// The other direction does not occur: scanXML accepts nothing that the
// reference refuses (compareOutcome fails a test that finds any).

// refusals says, from encoding/xml's tokens of data, why scanXML must
// refuse it (must) or may refuse it (may); "" if neither.
func refusals(data []byte) (must, may string) {
	// The attributes the reference reads (refAttr, refAttrUint).
	read := map[string]bool{"data_block_size": true, "left": true, "right": true, "begin": true,
		"length": true, "dev_id": true, "mapped_blocks": true, "transaction": true,
		"creation_time": true, "snap_time": true, "name": true, "origin_block": true, "origin_begin": true}
	ascii := func(names ...string) bool {
		for _, n := range names {
			for i := 0; i < len(n); i++ {
				if n[i] >= 0x80 {
					return false
				}
			}
		}
		return true
	}
	d := xml.NewDecoder(bytes.NewReader(data))
	depth := 0
	for {
		before := d.InputOffset()
		tok, err := d.RawToken()
		if err != nil {
			return must, may
		}
		raw := data[before:d.InputOffset()]
		why := ""
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			seen := map[string]bool{}
			for _, a := range t.Attr {
				if !ascii(a.Name.Space, a.Name.Local) {
					why = "a name that is not ASCII"
				}
				if read[a.Name.Local] && seen[a.Name.Local] {
					why = "an attribute twice"
				}
				seen[a.Name.Local] = true
			}
			switch {
			case !ascii(t.Name.Space, t.Name.Local):
				why = "a name that is not ASCII"
			case bytes.IndexByte(raw, '&') >= 0:
				why = "a reference in an attribute"
			case len(raw) > maxXMLTag:
				why = "a long tag"
			case depth > maxXMLDepth:
				why = "deep nesting"
			}
		case xml.EndElement:
			depth--
			switch {
			case !ascii(t.Name.Space, t.Name.Local):
				why = "a name that is not ASCII"
			case len(raw) > maxXMLTag:
				why = "a long tag"
			}
		case xml.CharData:
			if len(bytes.Trim(raw, " \t\r\n")) > 0 {
				why = "character data"
			}
		case xml.Directive:
			why = "a declaration"
		case xml.ProcInst:
			if may == "" {
				may = "a processing instruction"
			}
		}
		if must == "" {
			must = why
		}
	}
}

// xmlEvent is one call of an xmlHandler.
type xmlEvent struct {
	what   string // "superblock", "device" or a range kind
	n1, n2 uint64
	dev    DeviceDetails
}

func (e xmlEvent) String() string {
	if e.what == "device" {
		return fmt.Sprintf("device%+v", e.dev)
	}
	return fmt.Sprintf("%s(%d,%d)", e.what, e.n1, e.n2)
}

// recordScan runs a parser and records what it reports.
func recordScan(scan xmlScanFunc, r io.Reader, opt xmlScan) ([]xmlEvent, error) {
	var ev []xmlEvent
	err := scan(r, opt, xmlHandler{
		superblock: func(sectors uint64) error {
			ev = append(ev, xmlEvent{what: "superblock", n1: sectors})
			return nil
		},
		device: func(d DeviceDetails) error {
			ev = append(ev, xmlEvent{what: "device", dev: d})
			return nil
		},
		rng: func(kind rangeKind, begin, length uint64) error {
			ev = append(ev, xmlEvent{what: kind.String(), n1: begin, n2: length})
			return nil
		},
	})
	return ev, err
}

// chunkReader returns at most n bytes per Read (0: no limit), so that tags
// straddle the scanner's window.
type chunkReader struct {
	r io.Reader
	n int
}

func (c chunkReader) Read(p []byte) (int, error) {
	if c.n > 0 && len(p) > c.n {
		p = p[:c.n]
	}
	return c.r.Read(p)
}

// errClass is what callers can tell apart in a parser's error.
func errClass(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNotFound):
		return "ErrNotFound"
	case errors.Is(err, ErrMetadata):
		return "ErrMetadata"
	}
	return "other"
}

// compareOutcome checks scanXML's outcome (events or extents, and error)
// against the reference's on the same input; diff describes how the
// results differ, "" if not at all.
func compareOutcome(data []byte, refErr, newErr error, same, newIsPrefix bool) error {
	must, may := refusals(data)
	unsupported := errors.Is(newErr, errUnsupportedXML)
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
func checkScanAgainstReference(t testing.TB, data []byte, opt xmlScan, chunk int) {
	t.Helper()
	refEv, refErr := recordScan(refScanXML, bytes.NewReader(data), opt)
	newEv, newErr := recordScan(scanXML, chunkReader{bytes.NewReader(data), chunk}, opt)
	isPrefix := len(newEv) <= len(refEv) && slices.Equal(newEv, refEv[:len(newEv)])
	if err := compareOutcome(data, refErr, newErr, slices.Equal(newEv, refEv), isPrefix); err != nil {
		t.Fatalf("scanXML (options %+v, reads of %d bytes): %v\nscanXML   %v: %v\nreference %v: %v\ninput %q",
			opt, chunk, err, newErr, firstEvents(newEv), refErr, firstEvents(refEv), data)
	}
}

func firstEvents(ev []xmlEvent) string {
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
	refExt, refSt, refErr := parse(refScanXML, bytes.NewReader(data))
	newExt, newSt, newErr := parse(scanXML, chunkReader{bytes.NewReader(data), chunk})
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
	opt := xmlScan{tempDir: dir, dump: c.mode&1 != 0}
	if c.mode&2 != 0 {
		if opt.dump {
			opt.dumpDev = c.right
		} else {
			opt.left, opt.right = c.left, c.right
		}
	}
	checkScanAgainstReference(t, c.data, opt, int(c.chunk))

	if c.snapSize <= 0 || c.baseSize < 0 || c.right == 0 || !opt.dump && (c.left == 0 || c.left == c.right) {
		return // Discover refuses these before parsing
	}
	opts := DiscoverOptions{Snap: ThinDevice{ID: c.right, Size: c.snapSize}, TempDir: dir}
	if !opt.dump {
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

// FuzzScanXML compares scanXML with the encoding/xml parser it replaced,
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

// TestScanXMLDecisions shows, input by input, what the reference accepts
// and scanXML refuses on purpose, and what both accept.
func TestScanXMLDecisions(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">`
	delta := func(body string) string {
		return sb + `<diff left="1" right="2">` + body + `</diff></superblock>`
	}
	nest := func(depth int) string {
		// superblock and diff are two levels
		return delta(strings.Repeat("<x>", depth-2) + strings.Repeat("</x>", depth-2))
	}
	longTag := func(n int) string {
		tag := `<different begin="1" length="1" pad=""/>`
		return delta(strings.Replace(tag, `pad=""`, `pad="`+strings.Repeat("x", n-len(tag))+`"`, 1))
	}
	refused := []struct{ name, xml string }{
		{"text", delta(`hello<different begin="1" length="1"/>`)},
		{"text after the root", delta("") + "x"},
		{"byte order mark", "\ufeff" + delta("")},
		{"CDATA", delta(`<![CDATA[ ]]>`)},
		{"DOCTYPE", `<!DOCTYPE superblock>` + delta("")},
		{"character reference in a number", delta(`<different begin="&#49;" length="1"/>`)},
		{"entity in an ignored attribute", strings.Replace(delta(""), `uuid=""`, `uuid="&amp;"`, 1)},
		{"element name not ASCII", delta(`<é/>`)},
		{"attribute name not ASCII", delta(`<different begin="1" length="1" é="1"/>`)},
		{"attribute twice", delta(`<different begin="1" begin="9" length="1"/>`)},
		{"unread attribute twice, of another element", strings.Replace(delta(""), `uuid=""`, `length="1" length="2"`, 1)},
		{"tag too long", longTag(maxXMLTag + 1)},
		{"nested too deep", nest(maxXMLDepth + 1)},
		{"XML declaration with another pseudo-attribute", `<?xml version="1.0" foo="bar"?>` + delta("")},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			data := []byte(tt.xml)
			if _, err := recordScan(refScanXML, bytes.NewReader(data), xmlScan{left: 1, right: 2}); err != nil {
				t.Fatalf("the reference refuses it too: %v", err)
			}
			_, err := recordScan(scanXML, bytes.NewReader(data), xmlScan{left: 1, right: 2})
			if !errors.Is(err, errUnsupportedXML) || !errors.Is(err, ErrMetadata) {
				t.Fatalf("scanXML: %v, want errUnsupportedXML", err)
			}
			if must, may := refusals(data); must == "" && may == "" {
				t.Errorf("refusals does not allow the refusal")
			}
		})
	}
	ids, dump := xmlScan{left: 1, right: 2}, xmlScan{dump: true, dumpDev: 1}
	accepted := []struct {
		name, xml string
		opt       xmlScan
	}{
		{"comments", "<!-- a -->" + delta(`<!----><different begin="1" length="1"/><!-- - > -->`) + "<!-- b -->", ids},
		{"processing instructions", `<?xml version="1.0" encoding="UTF-8"?>` + "\n" + delta(`<?pi x>y?>`), ids},
		{"XML declaration, single quotes", `<?xml version = '1.0' standalone='yes' ?>` + delta(""), ids},
		{"unknown elements and attributes", delta(`<x a="1"><y/></x><different z="" begin="1" length="1" data_begin="5"/>`), ids},
		{"attribute order", delta(`<different length="1" begin="1"/>`), ids},
		{"namespace prefixes", delta(`<a:different b:begin="1" length="1"></c:different>`), ids},
		{"no space between attributes", delta(`<different begin="1"length="1"/>`), ids},
		{"quotes and spaces", delta("<different begin = '1'\n\tlength=\"1\" x='\"'/>"), ids},
		{"line ends", strings.ReplaceAll(delta(`<different begin="1" length="1"/>`), "><", ">\r\n<"), ids},
		{"UTF-8 and markup characters in an unread attribute", delta(`<different begin="1" length="1" x="é > '"/>`), ids},
		{"tag of the longest length", longTag(maxXMLTag), ids},
		{"nested to the deepest", nest(maxXMLDepth), ids},
		{"line ends in names", sb + "<def name=\"a\r\nb\"><single_mapping origin_block=\"7\"/></def>" +
			"<def name=\"c\rd\"/><device dev_id=\"1\"><ref name=\"a\nb\"/><ref name=\"c\nd\"/></device></superblock>", dump},
	}
	for _, tt := range accepted {
		t.Run("accepted/"+tt.name, func(t *testing.T) {
			data := []byte(tt.xml)
			tt.opt.tempDir = t.TempDir()
			refEv, err := recordScan(refScanXML, bytes.NewReader(data), tt.opt)
			if err != nil {
				t.Fatalf("reference: %v", err)
			}
			for _, chunk := range []int{0, 1, 5} {
				newEv, err := recordScan(scanXML, chunkReader{bytes.NewReader(data), chunk}, tt.opt)
				if err != nil {
					t.Fatalf("scanXML, reads of %d bytes: %v", chunk, err)
				}
				if !slices.Equal(newEv, refEv) {
					t.Fatalf("scanXML, reads of %d bytes: %v, reference %v", chunk, newEv, refEv)
				}
			}
			if must, _ := refusals(data); must != "" {
				t.Errorf("refusals requires a refusal: %s", must)
			}
		})
	}
}

// TestScanXMLMalformed checks that both parsers refuse broken output, with
// ErrMetadata.
func TestScanXMLMalformed(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">`
	delta := func(body string) string {
		return sb + `<diff left="1" right="2">` + body + `</diff></superblock>`
	}
	ids := xmlScan{left: 1, right: 2}
	tests := []struct {
		name, xml string
		opt       xmlScan
	}{
		{"truncated start tag", delta("") + "<x", ids},
		{"truncated in a value", sb + `<diff left="1`, ids},
		{"truncated end tag", delta("")[:len(delta(""))-2], ids},
		{"truncated comment", delta("") + "<!-- x -", ids},
		{"truncated processing instruction", delta("") + "<?pi x?", ids},
		{"truncated XML declaration", `<?xml version="1.0"`, ids},
		{"nothing after <", delta("") + "<", ids},
		{"bad number", delta(`<same begin="1" length="1 "/>`), ids},
		{"hex number", delta(`<same begin="0x1" length="1"/>`), ids},
		{"signed number", delta(`<same begin="+1" length="1"/>`), ids},
		{"empty number", delta(`<same begin="" length="1"/>`), ids},
		{"64-bit overflow", delta(`<same begin="18446744073709551616" length="1"/>`), ids},
		{"32-bit overflow", strings.Replace(delta(""), `left="1"`, `left="4294967297"`, 1), ids},
		{"32-bit overflow of dev_id", sb + `<device dev_id="4294967297"></device></superblock>`, xmlScan{dump: true, dumpDev: 1}},
		{"unbalanced nesting", delta("<x></y>"), ids},
		{"end tag without start", delta("</x>"), ids},
		{"unclosed element", sb + `<diff left="1" right="2"><x></diff></superblock>`, ids},
		{"missing data_block_size", `<superblock><diff left="1" right="2"/></superblock>`, ids},
		{"missing begin of a range", delta(`<same><range length="1"/></same>`), ids},
		{"missing dev_id", sb + `<device></device></superblock>`, xmlScan{dump: true}},
		{"missing name of a ref", sb + `<device dev_id="1"><ref/></device></superblock>`, xmlScan{dump: true}},
		{"unknown entity", delta(`<same begin="1" length="1" x="&bogus;"/>`), ids},
		{"entity without semicolon", delta(`<same begin="1" length="1" x="&amp"/>`), ids},
		{"unquoted value", delta(`<same begin=1 length="1"/>`), ids},
		{"attribute without value", delta(`<same begin length="1"/>`), ids},
		{"< in a value", delta(`<same begin="1" length="1" x="<"/>`), ids},
		{"control character in a value", delta("<same begin=\"1\" length=\"1\" x=\"\x01\"/>"), ids},
		{"invalid UTF-8 in a value", delta("<same begin=\"1\" length=\"1\" x=\"\xc3\"/>"), ids},
		{"two colons in a name", delta(`<a:b:c/>`), ids},
		{"name starting with a digit", delta(`<1x/>`), ids},
		{"space after <", delta(`< x/>`), ids},
		{"/ without >", delta(`<x/ >`), ids},
		{"-- in a comment", delta(`<!-- a -- b -->`), ids},
		{"<!- not a comment", delta(`<!- x -->`), ids},
		{"XML version 1.1", `<?xml version="1.1"?>` + delta(""), ids},
		{"XML declaration of another encoding", `<?xml version="1.0" encoding="ISO-8859-1"?>` + delta(""), ids},
		{"element after the root", delta("") + "<x/>", ids},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opt.tempDir = t.TempDir()
			data := []byte(tt.xml)
			if _, err := recordScan(refScanXML, bytes.NewReader(data), tt.opt); !errors.Is(err, ErrMetadata) {
				t.Errorf("reference: %v, want ErrMetadata", err)
			}
			for _, chunk := range []int{0, 1, 5} {
				if _, err := recordScan(scanXML, chunkReader{bytes.NewReader(data), chunk}, tt.opt); !errors.Is(err, ErrMetadata) {
					t.Errorf("scanXML, reads of %d bytes: %v, want ErrMetadata", chunk, err)
				}
			}
		})
	}
}

// TestScanXMLErrorPosition checks that errors say where the output went
// wrong.
func TestScanXMLErrorPosition(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">` + "\n"
	const diff = sb + `  <diff left="1" right="2">` + "\n" // 2 lines, 116 bytes
	tests := []struct {
		name, xml  string
		line       int
		off        int
		unexpected bool // not ErrMetadata but the handler's error
	}{
		{"bad number", diff + `    <same begin="1x" length="1"/>`, 3, len(diff) + 4, false},
		{"missing attribute", diff + "\n\n" + `<same begin="1"/>`, 5, len(diff) + 2, false},
		{"truncated tag", diff + `    <same begin="1" len`, 3, len(diff) + 4, false},
		{"truncated value", diff + `    <same begin="1`, 3, len(diff) + 4, false},
		{"unquoted value", diff + `<same begin=1 length="1"/>`, 3, len(diff) + 12, false},
		{"bad end tag", diff + "</diff\n x>", 4, len(diff) + 8, false},
		{"mismatched end tag", diff + "\n</same>", 4, len(diff) + 1, false},
		{"text", diff + "  \n  x", 4, len(diff) + 5, false},
		{"reference", diff + `<same begin="&#49;"`, 3, len(diff) + 13, false},
		{"invalid UTF-8", diff + "<same x=\"\n\xff\"", 4, len(diff) + 10, false},
		{"comment with --", diff + "<!-- a -- b -->", 3, len(diff) + 9, false},
		{"range out of order", diff + `<same begin="5" length="1"/>` + "\n" + `<same begin="1" length="1"/>`, 4, len(diff) + 29, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1, 7} {
				pos := int64(0)
				h := xmlHandler{rng: func(_ rangeKind, begin, length uint64) error {
					if begin < uint64(pos) {
						return errors.New("out of order")
					}
					pos = int64(begin + length)
					return nil
				}}
				err := scanXML(chunkReader{strings.NewReader(tt.xml), chunk}, xmlScan{left: 1, right: 2}, h)
				var xe *xmlError
				if !errors.As(err, &xe) {
					t.Fatalf("reads of %d bytes: error %v, want an *xmlError", chunk, err)
				}
				if xe.line != tt.line || xe.off != int64(tt.off) {
					t.Errorf("reads of %d bytes: %v: at line %d, byte %d, want line %d, byte %d", chunk, err, xe.line, xe.off, tt.line, tt.off)
				}
				if errors.Is(err, ErrMetadata) == tt.unexpected {
					t.Errorf("reads of %d bytes: %v: ErrMetadata is %v", chunk, err, !tt.unexpected)
				}
			}
		})
	}
}

// TestScanXMLReadError checks that a failing reader fails the scan with
// its error and ErrMetadata, wherever it fails.
func TestScanXMLReadError(t *testing.T) {
	data := readFixture(t, "delta-0.9.xml")
	boom := errors.New("boom")
	for n := 0; n < len(data); n++ {
		r := io.MultiReader(bytes.NewReader(data[:n]), &failingReader{boom})
		_, err := recordScan(scanXML, chunkReader{r, 5}, xmlScan{left: 2, right: 3})
		if !errors.Is(err, boom) || !errors.Is(err, ErrMetadata) {
			t.Fatalf("failing after %d bytes: %v", n, err)
		}
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

// TestScanXMLAllocs checks that scanXML does not allocate per element.
func TestScanXMLAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	small, large := genDeltaXML(r, 100, true), genDeltaXML(r, 20000, true)
	dump := genDumpXML(r, 20000)
	h := xmlHandler{rng: func(rangeKind, uint64, uint64) error { return nil }}
	allocs := func(data []byte, opt xmlScan) float64 {
		return testing.AllocsPerRun(3, func() {
			if err := scanXML(bytes.NewReader(data), opt, h); err != nil {
				t.Fatal(err)
			}
		})
	}
	a, b := allocs(small, xmlScan{left: 1, right: 2}), allocs(large, xmlScan{left: 1, right: 2})
	if b > a {
		t.Errorf("%v allocations for 100 ranges, %v for 20000", a, b)
	}
	if c := allocs(dump, xmlScan{dump: true, dumpDev: 2}); c > a {
		t.Errorf("%v allocations for 20000 mappings, %v for 100 ranges", c, a)
	}
}

// TestScanXMLBoundedMemory streams 256 MiB of output, much of it in one
// comment, one run of white space and one processing instruction, and a
// million ranges, through scanXML: what it allocates must not depend on
// the input.
func TestScanXMLBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 256 MiB")
	}
	const big = 64 << 20
	ranges := 0
	r := io.MultiReader(
		strings.NewReader(`<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0"><!--`),
		&repeatReader{s: "-x", n: big},
		strings.NewReader("-->"),
		&repeatReader{s: "\n", n: big},
		strings.NewReader(`<diff left="1" right="2"><?pi `),
		&repeatReader{s: "?", n: big},
		strings.NewReader(`?>`),
		// The reader's buffer is allocated here, outside the measurement.
		&rangeReader{n: 1 << 20, buf: make([]byte, 0, 1<<20)},
		strings.NewReader(`</diff></superblock>`),
	)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	err := scanXML(r, xmlScan{left: 1, right: 2}, xmlHandler{rng: func(rangeKind, uint64, uint64) error { ranges++; return nil }})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if ranges != 1<<20 {
		t.Fatalf("%d ranges", ranges)
	}
	// The window's buffer (256 KiB) and a few small things.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("scanXML allocated %d bytes", alloc)
	if alloc > 512<<10 {
		t.Errorf("scanXML allocated %d bytes", alloc)
	}
}

// repeatReader reads n bytes of s repeated.
type repeatReader struct {
	s   string
	n   int
	off int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.off == r.n {
		return 0, io.EOF
	}
	p = p[:min(len(p), r.n-r.off)]
	for i := range p {
		p[i] = r.s[(r.off+i)%len(r.s)]
	}
	r.off += len(p)
	return len(p), nil
}

// rangeReader reads n thin_delta ranges, without keeping them or
// allocating for each.
type rangeReader struct {
	n, i int
	buf  []byte
}

func (r *rangeReader) Read(p []byte) (int, error) {
	for len(r.buf) < len(p) && r.i < r.n {
		r.buf = append(r.buf, `    <different begin="`...)
		r.buf = strconv.AppendInt(r.buf, int64(2*r.i), 10)
		r.buf = append(r.buf, "\" length=\"1\"/>\n"...)
		r.i++
	}
	if len(r.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.buf)
	r.buf = r.buf[:copy(r.buf, r.buf[n:])]
	return n, nil
}
