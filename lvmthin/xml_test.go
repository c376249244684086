package lvmthin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
)

const (
	fixtureUnit   = 64 << 10 // data_block_size 128 sectors
	fixtureBlocks = 1024     // the fixtures' LVs are 64 MiB
)

func readFixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", "lvm", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func parseFixture(t testing.TB, data []byte, opts DiscoverOptions) ([]archive.Extent, DiscoverStats, error) {
	t.Helper()
	opts.TempDir = t.TempDir()
	x, err := parseDelta(bytes.NewReader(data), opts)
	if err != nil {
		return nil, DiscoverStats{}, err
	}
	defer x.Close()
	return collectExtents(t, x), x.Stats(), nil
}

func incr(left, right uint32, baseBlocks, snapBlocks int64) DiscoverOptions {
	return DiscoverOptions{
		Base: &ThinDevice{ID: left, Size: baseBlocks * fixtureUnit},
		Snap: ThinDevice{ID: right, Size: snapBlocks * fixtureUnit},
	}
}

func full(id uint32, blocks int64) DiscoverOptions {
	return DiscoverOptions{Snap: ThinDevice{ID: id, Size: blocks * fixtureUnit}}
}

func TestParseDeltaFixtures(t *testing.T) {
	n := int64(fixtureBlocks)
	tests := []struct {
		file string
		opts DiscoverOptions
		want []archive.Extent
	}{
		// different → data, left_only (discarded) → zero, right_only →
		// data, same skipped.
		{"delta-0.9.xml", incr(2, 3, n, n), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101), ext(D, 200, 205)}},
		{"delta-0.9-verbose.xml", incr(2, 3, n, n), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101), ext(D, 200, 205)}},
		{"delta-1.x.xml", incr(2, 3, n, n), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101), ext(D, 200, 205)}},
		{"delta-1.x-verbose.xml", incr(2, 3, n, n), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101), ext(D, 200, 205)}},
		{"delta-0.9-reverse.xml", incr(3, 2, n, n), []archive.Extent{ext(D, 1, 2), ext(D, 100, 101), ext(Z, 200, 205)}},
		// Shrunk to 150 blocks: the range at 200 lies past the end.
		{"delta-0.9.xml", incr(2, 3, n, 150), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101)}},
		// Shrunk to 202 blocks: the range at 200 is cut.
		{"delta-0.9.xml", incr(2, 3, n, 202), []archive.Extent{ext(D, 1, 2), ext(Z, 100, 101), ext(D, 200, 202)}},
		// Grown from 64 blocks: everything past block 64 is described,
		// even what is the same in both (left over from before a shrink).
		{"delta-0.9.xml", incr(2, 3, 64, n), []archive.Extent{
			ext(D, 1, 2), ext(Z, 64, 101), ext(D, 101, 103), ext(Z, 103, 200), ext(D, 200, 205), ext(Z, 205, n)}},
		// Grown from 2 blocks: "same" blocks 2..7 are past the base's end.
		{"delta-0.9.xml", incr(2, 3, 2, n), []archive.Extent{
			ext(D, 1, 8), ext(Z, 8, 101), ext(D, 101, 103), ext(Z, 103, 200), ext(D, 200, 205), ext(Z, 205, n)}},
		// Full: mapped → data, gaps → zero, whole volume covered.
		{"dump-0.9.xml", full(3, n), []archive.Extent{
			ext(D, 0, 8), ext(Z, 8, 101), ext(D, 101, 103), ext(Z, 103, 200), ext(D, 200, 205), ext(Z, 205, n)}},
		{"dump-0.9.xml", full(3, 201), []archive.Extent{
			ext(D, 0, 8), ext(Z, 8, 101), ext(D, 101, 103), ext(Z, 103, 200), ext(D, 200, 201)}},
		{"dump-1.x-defs.xml", full(3, n), []archive.Extent{
			ext(D, 0, 8), ext(Z, 8, 20), ext(D, 20, 23), ext(Z, 23, 101), ext(D, 101, 103), ext(Z, 103, 200),
			ext(D, 200, 205), ext(Z, 205, n)}},
		{"dump-1.x-defs.xml", full(1, n), []archive.Extent{
			ext(D, 0, 8), ext(Z, 8, 20), ext(D, 20, 23), ext(Z, 23, 100), ext(D, 100, 101), ext(Z, 101, n)}},
		// A device without mappings reads as zeroes.
		{"dump-0.9-devices.xml", full(2, n), []archive.Extent{ext(Z, 0, n)}},
	}
	for _, tt := range tests {
		name := fmt.Sprintf("%s/%d", tt.file, tt.opts.Snap.Size/fixtureUnit)
		if tt.opts.Base != nil {
			name += fmt.Sprintf("-from-%d", tt.opts.Base.Size/fixtureUnit)
		}
		t.Run(name, func(t *testing.T) {
			got, st, err := parseFixture(t, readFixture(t, tt.file), tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("extents\n got %v\nwant %v", blocksOf(got), blocksOf(tt.want))
			}
			cover := tt.opts.Snap.Size
			if tt.opts.Base == nil {
				cover = 0
			} else if tt.opts.Base.Size < cover {
				cover = tt.opts.Base.Size
			}
			if err := checkExtentInvariants(got, tt.opts.Snap.Size, cover); err != nil {
				t.Error(err)
			}
			if st.BlockSize != fixtureUnit {
				t.Errorf("block size %d", st.BlockSize)
			}
			var data, zero int64
			for _, e := range got {
				if e.Kind == D {
					data += e.Length
				} else {
					zero += e.Length
				}
			}
			if st.DataBytes != data || st.ZeroBytes != zero || st.Extents != int64(len(got)) {
				t.Errorf("stats %+v, want %d data bytes, %d zero bytes, %d extents", st, data, zero, len(got))
			}
		})
	}
}

// blocksOf renders extents in fixture blocks, for readable failures.
func blocksOf(exts []archive.Extent) string {
	var b strings.Builder
	for _, e := range exts {
		fmt.Fprintf(&b, "%v[%d,%d) ", e.Kind, e.Offset/fixtureUnit, e.End()/fixtureUnit)
	}
	return b.String()
}

func TestParseDeltaBad(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">`
	wrap := func(body string) string { return sb + `<diff left="1" right="2">` + body + `</diff></superblock>` }
	n := int64(fixtureBlocks)
	tests := []struct {
		name, xml string
		opts      DiscoverOptions
		want      error
	}{
		{"empty", "", incr(1, 2, n, n), ErrMetadata},
		{"garbage", "not xml at all", incr(1, 2, n, n), ErrMetadata},
		{"truncated", sb + `<diff left="1" right="2"><same begin="0" length="1"/>`, incr(1, 2, n, n), ErrMetadata},
		{"no diff", sb + `</superblock>`, incr(1, 2, n, n), ErrMetadata},
		{"no block size", `<superblock><diff left="1" right="2"/></superblock>`, incr(1, 2, n, n), ErrMetadata},
		{"zero block size", strings.Replace(wrap(""), `"128"`, `"0"`, 1), incr(1, 2, n, n), ErrMetadata},
		{"huge block size", strings.Replace(wrap(""), `"128"`, `"4194304"`, 1), incr(1, 2, n, n), ErrMetadata},
		{"block size differs from LVM's", wrap(""), DiscoverOptions{
			Base: &ThinDevice{ID: 1, Size: n}, Snap: ThinDevice{ID: 2, Size: n}, BlockSize: 128 << 10}, ErrMetadata},
		{"wrong left", wrap(""), incr(7, 2, n, n), ErrMetadata},
		{"wrong right", wrap(""), incr(1, 7, n, n), ErrMetadata},
		{"out of order", wrap(`<different begin="10" length="1"/><different begin="5" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"overlap", wrap(`<different begin="10" length="5"/><left_only begin="14" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"zero length", wrap(`<different begin="10" length="0"/>`), incr(1, 2, n, n), ErrMetadata},
		{"overflow begin", wrap(`<different begin="18446744073709551615" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"overflow end", wrap(`<different begin="1" length="144115188075855871"/>`), incr(1, 2, n, n), ErrMetadata},
		{"not a number", wrap(`<different begin="x" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"negative", wrap(`<different begin="-1" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"missing length", wrap(`<right_only begin="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"range outside group", wrap(`<range begin="1" length="1"/>`), incr(1, 2, n, n), ErrMetadata},
		{"nested groups", wrap(`<same><different begin="1" length="1"/></same>`), incr(1, 2, n, n), ErrMetadata},
		{"mismatched end", sb + `<diff left="1" right="2"></same></superblock>`, incr(1, 2, n, n), ErrMetadata},
		{"two superblocks", wrap("") + sb + `</superblock>`, incr(1, 2, n, n), ErrMetadata},
		{"dump: device missing", string(readFixture(t, "dump-0.9.xml")), full(9, n), ErrNotFound},
		{"dump: undefined ref", sb + `<device dev_id="1"><ref name="x"/></device></superblock>`, full(1, n), ErrMetadata},
		{"dump: self ref", sb + `<def name="x"><ref name="x"/></def></superblock>`, full(1, n), ErrMetadata},
		{"dump: mapping outside device", sb + `<range_mapping origin_begin="0" data_begin="0" length="1" time="0"/></superblock>`, full(1, n), ErrMetadata},
		{"dump: unordered mappings", sb + `<device dev_id="1"><single_mapping origin_block="9" data_block="1" time="0"/>` +
			`<single_mapping origin_block="3" data_block="2" time="0"/></device></superblock>`, full(1, n), ErrMetadata},
		{"dump: device twice", sb + `<device dev_id="1"></device><device dev_id="1"></device></superblock>`, full(1, n), ErrMetadata},
		{"delta output for a full", wrap(""), full(2, n), ErrMetadata},
		{"dump output for an incremental", string(readFixture(t, "dump-0.9.xml")), incr(2, 3, n, n), ErrMetadata},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseFixture(t, []byte(tt.xml), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzParseDelta(f *testing.F) {
	for _, name := range []string{"delta-0.9.xml", "delta-0.9-verbose.xml", "delta-0.9-reverse.xml",
		"delta-1.x.xml", "delta-1.x-verbose.xml", "dump-0.9.xml", "dump-0.9-devices.xml", "dump-1.x-defs.xml"} {
		data := readFixture(f, name)
		for _, sizes := range [][2]int64{{fixtureBlocks, fixtureBlocks}, {64, fixtureBlocks}, {fixtureBlocks, 150}, {0, 1}} {
			f.Add(data, sizes[0]*fixtureUnit, sizes[1]*fixtureUnit+512, strings.HasPrefix(name, "dump"))
		}
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, baseSize, snapSize int64, dump bool) {
		if snapSize <= 0 || baseSize < 0 {
			return
		}
		opts := DiscoverOptions{Snap: ThinDevice{ID: 3, Size: snapSize}, TempDir: dir}
		cover := int64(0)
		if dump {
			// The fixtures' interesting device is 3 and the
			// incremental's pair 2→3.
		} else {
			opts.Base = &ThinDevice{ID: 2, Size: baseSize}
			cover = min(baseSize, snapSize)
		}
		x, err := parseDelta(bytes.NewReader(data), opts)
		if err != nil {
			if !errors.Is(err, ErrMetadata) && !errors.Is(err, ErrNotFound) {
				t.Fatalf("error not classified: %v", err)
			}
			return
		}
		defer x.Close()
		exts := collectExtents(t, x)
		if err := checkExtentInvariants(exts, snapSize, cover); err != nil {
			t.Fatal(err)
		}
	})
}

// BenchmarkParseDelta measures parsing and spooling of thin_delta output
// shaped like a real incremental: mostly "same", 1 % changed.
func BenchmarkParseDelta(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`<superblock uuid="" time="2" transaction="3" data_block_size="128" nr_data_blocks="0">` + "\n")
	buf.WriteString(`  <diff left="1" right="2">` + "\n")
	const ranges = 100000
	for i := 0; i < ranges; i++ {
		begin := i * 100
		fmt.Fprintf(&buf, "    <same begin=\"%d\" length=\"99\"/>\n    <different begin=\"%d\" length=\"1\"/>\n", begin, begin+99)
	}
	buf.WriteString("  </diff>\n</superblock>\n")
	data := buf.Bytes()
	opts := DiscoverOptions{Base: &ThinDevice{ID: 1, Size: ranges * 100 * fixtureUnit},
		Snap: ThinDevice{ID: 2, Size: ranges * 100 * fixtureUnit}, TempDir: b.TempDir()}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		x, err := parseDelta(bytes.NewReader(data), opts)
		if err != nil {
			b.Fatal(err)
		}
		if x.Stats().Extents != ranges {
			b.Fatalf("%d extents", x.Stats().Extents)
		}
		x.Close()
	}
}

// BenchmarkParseDump measures a full of a fragmented volume: one mapping
// per block, every other block mapped.
func BenchmarkParseDump(b *testing.B) {
	var buf bytes.Buffer
	buf.WriteString(`<superblock uuid="" time="2" transaction="3" flags="0" version="2" data_block_size="128" nr_data_blocks="0">` + "\n")
	buf.WriteString(`  <device dev_id="1" mapped_blocks="100000" transaction="0" creation_time="0" snap_time="0">` + "\n")
	const mappings = 100000
	for i := 0; i < mappings; i++ {
		fmt.Fprintf(&buf, "    <single_mapping origin_block=\"%d\" data_block=\"%d\" time=\"0\"/>\n", 2*i, 7*i)
	}
	buf.WriteString("  </device>\n</superblock>\n")
	data := buf.Bytes()
	opts := DiscoverOptions{Snap: ThinDevice{ID: 1, Size: 2 * mappings * fixtureUnit}, TempDir: b.TempDir()}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		x, err := parseDelta(bytes.NewReader(data), opts)
		if err != nil {
			b.Fatal(err)
		}
		if x.Stats().Extents != 2*mappings {
			b.Fatalf("%d extents", x.Stats().Extents)
		}
		x.Close()
	}
}

// TestParseDeltaErrorText holds the text of the errors discovery gives
// for bad tool output (with the line and byte of the output), and the
// sentinel of this package they match, whichever package reads the XML.
func TestParseDeltaErrorText(t *testing.T) {
	const sb = `<superblock uuid="" time="1" transaction="1" data_block_size="128" nr_data_blocks="0">`
	n := int64(fixtureBlocks)
	tests := []struct {
		name, xml string
		opts      DiscoverOptions
		want      error
		text      string
	}{
		{"not a number", sb + `<diff left="1" right="2"><different begin="x" length="1"/></diff></superblock>`, incr(1, 2, n, n), ErrMetadata,
			`line 1, byte 111 of the output: <different>: lvmthin: bad thin metadata output: attribute begin="x": not a 64-bit number`},
		{"entity", sb + `<diff left="1" right="2"><different begin="&#49;" length="1"/></diff></superblock>`, incr(1, 2, n, n), ErrMetadata,
			`line 1, byte 129 of the output: lvmthin: bad thin metadata output: XML the thin tools do not write: entity or character reference in attribute value`},
		{"out of order", sb + `<diff left="1" right="2"><different begin="10" length="1"/><different begin="5" length="1"/></diff></superblock>`, incr(1, 2, n, n), ErrMetadata,
			`line 1, byte 145 of the output: <different>: lvmthin: bad thin metadata output: different range at block 5 overlaps or precedes the previous range, which ends at block 11`},
		{"device missing", string(readFixture(t, "dump-0.9.xml")), full(9, n), ErrNotFound,
			`thin device 9 is not in the pool metadata: lvmthin: not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := parseFixture(t, []byte(tt.xml), tt.opts)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if err.Error() != tt.text {
				t.Errorf("error %q\nwant  %q", err, tt.text)
			}
		})
	}
}
