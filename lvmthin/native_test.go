package lvmthin

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"reflect"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/thinmeta"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// pairFromXML builds a model of two devices whose thin_delta output says
// what the fixture says (delta fixtures), or whose device 2 maps what the
// fixture's device dev maps (dump fixtures; device 1 is then empty).
func pairFromXML(t *testing.T, data []byte, dump bool, dev uint32) *thinPair {
	t.Helper()
	p := &thinPair{blockSectors: 128, left: make([]int64, fixtureBlocks), right: make([]int64, fixtureBlocks)}
	for i := range p.left {
		p.left[i], p.right[i] = -1, -1
	}
	next := int64(0)
	opt := thinxml.Options{TempDir: t.TempDir(), Dump: dump, DumpDev: dev}
	err := thinxml.Scan(bytes.NewReader(data), opt, thinxml.Handler{
		Superblock: func(uint64) error { return nil },
		Range: func(kind thinxml.RangeKind, begin, length uint64) error {
			for b := begin; b < begin+length; b++ {
				switch kind {
				case thinxml.RangeSame:
					p.left[b], p.right[b] = next, next
					next++
				case thinxml.RangeDifferent:
					p.left[b], p.right[b] = next, next+1
					next += 2
				case thinxml.RangeLeftOnly:
					p.left[b] = next
					next++
				case thinxml.RangeRightOnly, thinxml.RangeMapped:
					p.right[b] = next
					next++
				}
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func discoverExtents(t *testing.T, opts DiscoverOptions) ([]archive.Extent, DiscoverStats) {
	t.Helper()
	opts.TempDir = t.TempDir()
	x, err := Discover(context.Background(), opts)
	if err != nil {
		t.Fatalf("Discover %s: %v", opts.Discovery, err)
	}
	defer x.Close()
	return collectExtents(t, x), x.Stats()
}

// TestDiscoverNativeFixtures rebuilds the pools the tool XML fixtures
// describe as real metadata (thin_restore) and checks that both
// discoveries on it give the extents the existing parsing path makes of
// the fixture itself.
func TestDiscoverNativeFixtures(t *testing.T) {
	needTools(t, "thin_restore", "thin_delta", "thin_dump")
	n := int64(fixtureBlocks)
	for _, tc := range []struct {
		file        string
		left, right uint32
	}{
		{"delta-0.9.xml", 2, 3},
		{"delta-0.9-verbose.xml", 2, 3},
		{"delta-0.9-reverse.xml", 3, 2},
		{"delta-1.x.xml", 2, 3},
		{"delta-1.x-verbose.xml", 2, 3},
	} {
		data := readFixture(t, tc.file)
		meta := pairFromXML(t, data, false, 0).restore(t)
		for _, sz := range [][2]int64{{n, n}, {64, n + 8}, {n, 150}, {0, 300}} {
			want, _, err := parseFixture(t, data, incr(tc.left, tc.right, sz[0], sz[1]))
			if err != nil {
				t.Fatal(err)
			}
			for _, disc := range []Discovery{DiscoverTools, DiscoverNative} {
				opts := incr(1, 2, sz[0], sz[1])
				opts.Discovery, opts.Metadata = disc, meta
				if got, _ := discoverExtents(t, opts); !reflect.DeepEqual(got, want) {
					t.Errorf("%s, sizes %v, %s: got\n%v\nwant\n%v", tc.file, sz, disc, got, want)
				}
			}
		}
	}
	for _, tc := range []struct {
		file string
		dev  uint32
	}{
		{"dump-0.9.xml", 3},
		{"dump-1.x-defs.xml", 1},
		{"dump-1.x-defs.xml", 3},
	} {
		data := readFixture(t, tc.file)
		meta := pairFromXML(t, data, true, tc.dev).restore(t)
		for _, blocks := range []int64{n, 201, 1} {
			want, _, err := parseFixture(t, data, full(tc.dev, blocks))
			if err != nil {
				t.Fatal(err)
			}
			for _, disc := range []Discovery{DiscoverTools, DiscoverNative} {
				opts := full(2, blocks)
				opts.Discovery, opts.Metadata = disc, meta
				if got, _ := discoverExtents(t, opts); !reflect.DeepEqual(got, want) {
					t.Errorf("%s device %d, %d blocks, %s: got\n%v\nwant\n%v", tc.file, tc.dev, blocks, disc, got, want)
				}
			}
		}
	}
}

// TestDiscoverNativeDamage: damaged metadata is ErrMetadata (exit code 7
// in thinback) with the block named, never a panic or a wrong answer.
func TestDiscoverNativeDamage(t *testing.T) {
	needTools(t, "thin_restore")
	p := randomPair(testRand(t), 3000)
	meta := p.restore(t)
	img, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	m, err := thinmeta.Open(meta, thinmeta.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, err := m.DeviceRoot(2)
	m.Close()
	if err != nil {
		t.Fatal(err)
	}
	// A flipped bit in device 2's root node.
	img[root*thinmeta.BlockSize+100] ^= 1
	if err := os.WriteFile(meta, img, 0o644); err != nil {
		t.Fatal(err)
	}
	size := int64(3000 * 64 << 10)
	_, err = Discover(context.Background(), DiscoverOptions{Metadata: meta, Base: &ThinDevice{ID: 1, Size: size},
		Snap: ThinDevice{ID: 2, Size: size}, TempDir: t.TempDir()})
	var me *thinmeta.MetadataError
	if !errors.Is(err, ErrMetadata) || !errors.As(err, &me) || me.Block != root {
		t.Errorf("damaged root of device 2: %v, want ErrMetadata naming block %d", err, root)
	}
	// And a superblock that is not one.
	binary.LittleEndian.PutUint64(img[32:], 1)
	if err := os.WriteFile(meta, img, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Discover(context.Background(), DiscoverOptions{Metadata: meta, Snap: ThinDevice{ID: 2, Size: size}, TempDir: t.TempDir()})
	if !errors.Is(err, ErrMetadata) || !errors.As(err, &me) || me.Block != 0 {
		t.Errorf("bad superblock magic: %v, want ErrMetadata naming block 0", err)
	}
}
