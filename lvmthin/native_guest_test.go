package lvmthin

// The native metadata reader against the thin tools on metadata the real
// kernel wrote, in the User-Mode Linux guest (TestGuest).

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"unsafe"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/thinmeta"
	"github.com/thinback/thinback/lvmthin/thinxml"
)

// roundDev is a live thin LV of the rounds test.
type roundDev struct {
	name string
	id   uint32
	size int64
}

// roundsEnv reads a positive integer setting of the rounds test.
func roundsEnv(t *testing.T, name string, def int) int {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// TestKernelNativeRounds runs seeded random rounds on a real thin pool:
// writes (small, unaligned, whole-leaf and multi-leaf runs), snapshots of
// the origin and of snapshots, discards, removals, growth and shrink of
// LVs. After each round it holds the metadata snapshot and compares, for
// every pair of live devices, the native diff with thin_delta -m, and for
// every device the native full with thin_dump -m: the ranges themselves
// and the extents Discover builds from them (with the LVs' sizes) must be
// identical. THINBACK_SEED replays a run; THINBACK_ROUNDS and
// THINBACK_ROUND_SEEDS change its length (default 3 seeds of 50 rounds;
// THINBACK_ROUNDS=100 is the longer run).
// With THINBACK_THINMETA_FIXTURES set to a directory, it copies the held
// metadata there now and then, as fixtures for the host's tests.
func TestKernelNativeRounds(t *testing.T) {
	guestOnly(t)
	r := testRand(t)
	seeds := roundsEnv(t, "THINBACK_ROUND_SEEDS", 3)
	rounds := roundsEnv(t, "THINBACK_ROUNDS", 50)
	chunks := []int64{64 << 10, 128 << 10, 192 << 10, 256 << 10}
	for s := 0; s < seeds; s++ {
		seed := r.Uint64()
		chunk := chunks[(s+int(seed%4))%len(chunks)]
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			t.Logf("sub-seed %d, chunk %d KiB", seed, chunk>>10)
			runRounds(t, rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), s, chunk, rounds)
		})
	}
}

func runRounds(t *testing.T, r *rand.Rand, seedIndex int, chunk int64, rounds int) {
	ctx := context.Background()
	vg := "tb-rounds"
	pool := newPool(t, vg, "-s", "3G", "-p", "2G", "-c", strconv.FormatInt(chunk>>10, 10)+"k")
	// Room for the trees of several diverged devices, and for what the
	// kernel copies while a metadata snapshot is held.
	sh(t, "lvextend -q --poolmetadatasize +12M "+pool.String())
	const mib = 1 << 20
	size := int64(128+r.IntN(4)*64) * mib
	newThinLV(t, pool, "origin", strconv.FormatInt(size/mib, 10)+"M")
	devs := []*roundDev{{name: "origin", id: lookup(t, Name{vg, "origin"}).ThinID, size: size}}
	buf := alignedBuffer(4 << 20)
	for i := range buf {
		buf[i] = byte(r.Uint32())
	}
	// Fill some of the origin first (none, some or all of it), so that
	// snapshots share trees of several levels, or start as one leaf.
	if fill := []float64{0, 0.4, 1}[seedIndex%3]; fill > 0 {
		for off := int64(0); off < size; off += 8 * mib {
			if r.Float64() < fill {
				writeDirect(t, "/dev/"+vg+"/origin", buf, off, 8*mib)
			}
		}
	}
	fixtures := os.Getenv("THINBACK_THINMETA_FIXTURES")
	var stats roundStats
	nsnap := 0
	for round := 0; round < rounds; round++ {
		st, err := GetPoolStatus(ctx, pool)
		if err != nil {
			t.Fatal(err)
		}
		full := st.DataUsed*10 > st.DataTotal*6 || st.MetadataUsed*10 > st.MetadataTotal*6
		var did []string
		for op := 0; op < 1+r.IntN(3); op++ {
			d := devs[r.IntN(len(devs))]
			dev := "/dev/" + vg + "/" + d.name
			switch k := r.IntN(12); {
			case k < 5 && !full: // write
				blocks := int64(d.size / chunk)
				var off, n int64
				switch w := r.IntN(10); {
				case w < 5: // small, maybe not chunk-aligned
					n = 4096 * (1 + r.Int64N(2*chunk/4096))
					off = 4096 * r.Int64N((d.size-n)/4096+1)
				case w < 8: // about a leaf's worth of blocks (126 to 252)
					nb := min(blocks, 100+r.Int64N(160))
					n, off = nb*chunk, r.Int64N(blocks-nb+1)*chunk
				default: // several leaves
					nb := min(blocks, 253+r.Int64N(800))
					n, off = nb*chunk, r.Int64N(blocks-nb+1)*chunk
				}
				writeDirect(t, dev, buf, off, n)
				did = append(did, fmt.Sprintf("write %s [%d, +%d)", d.name, off, n))
			case k < 7 && len(devs) < 5: // snapshot of a random device
				nsnap++
				name := fmt.Sprintf("s%d", nsnap)
				sh(t, fmt.Sprintf("lvcreate -q -s -kn -n %s %s/%s", name, vg, d.name))
				devs = append(devs, &roundDev{name: name, id: lookup(t, Name{vg, name}).ThinID, size: d.size})
				did = append(did, "snapshot "+d.name+" as "+name)
			case k < 9: // discard
				var off, n int64
				if r.IntN(2) == 0 {
					n = chunk * (1 + r.Int64N(300))
					off = chunk * r.Int64N(d.size/chunk)
				} else {
					n = 4096 * (1 + r.Int64N(64))
					off = 4096 * r.Int64N(d.size/4096)
				}
				n = min(n, d.size-off)
				discard(t, dev, off, n)
				did = append(did, fmt.Sprintf("discard %s [%d, +%d)", d.name, off, n))
			case k < 10 && len(devs) > 2: // remove
				sh(t, fmt.Sprintf("lvremove -q -f %s/%s", vg, d.name))
				devs = slices.DeleteFunc(devs, func(x *roundDev) bool { return x == d })
				did = append(did, "remove "+d.name)
			case k < 11 || full: // grow or shrink
				ns := d.size + int64(1+r.IntN(16))*4*mib
				if r.IntN(2) == 0 || full {
					ns = max(16*mib, d.size-int64(1+r.IntN(16))*4*mib)
				}
				if ns == d.size { // already at the smallest size: lvresize refuses a no-op
					break
				}
				sh(t, fmt.Sprintf("lvresize -q -f -L %db %s/%s", ns, vg, d.name))
				did = append(did, fmt.Sprintf("resize %s %d -> %d", d.name, d.size, ns))
				d.size = ns
			}
		}
		t.Logf("round %d: %v", round, did)
		ms, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		compareRound(t, r, ms, devs, chunk, &stats)
		if fixtures != "" && round%33 == 32 {
			name := fmt.Sprintf("kernel-%dk-%d-%d.bin", chunk>>10, seedIndex, round)
			sh(t, fmt.Sprintf("dd if=%s of=%s bs=1M iflag=direct status=none", MetadataDevice(pool), filepath.Join(fixtures, name)))
		}
		if err := ms.Release(); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d diffs compared: native reads %d KiB with shared subtrees skipped, %d KiB reading both trees whole; %d fulls, %d KiB",
		stats.diffs, stats.skipBytes>>10, stats.wholeBytes>>10, stats.fulls, stats.fullBytes>>10)
}

type roundStats struct {
	diffs, fulls                     int
	skipBytes, wholeBytes, fullBytes int64
}

// writeDirect writes n bytes of buf's random data at off with O_DIRECT.
func writeDirect(t *testing.T, dev string, buf []byte, off, n int64) {
	t.Helper()
	f, err := os.OpenFile(dev, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for n > 0 {
		c := min(n, int64(len(buf)))
		// Rotate the data so that rewrites do not write the same bytes.
		buf[0]++
		if _, err := f.WriteAt(buf[:c], off); err != nil {
			t.Fatalf("write %s at %d: %v", dev, off, err)
		}
		off, n = off+c, n-c
	}
}

// discard discards [off, off+n) of a device (BLKDISCARD), as blkdiscard
// does.
func discard(t *testing.T, dev string, off, n int64) {
	t.Helper()
	if n <= 0 {
		return
	}
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const blkDiscard = 0x1277 // _IO(0x12, 119)
	rng := [2]uint64{uint64(off), uint64(n)}
	if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkDiscard, uintptr(unsafe.Pointer(&rng))); errno != 0 {
		t.Fatalf("discard %s [%d, +%d): %v", dev, off, n, errno)
	}
}

// toolOutput runs a thin tool on the held metadata snapshot.
func toolOutput(t *testing.T, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

// toolRanges parses thin tool output into ranges through thinback's own
// XML scanner (package thinxml), merging adjacent ranges of one kind.
func toolRanges(t *testing.T, out []byte, opt thinxml.Options) []thinmeta.Range {
	t.Helper()
	kinds := map[thinxml.RangeKind]thinmeta.Kind{thinxml.RangeSame: thinmeta.Same, thinxml.RangeDifferent: thinmeta.Different,
		thinxml.RangeLeftOnly: thinmeta.LeftOnly, thinxml.RangeRightOnly: thinmeta.RightOnly, thinxml.RangeMapped: thinmeta.Mapped}
	var rs []thinmeta.Range
	opt.TempDir = t.TempDir()
	err := thinxml.Scan(bytes.NewReader(out), opt, thinxml.Handler{
		Superblock: func(uint64) error { return nil },
		Range: func(kind thinxml.RangeKind, begin, length uint64) error {
			k := kinds[kind]
			if n := len(rs); n > 0 && rs[n-1].Kind == k && rs[n-1].End() == begin {
				rs[n-1].Length += length
				return nil
			}
			rs = append(rs, thinmeta.Range{Kind: k, Begin: begin, Length: length})
			return nil
		},
	})
	if err != nil {
		t.Fatalf("parsing tool output: %v\n%s", err, out)
	}
	return rs
}

var (
	dumpDeviceRE = regexp.MustCompile(`<device dev_id="(\d+)"`)
	dumpRangeRE  = regexp.MustCompile(`<range_mapping origin_begin="(\d+)" data_begin="(\d+)" length="(\d+)" time="(\d+)"/>`)
	dumpSingleRE = regexp.MustCompile(`<single_mapping origin_block="(\d+)" data_block="(\d+)" time="(\d+)"/>`)
)

// dumpMappings parses thin_dump 0.9 output into each device's mappings.
func dumpMappings(out []byte) map[uint64][]thinmeta.Mapping {
	u := func(b []byte) uint64 {
		v, err := strconv.ParseUint(string(b), 10, 64)
		if err != nil {
			panic(err)
		}
		return v
	}
	all := map[uint64][]thinmeta.Mapping{}
	var dev uint64
	for _, line := range bytes.Split(out, []byte("\n")) {
		if m := dumpDeviceRE.FindSubmatch(line); m != nil {
			dev = u(m[1])
			all[dev] = nil
		} else if m := dumpRangeRE.FindSubmatch(line); m != nil {
			b, d, n, tm := u(m[1]), u(m[2]), u(m[3]), u(m[4])
			for i := uint64(0); i < n; i++ {
				all[dev] = append(all[dev], thinmeta.Mapping{Block: b + i, DataBlock: d + i, Time: uint32(tm)})
			}
		} else if m := dumpSingleRE.FindSubmatch(line); m != nil {
			all[dev] = append(all[dev], thinmeta.Mapping{Block: u(m[1]), DataBlock: u(m[2]), Time: uint32(u(m[3]))})
		}
	}
	return all
}

// compareRound compares the native reader with the tools on the held
// metadata snapshot, for every device and every pair of devices.
func compareRound(t *testing.T, r *rand.Rand, ms *MetadataSnap, devs []*roundDev, chunk int64, st *roundStats) {
	t.Helper()
	ctx := context.Background()
	meta := MetadataDevice(ms.Pool())
	m, err := thinmeta.Open(meta, thinmeta.Options{Snapshot: true, HeldRoot: ms.Root()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	extents := func(x *Extents, err error) []archive.Extent {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer x.Close()
		return collectExtents(t, x)
	}

	dump := toolOutput(t, "thin_dump", "-m", meta)
	want := dumpMappings(dump)
	for _, d := range devs {
		id := uint64(d.id)
		var got []thinmeta.Mapping
		if err := m.Mappings(ctx, id, 0, func(x thinmeta.Mapping) error { got = append(got, x); return nil }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want[id]) || len(got) > 0 && !reflect.DeepEqual(got, want[id]) {
			t.Fatalf("mappings of %s (thin device %d): %d native, %d from thin_dump", d.name, id, len(got), len(want[id]))
		}
		before := m.Stats().BytesRead
		var runs []thinmeta.Range
		if err := m.MappedRanges(ctx, id, 0, func(x thinmeta.Range) error { runs = append(runs, x); return nil }); err != nil {
			t.Fatal(err)
		}
		st.fulls++
		st.fullBytes += m.Stats().BytesRead - before
		if wantRuns := toolRanges(t, dump, thinxml.Options{Dump: true, DumpDev: d.id}); !reflect.DeepEqual(runs, wantRuns) {
			t.Fatalf("mapped ranges of %s: native %v, thin_dump %v", d.name, runs, wantRuns)
		}
		opts := DiscoverOptions{Snap: ThinDevice{ID: d.id, Size: d.size}, BlockSize: chunk, TempDir: t.TempDir()}
		byTools := extents(parseDelta(bytes.NewReader(dump), opts))
		native := extents(discoverIn(ctx, m, opts))
		if !reflect.DeepEqual(native, byTools) {
			t.Fatalf("full of %s: native extents\n%v\nthin_dump's\n%v", d.name, native, byTools)
		}
	}

	for i, a := range devs {
		for _, b := range devs[i+1:] {
			if r.IntN(2) == 0 {
				a, b = b, a
			}
			out := toolOutput(t, "thin_delta", "-m", "--snap1", strconv.FormatUint(uint64(a.id), 10),
				"--snap2", strconv.FormatUint(uint64(b.id), 10), meta)
			want := toolRanges(t, out, thinxml.Options{Left: a.id, Right: b.id})
			diff := func(opts thinmeta.DiffOptions) ([]thinmeta.Range, int64) {
				t.Helper()
				before := m.Stats().BytesRead
				var rs []thinmeta.Range
				if err := m.Diff(ctx, uint64(a.id), uint64(b.id), opts, func(x thinmeta.Range) error { rs = append(rs, x); return nil }); err != nil {
					t.Fatal(err)
				}
				return rs, m.Stats().BytesRead - before
			}
			whole, wholeBytes := diff(thinmeta.DiffOptions{})
			if !reflect.DeepEqual(whole, want) {
				t.Fatalf("diff %s -> %s: native\n%v\nthin_delta\n%v", a.name, b.name, whole, want)
			}
			changed, skipBytes := diff(thinmeta.DiffOptions{SameFrom: math.MaxUint64})
			var wantChanged []thinmeta.Range
			for _, x := range want {
				if x.Kind != thinmeta.Same {
					wantChanged = append(wantChanged, x)
				}
			}
			if !reflect.DeepEqual(changed, wantChanged) {
				t.Fatalf("diff %s -> %s, shared subtrees skipped: native\n%v\nthin_delta\n%v", a.name, b.name, changed, wantChanged)
			}
			if skipBytes > wholeBytes {
				t.Errorf("diff %s -> %s read %d bytes skipping shared subtrees, %d reading both trees", a.name, b.name, skipBytes, wholeBytes)
			}
			st.diffs++
			st.skipBytes += skipBytes
			st.wholeBytes += wholeBytes

			opts := DiscoverOptions{Base: &ThinDevice{ID: a.id, Size: a.size}, Snap: ThinDevice{ID: b.id, Size: b.size},
				BlockSize: chunk, TempDir: t.TempDir()}
			byTools := extents(parseDelta(bytes.NewReader(out), opts))
			native := extents(discoverIn(ctx, m, opts))
			if !reflect.DeepEqual(native, byTools) {
				t.Fatalf("delta %s (%d bytes) -> %s (%d bytes): native extents\n%v\nthin_delta's\n%v",
					a.name, a.size, b.name, b.size, native, byTools)
			}
		}
	}
}

// TestKernelNativeSkips: a diff of a snapshot and its origin after a
// small write reads the paths to the changed leaf, not the trees.
func TestKernelNativeSkips(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-skips", "-s", "2G", "-p", "1G")
	const size = 512 << 20
	vol := newThinLV(t, pool, "vol", "512M")
	dev := "/dev/tb-skips/vol"
	buf := alignedBuffer(4 << 20)
	writeDirect(t, dev, buf, 0, size)
	s1, err := CreateSnapshot(ctx, vol, "vol-s1", SnapshotOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	writeDirect(t, dev, buf, 300<<20, 4096)
	s2, err := CreateSnapshot(ctx, vol, "vol-s2", SnapshotOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Release()
	if dir := os.Getenv("THINBACK_THINMETA_FIXTURES"); dir != "" {
		sh(t, fmt.Sprintf("dd if=%s of=%s bs=1M iflag=direct status=none", MetadataDevice(pool), filepath.Join(dir, "kernel-skips.bin")))
	}
	m, err := thinmeta.Open(MetadataDevice(pool), thinmeta.Options{Snapshot: true, HeldRoot: ms.Root()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	read := func(opts thinmeta.DiffOptions) ([]thinmeta.Range, int64) {
		t.Helper()
		before := m.Stats().BlocksRead
		var rs []thinmeta.Range
		if err := m.Diff(ctx, uint64(s1.ThinID), uint64(s2.ThinID), opts, func(x thinmeta.Range) error { rs = append(rs, x); return nil }); err != nil {
			t.Fatal(err)
		}
		return rs, m.Stats().BlocksRead - before
	}
	changed, skipBlocks := read(thinmeta.DiffOptions{SameFrom: math.MaxUint64})
	want := []thinmeta.Range{{Kind: thinmeta.Different, Begin: 300 << 20 / (64 << 10), Length: 1}}
	if !reflect.DeepEqual(changed, want) {
		t.Fatalf("diff after one 4 KiB write: %v, want %v", changed, want)
	}
	_, wholeBlocks := read(thinmeta.DiffOptions{})
	// 8192 mappings: two levels of at least 33 leaves. Skipping, the diff
	// reads the top-level tree (one leaf, then cached), the two roots and
	// the two copies of the changed leaf.
	t.Logf("blocks read: %d skipping shared subtrees, %d reading both trees", skipBlocks, wholeBlocks)
	if skipBlocks > 5 || wholeBlocks < 60 {
		t.Errorf("blocks read: %d skipping shared subtrees (want at most 5), %d reading both trees (want at least 60)", skipBlocks, wholeBlocks)
	}
	if err := ms.Release(); err != nil {
		t.Fatal(err)
	}
	// And OpenDelta, native and with the tools, agree.
	var exts [2][]archive.Extent
	for i, disc := range []Discovery{DiscoverNative, DiscoverTools} {
		d, err := OpenDelta(ctx, DeltaOptions{Snap: s2, Base: s1, Discovery: disc, TempDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		exts[i] = collectExtents(t, d)
		st := d.Stats()
		t.Logf("%s: %d extents, %d metadata bytes, metadata snapshot held %v", disc, st.Extents, st.MetadataBytes, st.MetadataSnapHeld)
		if st.Discovery != disc || (disc == DiscoverNative) != (st.MetadataBytes > 0) {
			t.Errorf("stats %+v", st)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if !reflect.DeepEqual(exts[0], exts[1]) || len(exts[0]) != 1 {
		t.Errorf("OpenDelta: native %v, tools %v", exts[0], exts[1])
	}
}
