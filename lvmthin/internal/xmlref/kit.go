package xmlref

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"math/rand/v2"

	"github.com/thinback/thinback/lvmthin/thinxml"
)

// Refusals says, from encoding/xml's tokens of data, why thinxml.Scan must
// refuse it (must) or may refuse it (may); "" if neither.
func Refusals(data []byte) (must, may string) {
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
			case len(raw) > thinxml.MaxTag:
				why = "a long tag"
			case depth > thinxml.MaxDepth:
				why = "deep nesting"
			}
		case xml.EndElement:
			depth--
			switch {
			case !ascii(t.Name.Space, t.Name.Local):
				why = "a name that is not ASCII"
			case len(raw) > thinxml.MaxTag:
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

// Event is one call of a thinxml.Handler.
type Event struct {
	What   string // "superblock", "device" or a range kind
	N1, N2 uint64
	Dev    thinxml.Device
}

func (e Event) String() string {
	if e.What == "device" {
		return fmt.Sprintf("device%+v", e.Dev)
	}
	return fmt.Sprintf("%s(%d,%d)", e.What, e.N1, e.N2)
}

// Record runs a parser and records what it reports.
func Record(scan func(io.Reader, thinxml.Options, thinxml.Handler) error, r io.Reader, opt thinxml.Options) ([]Event, error) {
	var ev []Event
	err := scan(r, opt, thinxml.Handler{
		Superblock: func(sectors uint64) error {
			ev = append(ev, Event{What: "superblock", N1: sectors})
			return nil
		},
		Device: func(d thinxml.Device) error {
			ev = append(ev, Event{What: "device", Dev: d})
			return nil
		},
		Range: func(kind thinxml.RangeKind, begin, length uint64) error {
			ev = append(ev, Event{What: kind.String(), N1: begin, N2: length})
			return nil
		},
	})
	return ev, err
}

// ChunkReader returns at most N bytes per Read (0: no limit), so that tags
// straddle the scanner's window.
type ChunkReader struct {
	R io.Reader
	N int
}

func (c ChunkReader) Read(p []byte) (int, error) {
	if c.N > 0 && len(p) > c.N {
		p = p[:c.N]
	}
	return c.R.Read(p)
}

// GenDelta writes thin_delta 0.9 output, byte for byte as the tool
// formats it, with n ranges: runs of shared blocks and rewritten ones as
// random writes leave them, and a few discards and new writes. verbose
// adds the pool addresses, in a group per range as the 0.9 tool prints
// them when neighbouring runs are not contiguous in the pool.
func GenDelta(r *rand.Rand, n int, verbose bool) []byte {
	var b bytes.Buffer
	b.WriteString(`<superblock uuid="" time="2" transaction="2" data_block_size="128" nr_data_blocks="3001024">` + "\n")
	b.WriteString(`  <diff left="1" right="2">` + "\n")
	pos, data := 0, 2000000
	for i := 0; i < n; i++ {
		length := 1 + r.IntN(4)
		kind := thinxml.RangeSame
		if i%2 == 1 {
			kind = thinxml.RangeDifferent
			switch r.IntN(50) {
			case 0:
				kind = thinxml.RangeLeftOnly
			case 1:
				kind = thinxml.RangeRightOnly
			}
		}
		if !verbose {
			fmt.Fprintf(&b, "    <%s begin=\"%d\" length=\"%d\"/>\n", kind, pos, length)
		} else {
			fmt.Fprintf(&b, "    <%s>\n", kind)
			switch kind {
			case thinxml.RangeDifferent:
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

// GenDump writes thin_dump 0.9 output of one device with n mappings,
// alternating runs of the original blocks and rewritten ones.
func GenDump(r *rand.Rand, n int) []byte {
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
