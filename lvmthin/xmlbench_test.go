package lvmthin

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/thinback/thinback/lvmthin/internal/xmlref"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// benchRanges is the size of the benchmark outputs: as many ranges as
// thin_delta prints for 2 M mappings with half of them rewritten at random.
const benchRanges = 1 << 20

// BenchmarkParseDeltaLarge measures what discovery does with thin_delta's
// output, parsing, building extents and spooling them, with either parser.
func BenchmarkParseDeltaLarge(b *testing.B) {
	data := xmlref.GenDelta(rand.New(rand.NewPCG(1, 2)), benchRanges, false)
	const size = 8 * benchRanges * fixtureUnit // past the last range
	opts := DiscoverOptions{Base: &ThinDevice{ID: 1, Size: size}, Snap: ThinDevice{ID: 2, Size: size}, TempDir: b.TempDir()}
	for _, p := range []struct {
		name string
		scan xmlScanFunc
	}{{"scanXML", thinxml.Scan}, {"encoding-xml", xmlref.Scan}} {
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
