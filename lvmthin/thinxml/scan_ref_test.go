package thinxml_test

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/thinback/thinback/lvmthin/internal/xmlref"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// benchRanges is the size of the benchmark outputs: as many ranges as
// thin_delta prints for 2 M mappings with half of them rewritten at random.
const benchRanges = 1 << 20

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "lvm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestScanDevices reads the <device> elements of a thin_dump.
func TestScanDevices(t *testing.T) {
	got := map[uint32]thinxml.Device{}
	err := thinxml.Scan(bytes.NewReader(readFixture(t, "dump-0.9-devices.xml")), thinxml.Options{Dump: true},
		thinxml.Handler{Device: func(d thinxml.Device) error { got[d.ID] = d; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]thinxml.Device{
		1: {ID: 1, MappedBlocks: 15, Transaction: 0, CreationTime: 0, SnapshotTime: 2},
		2: {ID: 2, MappedBlocks: 11, Transaction: 1, CreationTime: 1, SnapshotTime: 1},
		3: {ID: 3, MappedBlocks: 15, Transaction: 2, CreationTime: 2, SnapshotTime: 2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// TestScanNoDevice: a dump without the wanted device is ErrNoDevice, not
// ErrMetadata, after the mappings of the devices it has; the reference
// says the same.
func TestScanNoDevice(t *testing.T) {
	data := readFixture(t, "dump-0.9.xml")
	for _, scan := range []func(io.Reader, thinxml.Options, thinxml.Handler) error{thinxml.Scan, xmlref.Scan} {
		ranges := 0
		err := scan(bytes.NewReader(data), thinxml.Options{Dump: true, DumpDev: 9, TempDir: t.TempDir()},
			thinxml.Handler{Range: func(thinxml.RangeKind, uint64, uint64) error { ranges++; return nil }})
		if !errors.Is(err, thinxml.ErrNoDevice) || errors.Is(err, thinxml.ErrMetadata) {
			t.Fatalf("error %v, want ErrNoDevice alone", err)
		}
		if ranges != 0 {
			t.Errorf("%d ranges of other devices reported", ranges)
		}
	}
}

// TestScanXMLDecisions shows, input by input, what the reference accepts
// and thinxml.Scan refuses on purpose, and what both accept.
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
		{"tag too long", longTag(thinxml.MaxTag + 1)},
		{"nested too deep", nest(thinxml.MaxDepth + 1)},
		{"XML declaration with another pseudo-attribute", `<?xml version="1.0" foo="bar"?>` + delta("")},
	}
	for _, tt := range refused {
		t.Run("refused/"+tt.name, func(t *testing.T) {
			data := []byte(tt.xml)
			if _, err := xmlref.Record(xmlref.Scan, bytes.NewReader(data), thinxml.Options{Left: 1, Right: 2}); err != nil {
				t.Fatalf("the reference refuses it too: %v", err)
			}
			_, err := xmlref.Record(thinxml.Scan, bytes.NewReader(data), thinxml.Options{Left: 1, Right: 2})
			if !errors.Is(err, thinxml.ErrUnsupported) || !errors.Is(err, thinxml.ErrMetadata) {
				t.Fatalf("Scan: %v, want thinxml.ErrUnsupported", err)
			}
			if must, may := xmlref.Refusals(data); must == "" && may == "" {
				t.Errorf("xmlref.Refusals does not allow the refusal")
			}
		})
	}
	ids, dump := thinxml.Options{Left: 1, Right: 2}, thinxml.Options{Dump: true, DumpDev: 1}
	accepted := []struct {
		name, xml string
		opt       thinxml.Options
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
		{"tag of the longest length", longTag(thinxml.MaxTag), ids},
		{"nested to the deepest", nest(thinxml.MaxDepth), ids},
		{"line ends in names", sb + "<def name=\"a\r\nb\"><single_mapping origin_block=\"7\"/></def>" +
			"<def name=\"c\rd\"/><device dev_id=\"1\"><ref name=\"a\nb\"/><ref name=\"c\nd\"/></device></superblock>", dump},
	}
	for _, tt := range accepted {
		t.Run("accepted/"+tt.name, func(t *testing.T) {
			data := []byte(tt.xml)
			tt.opt.TempDir = t.TempDir()
			refEv, err := xmlref.Record(xmlref.Scan, bytes.NewReader(data), tt.opt)
			if err != nil {
				t.Fatalf("reference: %v", err)
			}
			for _, chunk := range []int{0, 1, 5} {
				newEv, err := xmlref.Record(thinxml.Scan, xmlref.ChunkReader{R: bytes.NewReader(data), N: chunk}, tt.opt)
				if err != nil {
					t.Fatalf("Scan, reads of %d bytes: %v", chunk, err)
				}
				if !slices.Equal(newEv, refEv) {
					t.Fatalf("Scan, reads of %d bytes: %v, reference %v", chunk, newEv, refEv)
				}
			}
			if must, _ := xmlref.Refusals(data); must != "" {
				t.Errorf("xmlref.Refusals requires a refusal: %s", must)
			}
		})
	}
}

// TestScanXMLMalformed checks that both parsers refuse broken output, with
// thinxml.ErrMetadata.
func TestScanXMLMalformed(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">`
	delta := func(body string) string {
		return sb + `<diff left="1" right="2">` + body + `</diff></superblock>`
	}
	ids := thinxml.Options{Left: 1, Right: 2}
	tests := []struct {
		name, xml string
		opt       thinxml.Options
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
		{"32-bit overflow of dev_id", sb + `<device dev_id="4294967297"></device></superblock>`, thinxml.Options{Dump: true, DumpDev: 1}},
		{"unbalanced nesting", delta("<x></y>"), ids},
		{"end tag without start", delta("</x>"), ids},
		{"unclosed element", sb + `<diff left="1" right="2"><x></diff></superblock>`, ids},
		{"missing data_block_size", `<superblock><diff left="1" right="2"/></superblock>`, ids},
		{"missing begin of a range", delta(`<same><range length="1"/></same>`), ids},
		{"missing dev_id", sb + `<device></device></superblock>`, thinxml.Options{Dump: true}},
		{"missing name of a ref", sb + `<device dev_id="1"><ref/></device></superblock>`, thinxml.Options{Dump: true}},
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
			tt.opt.TempDir = t.TempDir()
			data := []byte(tt.xml)
			if _, err := xmlref.Record(xmlref.Scan, bytes.NewReader(data), tt.opt); !errors.Is(err, thinxml.ErrMetadata) {
				t.Errorf("reference: %v, want thinxml.ErrMetadata", err)
			}
			for _, chunk := range []int{0, 1, 5} {
				if _, err := xmlref.Record(thinxml.Scan, xmlref.ChunkReader{R: bytes.NewReader(data), N: chunk}, tt.opt); !errors.Is(err, thinxml.ErrMetadata) {
					t.Errorf("Scan, reads of %d bytes: %v, want thinxml.ErrMetadata", chunk, err)
				}
			}
		})
	}
}

// TestScanXMLReadError checks that a failing reader fails the scan with
// its error and thinxml.ErrMetadata, wherever it fails.
func TestScanXMLReadError(t *testing.T) {
	data := readFixture(t, "delta-0.9.xml")
	boom := errors.New("boom")
	for n := 0; n < len(data); n++ {
		r := io.MultiReader(bytes.NewReader(data[:n]), &failingReader{boom})
		_, err := xmlref.Record(thinxml.Scan, xmlref.ChunkReader{R: r, N: 5}, thinxml.Options{Left: 2, Right: 3})
		if !errors.Is(err, boom) || !errors.Is(err, thinxml.ErrMetadata) {
			t.Fatalf("failing after %d bytes: %v", n, err)
		}
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

// TestScanXMLAllocs checks that thinxml.Scan does not allocate per element.
func TestScanXMLAllocs(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	small, large := xmlref.GenDelta(r, 100, true), xmlref.GenDelta(r, 20000, true)
	dump := xmlref.GenDump(r, 20000)
	h := thinxml.Handler{Range: func(thinxml.RangeKind, uint64, uint64) error { return nil }}
	allocs := func(data []byte, opt thinxml.Options) float64 {
		return testing.AllocsPerRun(3, func() {
			if err := thinxml.Scan(bytes.NewReader(data), opt, h); err != nil {
				t.Fatal(err)
			}
		})
	}
	a, b := allocs(small, thinxml.Options{Left: 1, Right: 2}), allocs(large, thinxml.Options{Left: 1, Right: 2})
	if b > a {
		t.Errorf("%v allocations for 100 ranges, %v for 20000", a, b)
	}
	if c := allocs(dump, thinxml.Options{Dump: true, DumpDev: 2}); c > a {
		t.Errorf("%v allocations for 20000 mappings, %v for 100 ranges", c, a)
	}
}

// TestScanXMLBoundedMemory streams 256 MiB of output, much of it in one
// comment, one run of white space and one processing instruction, and a
// million ranges, through thinxml.Scan: what it allocates must not depend on
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
	err := thinxml.Scan(r, thinxml.Options{Left: 1, Right: 2}, thinxml.Handler{Range: func(thinxml.RangeKind, uint64, uint64) error { ranges++; return nil }})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if ranges != 1<<20 {
		t.Fatalf("%d ranges", ranges)
	}
	// The window's buffer (256 KiB) and a few small things.
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("Scan allocated %d bytes", alloc)
	if alloc > 512<<10 {
		t.Errorf("Scan allocated %d bytes", alloc)
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

// BenchmarkScanXML compares thinxml.Scan with the encoding/xml parser it
// replaced (xmlref.Scan) on large outputs, parsing only: the handler counts
// the ranges.
func BenchmarkScanXML(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := []struct {
		name string
		data []byte
		opt  thinxml.Options
	}{
		{"delta", xmlref.GenDelta(r, benchRanges, false), thinxml.Options{Left: 1, Right: 2}},
		{"delta-verbose", xmlref.GenDelta(r, benchRanges, true), thinxml.Options{Left: 1, Right: 2}},
		{"dump", xmlref.GenDump(r, benchRanges), thinxml.Options{Dump: true, DumpDev: 2}},
	}
	parsers := []struct {
		name string
		scan func(io.Reader, thinxml.Options, thinxml.Handler) error
	}{{"scanXML", thinxml.Scan}, {"encoding-xml", xmlref.Scan}}
	for _, in := range inputs {
		for _, p := range parsers {
			b.Run(in.name+"/"+p.name, func(b *testing.B) {
				var ranges int
				h := thinxml.Handler{Range: func(thinxml.RangeKind, uint64, uint64) error { ranges++; return nil }}
				b.SetBytes(int64(len(in.data)))
				b.ReportAllocs()
				for b.Loop() {
					ranges = 0
					if err := p.scan(bytes.NewReader(in.data), in.opt, h); err != nil {
						b.Fatal(err)
					}
					if ranges != benchRanges {
						b.Fatalf("%d ranges, want %d", ranges, benchRanges)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRanges), "ns/range")
			})
		}
	}
}
