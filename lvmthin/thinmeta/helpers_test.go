package thinmeta

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// testRand returns a random source for a test and logs its seed; set
// THINBACK_SEED to replay a run.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// needTools skips a test when a thin tool is missing, or fails it where
// the tools must be there (THINBACK_REQUIRE_VM=1, as CI sets it).
func needTools(t testing.TB, progs ...string) {
	t.Helper()
	for _, p := range progs {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("THINBACK_REQUIRE_VM") == "1" {
				t.Fatalf("%s not found (install thin-provisioning-tools): THINBACK_REQUIRE_VM=1 needs it", p)
			}
			t.Skipf("%s not found (install thin-provisioning-tools)", p)
		}
	}
}

// device is a thin device as a model: the data block of each virtual
// block (-1: unmapped) and the time of its mapping.
type device struct {
	id       uint64
	data     []int64
	time     []uint32
	creation uint32
	snap     uint32
}

// pool is a model of pool metadata to build with thin_restore.
type pool struct {
	blockSectors uint32
	time         uint32
	devs         []*device
	next         int64 // next free data block
}

// newDevice adds a device with random runs of mappings over blocks
// virtual blocks.
func (p *pool) newDevice(r *rand.Rand, id uint64, blocks int, density float64) *device {
	d := &device{id: id, data: make([]int64, blocks), time: make([]uint32, blocks), creation: uint32(len(p.devs)), snap: p.time}
	for i := 0; i < blocks; {
		n := 1 + r.IntN(300)
		mapped := r.Float64() < density
		for ; n > 0 && i < blocks; n, i = n-1, i+1 {
			d.data[i] = -1
			if mapped {
				d.data[i] = p.next
				d.time[i] = uint32(r.IntN(3))
				p.next++
			}
		}
	}
	p.devs = append(p.devs, d)
	return d
}

// snapshot adds a device that shares origin's mappings except for some
// rewritten, discarded and newly written runs, and blocks past origin's
// end when grow > 0.
func (p *pool) snapshot(r *rand.Rand, origin *device, id uint64, changes int, grow int) *device {
	n := len(origin.data) + grow
	d := &device{id: id, data: make([]int64, n), time: make([]uint32, n), creation: uint32(len(p.devs)), snap: p.time}
	for i := range d.data {
		d.data[i] = -1
	}
	copy(d.data, origin.data)
	copy(d.time, origin.time)
	for c := 0; c < changes; c++ {
		at := r.IntN(n)
		run := 1 + r.IntN(1+r.IntN(600))
		op := r.IntN(4)
		for i := at; i < min(n, at+run); i++ {
			switch {
			case op == 0 && d.data[i] >= 0: // rewritten
				d.data[i] = p.next
				p.next++
			case op == 1: // discarded
				d.data[i] = -1
			case op == 2 && d.data[i] < 0: // written
				d.data[i] = p.next
				p.next++
			case op == 3: // rewritten or written
				d.data[i] = p.next
				p.next++
			}
			d.time[i] = p.time
		}
	}
	p.devs = append(p.devs, d)
	return d
}

func (p *pool) xml() []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "<superblock uuid=\"\" time=\"%d\" transaction=\"7\" flags=\"0\" version=\"2\" data_block_size=\"%d\" nr_data_blocks=\"%d\">\n",
		p.time, p.blockSectors, p.next+16)
	for _, d := range p.devs {
		mapped := 0
		for _, v := range d.data {
			if v >= 0 {
				mapped++
			}
		}
		fmt.Fprintf(&b, "  <device dev_id=\"%d\" mapped_blocks=\"%d\" transaction=\"%d\" creation_time=\"%d\" snap_time=\"%d\">\n",
			d.id, mapped, d.id+3, d.creation, d.snap)
		for i := 0; i < len(d.data); {
			if d.data[i] < 0 {
				i++
				continue
			}
			j := i + 1
			for j < len(d.data) && d.data[j] == d.data[j-1]+1 && d.time[j] == d.time[i] {
				j++
			}
			if j-i == 1 {
				fmt.Fprintf(&b, "    <single_mapping origin_block=\"%d\" data_block=\"%d\" time=\"%d\"/>\n", i, d.data[i], d.time[i])
			} else {
				fmt.Fprintf(&b, "    <range_mapping origin_begin=\"%d\" data_begin=\"%d\" length=\"%d\" time=\"%d\"/>\n", i, d.data[i], j-i, d.time[i])
			}
			i = j
		}
		b.WriteString("  </device>\n")
	}
	b.WriteString("</superblock>\n")
	return b.Bytes()
}

// restore writes the pool as real metadata with thin_restore and returns
// the file's path.
func (p *pool) restore(t testing.TB) string {
	t.Helper()
	return p.restoreIn(t, t.TempDir())
}

func (p *pool) restoreIn(t testing.TB, dir string) string {
	t.Helper()
	xmlPath := filepath.Join(dir, "pool.xml")
	meta := filepath.Join(dir, "meta.bin")
	if err := os.WriteFile(xmlPath, p.xml(), 0o644); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, d := range p.devs {
		total += len(d.data)
	}
	// thin_restore writes into an existing file large enough.
	if err := os.WriteFile(meta, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(meta, int64(16<<20+total*64)); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("thin_restore", "-i", xmlPath, "-o", meta).CombinedOutput(); err != nil {
		t.Fatalf("thin_restore: %v\n%s", err, out)
	}
	return meta
}

var (
	deltaRangeRE = regexp.MustCompile(`<(same|different|left_only|right_only) begin="(\d+)" length="(\d+)"/>`)
	dumpRangeRE  = regexp.MustCompile(`<range_mapping origin_begin="(\d+)" data_begin="(\d+)" length="(\d+)" time="(\d+)"/>`)
	dumpSingleRE = regexp.MustCompile(`<single_mapping origin_block="(\d+)" data_block="(\d+)" time="(\d+)"/>`)
	dumpDevRE    = regexp.MustCompile(`<device dev_id="(\d+)" mapped_blocks="(\d+)" transaction="(\d+)" creation_time="(\d+)" snap_time="(\d+)">`)
)

func atou(s string) uint64 {
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		panic(err)
	}
	return v
}

// runTool runs a thin tool and returns its output; the error is the
// tool's, with its standard error.
func runTool(args ...string) ([]byte, error) {
	cmd := exec.Command(args[0], args[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%v: %w: %s", args, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// toolDelta runs thin_delta (non-verbose) and returns its ranges.
func toolDelta(meta string, snap bool, left, right uint64) ([]Range, error) {
	args := []string{"thin_delta"}
	if snap {
		args = append(args, "-m")
	}
	args = append(args, "--snap1", strconv.FormatUint(left, 10), "--snap2", strconv.FormatUint(right, 10), meta)
	out, err := runTool(args...)
	if err != nil {
		return nil, err
	}
	var rs []Range
	kinds := map[string]Kind{"same": Same, "different": Different, "left_only": LeftOnly, "right_only": RightOnly}
	for _, m := range deltaRangeRE.FindAllSubmatch(out, -1) {
		rs = append(rs, Range{Kind: kinds[string(m[1])], Begin: atou(string(m[2])), Length: atou(string(m[3]))})
	}
	return rs, nil
}

// toolDump runs thin_dump --dev-id and returns the device's mappings.
func toolDump(meta string, snap bool, dev uint64) ([]Mapping, error) {
	args := []string{"thin_dump"}
	if snap {
		args = append(args, "-m")
	}
	args = append(args, "--dev-id", strconv.FormatUint(dev, 10), meta)
	out, err := runTool(args...)
	if err != nil {
		return nil, err
	}
	return parseDump(out), nil
}

func parseDump(out []byte) []Mapping {
	var ms []Mapping
	for _, line := range bytes.Split(out, []byte("\n")) {
		if m := dumpRangeRE.FindSubmatch(line); m != nil {
			b, d, n, tm := atou(string(m[1])), atou(string(m[2])), atou(string(m[3])), atou(string(m[4]))
			for i := uint64(0); i < n; i++ {
				ms = append(ms, Mapping{Block: b + i, DataBlock: d + i, Time: uint32(tm)})
			}
		} else if m := dumpSingleRE.FindSubmatch(line); m != nil {
			ms = append(ms, Mapping{Block: atou(string(m[1])), DataBlock: atou(string(m[2])), Time: uint32(atou(string(m[3])))})
		}
	}
	return ms
}

// toolDevices runs thin_dump --skip-mappings and returns the devices.
func toolDevices(meta string, snap bool) ([]DeviceDetails, error) {
	args := []string{"thin_dump", "--skip-mappings"}
	if snap {
		args = append(args, "-m")
	}
	out, err := runTool(append(args, meta)...)
	if err != nil {
		return nil, err
	}
	var ds []DeviceDetails
	for _, m := range dumpDevRE.FindAllSubmatch(out, -1) {
		ds = append(ds, DeviceDetails{ID: atou(string(m[1])), MappedBlocks: atou(string(m[2])), TransactionID: atou(string(m[3])),
			CreationTime: uint32(atou(string(m[4]))), SnapshottedTime: uint32(atou(string(m[5])))})
	}
	return ds, nil
}

// collect returns what Diff reports.
func diffRanges(m *Metadata, left, right uint64, opts DiffOptions) ([]Range, error) {
	var rs []Range
	err := m.Diff(context.Background(), left, right, opts, func(r Range) error {
		rs = append(rs, r)
		return nil
	})
	return rs, err
}

func mappings(m *Metadata, dev, end uint64) ([]Mapping, error) {
	var ms []Mapping
	err := m.Mappings(context.Background(), dev, end, func(x Mapping) error {
		ms = append(ms, x)
		return nil
	})
	return ms, err
}

func mappedRanges(m *Metadata, dev, end uint64) ([]Range, error) {
	var rs []Range
	err := m.MappedRanges(context.Background(), dev, end, func(r Range) error {
		rs = append(rs, r)
		return nil
	})
	return rs, err
}

// filterDiff turns thin_delta's complete ranges into what Diff reports
// with opts: Same only from SameFrom on, nothing from End on, adjacent
// ranges of one kind merged.
func filterDiff(rs []Range, opts DiffOptions) []Range {
	var out []Range
	add := func(k Kind, b, e uint64) {
		if b >= e {
			return
		}
		if n := len(out); n > 0 && out[n-1].Kind == k && out[n-1].End() == b {
			out[n-1].Length += e - b
			return
		}
		out = append(out, Range{Kind: k, Begin: b, Length: e - b})
	}
	for _, r := range rs {
		b, e := r.Begin, r.End()
		if opts.End != 0 {
			e = min(e, opts.End)
		}
		if r.Kind == Same {
			b = max(b, opts.SameFrom)
		}
		add(r.Kind, b, e)
	}
	return out
}

// runsOf merges mappings into virtually contiguous runs, as MappedRanges
// reports them.
func runsOf(ms []Mapping) []Range {
	var out []Range
	for _, x := range ms {
		if n := len(out); n > 0 && out[n-1].End() == x.Block {
			out[n-1].Length++
			continue
		}
		out = append(out, Range{Kind: Mapped, Begin: x.Block, Length: 1})
	}
	return out
}

// Editing metadata images, for tests that hold or damage them.

func readBlock(t testing.TB, img []byte, blk uint64) []byte {
	t.Helper()
	return img[blk*BlockSize : (blk+1)*BlockSize]
}

// sealBlock recomputes a block's checksum with salt.
func sealBlock(b []byte, salt uint32) {
	binary.LittleEndian.PutUint32(b[0:4], blockChecksum(b)^salt)
}

// holdSnapshot makes a file's metadata hold a metadata snapshot as the
// kernel's reserve_metadata_snap does: a copy of the superblock at a free
// block (the last one of the file, which thin_restore never uses), with
// its space map roots zeroed, its own location, and held_root set in the
// live superblock. It returns the copy's block.
func holdSnapshot(t testing.TB, path string) uint64 {
	t.Helper()
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := uint64(len(img)/BlockSize - 1)
	cp := readBlock(t, img, h)
	if !bytes.Equal(cp, make([]byte, BlockSize)) {
		t.Fatalf("block %d of %s is in use", h, path)
	}
	copy(cp, readBlock(t, img, 0))
	clear(cp[sbDataSpaceMap : sbDataSpaceMap+256])
	binary.LittleEndian.PutUint64(cp[sbBlocknr:], h)
	sealBlock(cp, superblockSalt)
	sb := readBlock(t, img, 0)
	binary.LittleEndian.PutUint64(sb[sbHeldRoot:], h)
	sealBlock(sb, superblockSalt)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

func isMetadataError(err error) bool {
	var me *MetadataError
	return errors.Is(err, ErrMetadata) && errors.As(err, &me)
}
