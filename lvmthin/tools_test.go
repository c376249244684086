package lvmthin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/lvmtest"
)

// needTools skips a test when a tool is missing, or fails it when
// lvmtest.RequireVM (CI), where a missing tool is a broken set-up.
func needTools(t *testing.T, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if lvmtest.RequireVM() {
				t.Fatalf("%s not found (install thin-provisioning-tools): THINBACK_REQUIRE_VM=1 needs it", p)
			}
			t.Skipf("%s not found (install thin-provisioning-tools)", p)
		}
	}
}

// thinPair is two thin devices as a model: data block per virtual block,
// -1 where unmapped.
type thinPair struct {
	blockSectors int
	left, right  []int64
}

// randomPair makes an older device with random runs of mappings and a newer
// one sharing most of them, with some blocks rewritten (different),
// discarded (left_only) and newly written (right_only).
func randomPair(r *rand.Rand, blocks int) *thinPair {
	p := &thinPair{blockSectors: 128, left: make([]int64, blocks), right: make([]int64, blocks)}
	next := int64(0)
	for i := 0; i < blocks; {
		n := 1 + r.IntN(40)
		mapped := r.IntN(3) != 0
		for ; n > 0 && i < blocks; n, i = n-1, i+1 {
			p.left[i] = -1
			if mapped {
				p.left[i] = next
				next++
			}
		}
	}
	copy(p.right, p.left)
	for i := 0; i < blocks; {
		n := 1 + r.IntN(10)
		op := r.IntN(10) // mostly unchanged
		for ; n > 0 && i < blocks; n, i = n-1, i+1 {
			switch {
			case op == 0 && p.right[i] >= 0: // rewritten
				p.right[i] = next
				next++
			case op == 1: // discarded
				p.right[i] = -1
			case op == 2 && p.right[i] < 0: // new write
				p.right[i] = next
				next++
			}
		}
	}
	return p
}

func writeDeviceXML(b *bytes.Buffer, id int, creation int, m []int64) {
	mapped := 0
	for _, d := range m {
		if d >= 0 {
			mapped++
		}
	}
	fmt.Fprintf(b, "  <device dev_id=\"%d\" mapped_blocks=\"%d\" transaction=\"0\" creation_time=\"%d\" snap_time=\"2\">\n", id, mapped, creation)
	for i := 0; i < len(m); {
		if m[i] < 0 {
			i++
			continue
		}
		j := i + 1
		for j < len(m) && m[j] == m[j-1]+1 && m[j-1] >= 0 {
			j++
		}
		if j-i == 1 {
			fmt.Fprintf(b, "    <single_mapping origin_block=\"%d\" data_block=\"%d\" time=\"0\"/>\n", i, m[i])
		} else {
			fmt.Fprintf(b, "    <range_mapping origin_begin=\"%d\" data_begin=\"%d\" length=\"%d\" time=\"0\"/>\n", i, m[i], j-i)
		}
		i = j
	}
	b.WriteString("  </device>\n")
}

// restore writes the pair as real pool metadata with thin_restore, as
// devices 1 (older, created at pool time 1) and 2 (newer, time 2).
func (p *thinPair) restore(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	var b bytes.Buffer
	fmt.Fprintf(&b, "<superblock uuid=\"\" time=\"2\" transaction=\"2\" flags=\"0\" version=\"2\" data_block_size=\"%d\" nr_data_blocks=\"%d\">\n",
		p.blockSectors, 4*len(p.left)+16)
	writeDeviceXML(&b, 1, 1, p.left)
	writeDeviceXML(&b, 2, 2, p.right)
	b.WriteString("</superblock>\n")
	xmlPath := filepath.Join(dir, "pool.xml")
	meta := filepath.Join(dir, "meta.bin")
	if err := os.WriteFile(xmlPath, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// thin_restore writes into an existing file of sufficient size.
	if err := os.WriteFile(meta, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(meta, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("thin_restore", "-i", xmlPath, "-o", meta).CombinedOutput(); err != nil {
		t.Fatalf("thin_restore: %v\n%s", err, out)
	}
	return meta
}

// model returns the kind each 512-byte sector of [0, snapSize) must get
// (0 = not in the delta).
func (p *thinPair) model(full bool, baseSize, snapSize int64) []archive.Kind {
	unit := int64(p.blockSectors) * 512
	want := make([]archive.Kind, snapSize/512)
	for s := range want {
		off := int64(s) * 512
		l, r := int64(-1), int64(-1)
		if b := off / unit; b < int64(len(p.left)) {
			l, r = p.left[b], p.right[b]
		}
		inFill := full || off >= baseSize
		switch {
		case full && r >= 0:
			want[s] = archive.KindData
		case full:
			want[s] = archive.KindZero
		case r >= 0 && (l != r || inFill):
			want[s] = archive.KindData
		case l >= 0 && r < 0:
			want[s] = archive.KindZero
		case inFill:
			want[s] = archive.KindZero
		}
	}
	return want
}

func sectorKinds(exts []archive.Extent, size int64) []archive.Kind {
	got := make([]archive.Kind, size/512)
	for _, e := range exts {
		for off := e.Offset; off < e.End(); off += 512 {
			got[off/512] = e.Kind
		}
	}
	return got
}

// TestDiscoverRealTools runs Discover end to end with the real thin_delta
// and thin_dump, and with the native reader, on metadata built by
// thin_restore (no -m: a metadata file is not live), against a model of
// the two devices; the two discoveries must give the same extents.
func TestDiscoverRealTools(t *testing.T) {
	needTools(t, "thin_restore", "thin_delta", "thin_dump")
	r := testRand(t)
	for iter := 0; iter < 4; iter++ {
		blocks := 200 + r.IntN(2000)
		p := randomPair(r, blocks)
		meta := p.restore(t)
		unit := int64(p.blockSectors) * 512
		sizes := [][2]int64{
			{int64(blocks) * unit, int64(blocks) * unit},                         // same size
			{int64(blocks) * unit, int64(blocks/2)*unit + 512},                   // shrunk, mid-block
			{int64(blocks/3) * unit, int64(blocks)*unit + 3*unit},                // grown past the mappings
			{int64(r.IntN(blocks)) * unit, int64(1+r.IntN(blocks+4))*unit - 512}, // anything
		}
		for _, sz := range sizes {
			baseSize, snapSize := sz[0], sz[1]
			for _, isFull := range []bool{false, true} {
				var byTools []archive.Extent
				for _, disc := range []Discovery{DiscoverTools, DiscoverNative} {
					opts := DiscoverOptions{Discovery: disc, Metadata: meta, Snap: ThinDevice{ID: 2, Size: snapSize},
						BlockSize: unit, TempDir: t.TempDir()}
					cover := int64(0)
					if !isFull {
						opts.Base = &ThinDevice{ID: 1, Size: baseSize}
						cover = min(baseSize, snapSize)
					}
					x, err := Discover(context.Background(), opts)
					if err != nil {
						t.Fatalf("iteration %d, %s, full %v, sizes %v: %v", iter, disc, isFull, sz, err)
					}
					exts := collectExtents(t, x)
					st := x.Stats()
					x.Close()
					if err := checkExtentInvariants(exts, snapSize, cover); err != nil {
						t.Fatalf("iteration %d, %s, full %v, sizes %v: %v", iter, disc, isFull, sz, err)
					}
					want := p.model(isFull, baseSize, snapSize)
					if got := sectorKinds(exts, snapSize); !reflect.DeepEqual(got, want) {
						t.Fatalf("iteration %d, %s, full %v, sizes %v: extents differ from the model\n%v", iter, disc, isFull, sz, exts)
					}
					wantTool := "thin_delta"
					if isFull {
						wantTool = "thin_dump"
					}
					if disc == DiscoverNative {
						wantTool = ""
						if !reflect.DeepEqual(exts, byTools) {
							t.Fatalf("iteration %d, full %v, sizes %v: native extents\n%v\ndiffer from the tools'\n%v",
								iter, isFull, sz, exts, byTools)
						}
						if st.MetadataBytes <= 0 {
							t.Errorf("native stats %+v: no metadata bytes", st)
						}
					} else {
						byTools = exts
					}
					if st.Discovery != disc || st.Tool != wantTool || st.BlockSize != unit || st.ToolTime <= 0 || st.Extents != int64(len(exts)) {
						t.Errorf("stats %+v", st)
					}
				}
			}
		}
	}
}

func TestDiscoverRealToolsErrors(t *testing.T) {
	needTools(t, "thin_restore", "thin_delta", "thin_dump")
	p := randomPair(testRand(t), 100)
	meta := p.restore(t)
	ctx := context.Background()
	size := int64(100 * 64 << 10)
	for _, disc := range []Discovery{DiscoverTools, DiscoverNative} {
		t.Run(string(disc), func(t *testing.T) { checkDiscoverErrors(t, ctx, meta, size, disc) })
	}

	det, err := ReadDeviceDetails(ctx, meta, false, 1, 2)
	if err != nil {
		t.Fatal(err)
	}
	if det[1].CreationTime != 1 || det[2].CreationTime != 2 {
		t.Errorf("device details %+v", det)
	}
	if _, err := ReadDeviceDetails(ctx, meta, false, 1, 5); !errors.Is(err, ErrNotFound) {
		t.Errorf("details of a missing device: %v, want ErrNotFound", err)
	}
}

func checkDiscoverErrors(t *testing.T, ctx context.Context, meta string, size int64, disc Discovery) {

	_, err := Discover(ctx, DiscoverOptions{Discovery: disc, Metadata: meta, Base: &ThinDevice{ID: 1, Size: size},
		Snap: ThinDevice{ID: 9, Size: size}, TempDir: t.TempDir()})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("delta of a missing device: %v, want ErrNotFound", err)
	}
	_, err = Discover(ctx, DiscoverOptions{Discovery: disc, Metadata: meta, Snap: ThinDevice{ID: 9, Size: size}, TempDir: t.TempDir()})
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("full of a missing device: %v, want ErrNotFound", err)
	}
	// The file holds no metadata snapshot: -m must fail.
	_, err = Discover(ctx, DiscoverOptions{Discovery: disc, Metadata: meta, MetadataSnap: true, Base: &ThinDevice{ID: 1, Size: size},
		Snap: ThinDevice{ID: 2, Size: size}, TempDir: t.TempDir()})
	var ce *CommandError
	if !errors.Is(err, errNoMetadataSnap) || disc == DiscoverTools && (!errors.As(err, &ce) || ce.Args[1] != "-m") {
		t.Errorf("-m without a held snapshot: %v", err)
	}
	// LVM's chunk size must match the metadata's block size.
	_, err = Discover(ctx, DiscoverOptions{Discovery: disc, Metadata: meta, Base: &ThinDevice{ID: 1, Size: size},
		Snap: ThinDevice{ID: 2, Size: size}, BlockSize: 128 << 10, TempDir: t.TempDir()})
	if !errors.Is(err, ErrMetadata) {
		t.Errorf("block size mismatch: %v, want ErrMetadata", err)
	}
}
