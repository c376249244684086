package lvmthin

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
)

// benchRanges is the size of the benchmark outputs: as many ranges as
// thin_delta prints for 2 M mappings with half of them rewritten at random.
const benchRanges = 1 << 20

// genDeltaXML writes thin_delta 0.9 output, byte for byte as the tool
// formats it, with n ranges: runs of shared blocks and rewritten ones as
// random writes leave them, and a few discards and new writes. verbose
// adds the pool addresses, in a group per range as the 0.9 tool prints
// them when neighbouring runs are not contiguous in the pool.
func genDeltaXML(r *rand.Rand, n int, verbose bool) []byte {
	var b bytes.Buffer
	b.WriteString(`<superblock uuid="" time="2" transaction="2" data_block_size="128" nr_data_blocks="3001024">` + "\n")
	b.WriteString(`  <diff left="1" right="2">` + "\n")
	pos, data := 0, 2000000
	for i := 0; i < n; i++ {
		length := 1 + r.IntN(4)
		kind := rangeSame
		if i%2 == 1 {
			kind = rangeDifferent
			switch r.IntN(50) {
			case 0:
				kind = rangeLeftOnly
			case 1:
				kind = rangeRightOnly
			}
		}
		if !verbose {
			fmt.Fprintf(&b, "    <%s begin=\"%d\" length=\"%d\"/>\n", kind, pos, length)
		} else {
			fmt.Fprintf(&b, "    <%s>\n", kind)
			switch kind {
			case rangeDifferent:
				fmt.Fprintf(&b, "      <range begin=\"%d\" left_data_begin=\"%d\" right_data_begin=\"%d\" length=\"%d\"/>\n", pos, pos, data, length)
			default:
				fmt.Fprintf(&b, "      <range begin=\"%d\" data_begin=\"%d\" length=\"%d\"/>\n", pos, data, length)
			}
			fmt.Fprintf(&b, "    </%s>\n", kind)
		}
		pos += length
		data += length
	}
	b.WriteString("  </diff>\n</superblock>\n")
	return b.Bytes()
}

// genDumpXML writes thin_dump 0.9 output of one device with n mappings,
// alternating runs of the original blocks and rewritten ones.
func genDumpXML(r *rand.Rand, n int) []byte {
	var b bytes.Buffer
	b.WriteString(`<superblock uuid="" time="2" transaction="2" flags="0" version="2" data_block_size="128" nr_data_blocks="3001024">` + "\n")
	fmt.Fprintf(&b, "  <device dev_id=\"2\" mapped_blocks=\"%d\" transaction=\"1\" creation_time=\"2\" snap_time=\"2\">\n", 2*n)
	pos, data := 0, 2000000
	for i := 0; i < n; i++ {
		length := 1 + r.IntN(4)
		origin, t := pos, 0
		if i%2 == 1 {
			origin, t = data, 1
			data += length
		}
		if length == 1 {
			fmt.Fprintf(&b, "    <single_mapping origin_block=\"%d\" data_block=\"%d\" time=\"%d\"/>\n", pos, origin, t)
		} else {
			fmt.Fprintf(&b, "    <range_mapping origin_begin=\"%d\" data_begin=\"%d\" length=\"%d\" time=\"%d\"/>\n", pos, origin, length, t)
		}
		pos += length
	}
	b.WriteString("  </device>\n</superblock>\n")
	return b.Bytes()
}

// BenchmarkScanXML compares scanXML with the encoding/xml parser it
// replaced (refScanXML) on large outputs, parsing only: the handler counts
// the ranges.
func BenchmarkScanXML(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := []struct {
		name string
		data []byte
		opt  xmlScan
	}{
		{"delta", genDeltaXML(r, benchRanges, false), xmlScan{left: 1, right: 2}},
		{"delta-verbose", genDeltaXML(r, benchRanges, true), xmlScan{left: 1, right: 2}},
		{"dump", genDumpXML(r, benchRanges), xmlScan{dump: true, dumpDev: 2}},
	}
	parsers := []struct {
		name string
		scan xmlScanFunc
	}{{"scanXML", scanXML}, {"encoding-xml", refScanXML}}
	for _, in := range inputs {
		for _, p := range parsers {
			b.Run(in.name+"/"+p.name, func(b *testing.B) {
				var ranges int
				h := xmlHandler{rng: func(rangeKind, uint64, uint64) error { ranges++; return nil }}
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

// BenchmarkParseDeltaLarge measures what discovery does with thin_delta's
// output, parsing, building extents and spooling them, with either parser.
func BenchmarkParseDeltaLarge(b *testing.B) {
	data := genDeltaXML(rand.New(rand.NewPCG(1, 2)), benchRanges, false)
	const size = 8 * benchRanges * fixtureUnit // past the last range
	opts := DiscoverOptions{Base: &ThinDevice{ID: 1, Size: size}, Snap: ThinDevice{ID: 2, Size: size}, TempDir: b.TempDir()}
	for _, p := range []struct {
		name string
		scan xmlScanFunc
	}{{"scanXML", scanXML}, {"encoding-xml", refScanXML}} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				x, err := parseDeltaWith(p.scan, bytes.NewReader(data), opts)
				if err != nil {
					b.Fatal(err)
				}
				if x.Stats().Ranges != benchRanges {
					b.Fatalf("%d ranges", x.Stats().Ranges)
				}
				x.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*benchRanges), "ns/range")
		})
	}
}
