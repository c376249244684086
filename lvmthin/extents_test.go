package lvmthin

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/thinback/thinback/archive"
)

// TestExtentsRandom checks the extent builder against a per-block model on
// random thin_delta and thin_dump outputs.
func TestExtentsRandom(t *testing.T) {
	r := testRand(t)
	dir := t.TempDir()
	for iter := 0; iter < 300; iter++ {
		const unit = 8 * 512 // data_block_size 8 sectors keeps numbers small
		blocks := 1 + r.IntN(200)
		// state of each block in the XML: 0 unmapped in both, or a kind
		state := make([]rangeKind, blocks)
		dump := r.IntN(3) == 0
		kinds := []rangeKind{0, rangeSame, rangeDifferent, rangeLeftOnly, rangeRightOnly}
		if dump {
			kinds = []rangeKind{0, rangeMapped}
		}
		for i := range state {
			if r.IntN(3) == 0 || i == 0 {
				state[i] = kinds[r.IntN(len(kinds))]
			} else {
				state[i] = state[i-1]
			}
		}
		// Sizes may cut ranges, be shorter or longer than the metadata
		// extent, and not be multiples of the block size.
		snapSize := int64(1+r.IntN(blocks*unit+3*unit)) &^ 511
		if snapSize == 0 {
			snapSize = 512
		}
		baseSize := int64(r.IntN(blocks*unit+3*unit)) &^ 511

		var xml bytes.Buffer
		fmt.Fprintf(&xml, `<superblock uuid="" time="1" transaction="1" data_block_size="%d" nr_data_blocks="0">`, unit/512)
		if dump {
			xml.WriteString(`<device dev_id="2" mapped_blocks="0" transaction="0" creation_time="0" snap_time="0">`)
		} else {
			xml.WriteString(`<diff left="1" right="2">`)
		}
		verbose := r.IntN(2) == 0
		for i := 0; i < blocks; {
			j := i
			for j < blocks && state[j] == state[i] {
				j++
			}
			// Split runs at random, as the tools do at leaf borders.
			for i < j {
				k := i + 1 + r.IntN(j-i)
				switch {
				case state[i] == 0:
				case dump && k-i == 1:
					fmt.Fprintf(&xml, `<single_mapping origin_block="%d" data_block="7" time="0"/>`, i)
				case dump:
					fmt.Fprintf(&xml, `<range_mapping origin_begin="%d" data_begin="7" length="%d" time="0"/>`, i, k-i)
				case verbose:
					fmt.Fprintf(&xml, `<%s><range begin="%d" data_begin="3" length="%d"/></%s>`, state[i], i, k-i, state[i])
				default:
					fmt.Fprintf(&xml, `<%s begin="%d" length="%d"/>`, state[i], i, k-i)
				}
				i = k
			}
		}
		if dump {
			xml.WriteString(`</device></superblock>`)
		} else {
			xml.WriteString(`</diff></superblock>`)
		}

		// The model: what each 512-byte sector of [0, snapSize) must be.
		const none = archive.Kind(0)
		want := make([]archive.Kind, snapSize/512)
		for s := range want {
			off := int64(s) * 512
			var st rangeKind
			if b := off / unit; b < int64(blocks) {
				st = state[b]
			}
			inFill := dump || off >= baseSize
			switch {
			case st == rangeDifferent || st == rangeRightOnly || st == rangeMapped:
				want[s] = archive.KindData
			case st == rangeLeftOnly:
				want[s] = archive.KindZero
			case st == rangeSame && inFill:
				want[s] = archive.KindData
			case inFill:
				want[s] = archive.KindZero
			default:
				want[s] = none
			}
		}

		opts := DiscoverOptions{Snap: ThinDevice{ID: 2, Size: snapSize}, TempDir: dir}
		cover := int64(0)
		if !dump {
			opts.Base = &ThinDevice{ID: 1, Size: baseSize}
			cover = min(baseSize, snapSize)
		}
		x, err := parseDelta(&xml, opts)
		if err != nil {
			t.Fatalf("iteration %d: %v\n%s", iter, err, xml.String())
		}
		exts := collectExtents(t, x)
		x.Close()
		if err := checkExtentInvariants(exts, snapSize, cover); err != nil {
			t.Fatalf("iteration %d (dump %v, base %d, snap %d): %v\nextents %v", iter, dump, baseSize, snapSize, err, exts)
		}
		got := make([]archive.Kind, snapSize/512)
		for _, e := range exts {
			for off := e.Offset; off < e.End(); off += 512 {
				got[off/512] = e.Kind
			}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("iteration %d (dump %v, base %d, snap %d):\n got %v\nwant %v\nextents %v", iter, dump, baseSize, snapSize, got, want, exts)
		}
	}
}
