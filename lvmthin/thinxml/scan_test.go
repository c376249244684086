package thinxml

import (
	"errors"
	"io"
	"strings"
	"testing"
)

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
				h := Handler{Range: func(_ RangeKind, begin, length uint64) error {
					if begin < uint64(pos) {
						return errors.New("out of order")
					}
					pos = int64(begin + length)
					return nil
				}}
				err := Scan(chunkReader{strings.NewReader(tt.xml), chunk}, Options{Left: 1, Right: 2}, h)
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
