package lvmthin

// Tests that need root, device-mapper and loop devices: they run inside a
// User-Mode Linux guest (TestGuest boots it) and skip elsewhere.

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/lvmtest"
)

func TestMain(m *testing.M) {
	// The test binary doubles as a helper process for the tests that
	// signal or race a thinback process.
	if mode := os.Getenv("THINBACK_TEST_HELPER"); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

func guestOnly(t *testing.T) {
	t.Helper()
	if !lvmtest.InGuest() {
		t.Skip("needs root and a kernel with dm-thin: runs in the UML guest (TestGuest)")
	}
}

// sh runs a shell script in the guest and fails the test if it fails.
func sh(t *testing.T, script string) string {
	t.Helper()
	out, err := exec.Command("bash", "-euc", script).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return strings.TrimSpace(string(out))
}

// newPool creates a VG on a loop device with a thin pool "pool" (64 KiB
// chunks) and removes it all at the end of the test.
func newPool(t *testing.T, vg string, mkpoolArgs ...string) Name {
	t.Helper()
	mkpool := os.Getenv("THINBACK_UML_MKPOOL")
	args := append(append([]string{}, mkpoolArgs...), vg)
	out, err := exec.Command(mkpool, args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("mkpool %s: %v\n%s", vg, err, ee.Stderr)
		}
		t.Fatalf("mkpool %s: %v", vg, err)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		_ = exec.Command("vgremove", "-f", "-y", vg).Run()
		_ = exec.Command("losetup", "-d", loop).Run()
		_ = os.Remove(filepath.Join(os.Getenv("THINBACK_UML_WORK"), vg+".img"))
	})
	return Name{VG: vg, LV: "pool"}
}

func newThinLV(t *testing.T, pool Name, name, size string) Name {
	t.Helper()
	sh(t, fmt.Sprintf("lvcreate -q -V %s -T %s -n %s", size, pool, name))
	return Name{VG: pool.VG, LV: name}
}

func lookup(t *testing.T, n Name) *LV {
	t.Helper()
	lv, err := Lookup(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

func heldRoot(t *testing.T, pool Name) uint64 {
	t.Helper()
	st, err := GetPoolStatus(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	return st.HeldRoot
}

func TestKernelLVM(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-lvm")
	vol := newThinLV(t, pool, "my-vol", "64M")

	lv := lookup(t, vol)
	if !lv.IsThin() || lv.IsThinSnapshot() || !lv.Active || lv.SkipActivation || lv.Size != 64<<20 ||
		lv.ChunkSize != 64<<10 || lv.ThinID == 0 || lv.Pool != "pool" || lv.UUID == "" || lv.Time.IsZero() ||
		lv.DMPath != "/dev/mapper/tb--lvm-my--vol" {
		t.Fatalf("thin LV: %+v", lv)
	}
	if _, err := os.Stat(lv.DMPath); err != nil {
		t.Fatalf("dm path: %v", err)
	}
	for _, spelling := range []string{"tb-lvm/my-vol", "/dev/tb-lvm/my-vol", lv.DMPath} {
		if n, err := ParseName(spelling); err != nil || n != vol {
			t.Errorf("ParseName(%q) = %v, %v", spelling, n, err)
		}
	}
	if _, err := Lookup(ctx, Name{"tb-lvm", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing LV: %v", err)
	}
	if _, err := Lookup(ctx, Name{"tb-nope", "x"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing VG: %v", err)
	}
	if p := lookup(t, pool); !p.IsThinPool() || p.ChunkSize != 64<<10 {
		t.Errorf("pool: %+v", p)
	}

	// Snapshots: thin, read-only, inactive with the skip flag.
	s1, err := CreateSnapshot(ctx, vol, "my-vol-s1", SnapshotOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if !s1.IsThinSnapshot() || s1.Origin != "my-vol" || s1.Active || !s1.SkipActivation || s1.Attr[1] != 'r' ||
		s1.ChunkSize != 64<<10 || s1.ThinID == lv.ThinID {
		t.Fatalf("snapshot: %+v", s1)
	}
	s2, err := CreateSnapshot(ctx, vol, "my-vol-s2", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Attr[1] != 'w' {
		t.Errorf("writable snapshot attr %s", s2.Attr)
	}
	if _, err := CreateSnapshot(ctx, pool, "x", SnapshotOptions{}); !errors.Is(err, ErrNotThin) {
		t.Errorf("snapshot of a pool: %v", err)
	}
	if _, err := CreateSnapshot(ctx, Name{"tb-lvm", "nope"}, "x", SnapshotOptions{}); !errors.Is(err, ErrNotFound) {
		t.Errorf("snapshot of a missing LV: %v", err)
	}
	snaps, err := Snapshots(ctx, vol)
	if err != nil || len(snaps) != 2 || snaps[0].Name != "my-vol-s1" || snaps[1].Name != "my-vol-s2" {
		t.Fatalf("Snapshots = %v, %v", snaps, err)
	}

	// Activation state is restored: an inactive snapshot goes back to
	// inactive, an active volume stays active.
	a, err := EnsureActive(ctx, s1.FullName())
	if err != nil {
		t.Fatal(err)
	}
	if !a.Activated() || !lookup(t, s1.FullName()).Active {
		t.Fatal("EnsureActive did not activate the snapshot")
	}
	if _, err := os.Stat(s1.DMPath); err != nil {
		t.Fatalf("activated snapshot device: %v", err)
	}
	if err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if lookup(t, s1.FullName()).Active {
		t.Fatal("Restore left the snapshot active")
	}
	if err := a.Restore(ctx); err != nil {
		t.Fatalf("second Restore: %v", err)
	}
	a, err = EnsureActive(ctx, vol)
	if err != nil || a.Activated() {
		t.Fatalf("EnsureActive of an active LV: %v, activated %v", err, a.Activated())
	}
	if err := a.Restore(ctx); err != nil || !lookup(t, vol).Active {
		t.Fatalf("Restore deactivated an LV it did not activate: %v", err)
	}
	if err := Activate(ctx, s2.FullName()); err != nil {
		t.Fatal(err)
	}
	if err := Deactivate(ctx, s2.FullName()); err != nil {
		t.Fatal(err)
	}
	if err := Activate(ctx, Name{"tb-lvm", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("activate a missing LV: %v", err)
	}

	// Removal: only snapshots.
	if err := RemoveSnapshot(ctx, vol); !errors.Is(err, ErrNotSnapshot) {
		t.Fatalf("RemoveSnapshot of the origin: %v", err)
	}
	if !lookup(t, vol).IsThin() {
		t.Fatal("origin gone")
	}
	if err := RemoveSnapshot(ctx, s2.FullName()); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(ctx, s2.FullName()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed snapshot still there: %v", err)
	}
	if err := RemoveSnapshot(ctx, s2.FullName()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing it again: %v", err)
	}
}

func TestKernelMetadataSnap(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-msnap")
	newThinLV(t, pool, "v", "16M")

	if heldRoot(t, pool) != 0 {
		t.Fatal("new pool holds a metadata snapshot")
	}
	ms, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if root := heldRoot(t, pool); root == 0 || root != ms.Root() {
		t.Fatalf("held root %d, reserved %d", root, ms.Root())
	}
	// A second reserver in the same process is locked out.
	if _, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{NoWait: true}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second reserve: %v, want ErrLocked", err)
	}
	if err := ms.Release(); err != nil {
		t.Fatal(err)
	}
	if err := ms.Release(); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if heldRoot(t, pool) != 0 {
		t.Fatal("still held after Release")
	}

	// Released on panic, by the deferred Release.
	func() {
		defer func() {
			if r := recover(); r == nil {
				t.Fatal("no panic")
			}
		}()
		ms, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer ms.Release()
		panic("boom")
	}()
	if heldRoot(t, pool) != 0 {
		t.Fatal("still held after a panic")
	}

	// Released when the caller's context is already cancelled.
	cctx, cancel := context.WithCancel(ctx)
	ms, err = ReserveMetadataSnap(cctx, pool, ReserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := ms.Release(); err != nil || heldRoot(t, pool) != 0 {
		t.Fatalf("release after cancel: %v", err)
	}

	// A snapshot reserved by hand is stale to us: refused, with the way out.
	sh(t, "dmsetup message tb--msnap-pool-tpool 0 reserve_metadata_snap")
	_, err = ReserveMetadataSnap(ctx, pool, ReserveOptions{})
	if !errors.Is(err, ErrStaleMetadataSnap) {
		t.Fatalf("reserve with a stale snapshot: %v", err)
	}
	for _, want := range []string{"tb-msnap/pool", "--release-stale-metadata-snap", "release_metadata_snap"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("stale error %q does not mention %q", err, want)
		}
	}
	if heldRoot(t, pool) == 0 {
		t.Fatal("the refused reserve released the stale snapshot")
	}
	released, err := ReleaseStale(ctx, pool, ReserveOptions{})
	if err != nil || !released || heldRoot(t, pool) != 0 {
		t.Fatalf("ReleaseStale = %v, %v", released, err)
	}
	if released, err := ReleaseStale(ctx, pool, ReserveOptions{}); err != nil || released {
		t.Fatalf("ReleaseStale with nothing held = %v, %v", released, err)
	}
	// ... or released on request by the reserve itself.
	sh(t, "dmsetup message tb--msnap-pool-tpool 0 reserve_metadata_snap")
	stale := heldRoot(t, pool)
	ms, err = ReserveMetadataSnap(ctx, pool, ReserveOptions{ReleaseStale: true})
	if err != nil {
		t.Fatal(err)
	}
	if ms.Root() == 0 || heldRoot(t, pool) != ms.Root() {
		t.Errorf("stale root %d, ours %d, held %d", stale, ms.Root(), heldRoot(t, pool))
	}
	// Release refuses to release a snapshot that is no longer ours.
	sh(t, "dmsetup message tb--msnap-pool-tpool 0 release_metadata_snap; lvcreate -q -V 8M -T tb-msnap/pool -n w; "+
		"dmsetup message tb--msnap-pool-tpool 0 reserve_metadata_snap")
	if heldRoot(t, pool) == ms.Root() {
		t.Log("the kernel reused the root block; cannot test Release of a foreign snapshot")
		_ = ms.Release()
	} else {
		if err := ms.Release(); !errors.Is(err, ErrStaleMetadataSnap) || heldRoot(t, pool) == 0 {
			t.Fatalf("Release of a foreign snapshot: %v", err)
		}
		sh(t, "dmsetup message tb--msnap-pool-tpool 0 release_metadata_snap")
	}

	if _, err := GetPoolStatus(ctx, Name{"tb-msnap", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("status of a missing pool: %v", err)
	}
}

func TestKernelPoolOutOfSpace(t *testing.T) {
	guestOnly(t)
	pool := newPool(t, "tb-full", "-s", "256M", "-p", "8M")
	sh(t, "lvchange -q --errorwhenfull y tb-full/pool")
	newThinLV(t, pool, "big", "32M")
	sh(t, "dd if=/dev/zero of=/dev/tb-full/big bs=1M count=16 oflag=direct status=none || true")
	_, err := ReserveMetadataSnap(context.Background(), pool, ReserveOptions{})
	if !errors.Is(err, ErrPoolOutOfSpace) || !strings.Contains(err.Error(), "lvextend") {
		t.Fatalf("reserve on a full pool: %v", err)
	}
	if heldRoot(t, pool) != 0 {
		t.Fatal("held after a refusal")
	}
}

// helperCmd re-executes the test binary as a helper process.
func helperCmd(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run", "^$")
	cmd.Env = append(append(os.Environ(), "THINBACK_TEST_HELPER="+mode), env...)
	return cmd
}

// runHelper is the helper process's main.
func runHelper(mode string) int {
	if p := os.Getenv("THINBACK_TEST_THIN_DELTA"); p != "" {
		programs.thinDelta = p
	}
	ctx := context.Background()
	if os.Getenv("THINBACK_TEST_NOTIFY") == "1" {
		// What the CLI does: signals cancel the context.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
	}
	switch mode {
	case "hold":
		pool, err := ParseName(os.Getenv("THINBACK_TEST_POOL"))
		if err != nil {
			fmt.Println("ERROR:", err)
			return 2
		}
		hold, _ := time.ParseDuration(os.Getenv("THINBACK_TEST_HOLD"))
		ms, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{NoWait: os.Getenv("THINBACK_TEST_NOWAIT") == "1"})
		if err != nil {
			fmt.Println("ERROR:", err)
			if errors.Is(err, ErrLocked) {
				return 5
			}
			return 3
		}
		fmt.Println("RESERVED", time.Now().UnixNano(), ms.Root())
		time.Sleep(hold)
		// The pool's status must show our snapshot, no other.
		if st, err := GetPoolStatus(ctx, pool); err != nil || st.HeldRoot != ms.Root() {
			fmt.Println("ERROR: status while holding:", st, err)
			_ = ms.Release()
			return 3
		}
		fmt.Println("RELEASING", time.Now().UnixNano())
		if err := ms.Release(); err != nil {
			fmt.Println("ERROR:", err)
			return 3
		}
		return 0
	case "delta":
		snap, err := Lookup(ctx, mustName(os.Getenv("THINBACK_TEST_SNAP")))
		if err != nil {
			fmt.Println("ERROR:", err)
			return 2
		}
		base, err := Lookup(ctx, mustName(os.Getenv("THINBACK_TEST_BASE")))
		if err != nil {
			fmt.Println("ERROR:", err)
			return 2
		}
		fmt.Println("OPENING")
		d, err := OpenDelta(ctx, DeltaOptions{Snap: snap, Base: base, Discovery: Discovery(os.Getenv("THINBACK_TEST_DISCOVERY"))})
		if err != nil {
			fmt.Println("ERROR:", err)
			if errors.Is(err, ErrStaleMetadataSnap) {
				return 4
			}
			return 3
		}
		fmt.Println("OPENED", d.Stats().Extents)
		if err := d.Close(); err != nil {
			fmt.Println("ERROR:", err)
			return 3
		}
		return 0
	}
	fmt.Println("unknown helper mode", mode)
	return 2
}

func mustName(s string) Name {
	n, err := ParseName(s)
	if err != nil {
		panic(err)
	}
	return n
}

// TestKernelConcurrentReservers races two processes for one pool's
// metadata snapshot: the lock serializes them (without it the second would
// find the first's snapshot and refuse it as stale), and their holds never
// overlap.
func TestKernelConcurrentReservers(t *testing.T) {
	guestOnly(t)
	pool := newPool(t, "tb-race")
	newThinLV(t, pool, "v", "16M")
	type result struct {
		out string
		err error
	}
	results := make(chan result, 2)
	for i := 0; i < 2; i++ {
		go func() {
			out, err := helperCmd("hold", "THINBACK_TEST_POOL="+pool.String(), "THINBACK_TEST_HOLD=700ms").CombinedOutput()
			results <- result{string(out), err}
		}()
	}
	type hold struct{ from, to int64 }
	var holds []hold
	for i := 0; i < 2; i++ {
		r := <-results
		if r.err != nil {
			t.Fatalf("helper: %v\n%s", r.err, r.out)
		}
		var h hold
		for _, line := range strings.Split(r.out, "\n") {
			f := strings.Fields(line)
			if len(f) >= 2 && f[0] == "RESERVED" {
				h.from, _ = strconv.ParseInt(f[1], 10, 64)
			}
			if len(f) >= 2 && f[0] == "RELEASING" {
				h.to, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
		if h.from == 0 || h.to == 0 {
			t.Fatalf("helper output %q", r.out)
		}
		holds = append(holds, h)
	}
	if holds[0].from < holds[1].to && holds[1].from < holds[0].to {
		t.Fatalf("both held the metadata snapshot at once: %+v", holds)
	}
	if heldRoot(t, pool) != 0 {
		t.Fatal("held after both finished")
	}

	// With NoWait, the second is refused instead.
	ms, err := ReserveMetadataSnap(context.Background(), pool, ReserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Release()
	out, err := helperCmd("hold", "THINBACK_TEST_POOL="+pool.String(), "THINBACK_TEST_NOWAIT=1").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("NoWait helper: %v\n%s", err, out)
	}
}

// writeOp is a write (or discard) made to the origin in a round.
type writeOp struct {
	off, length int64
	discard     bool
}

// mutate writes random data at random offsets (several sizes, direct I/O)
// and discards some chunk-aligned ranges.
func mutate(t *testing.T, r *rand.Rand, dev string, size int64, writes, discards int) []writeOp {
	t.Helper()
	var ops []writeOp
	var script strings.Builder
	for i := 0; i < discards; i++ {
		const chunk = 64 << 10
		n := int64(1 + r.IntN(8))
		off := r.Int64N(size/chunk-n+1) * chunk
		ops = append(ops, writeOp{off, n * chunk, true})
		fmt.Fprintf(&script, "blkdiscard -o %d -l %d %s\n", off, n*chunk, dev)
	}
	sizes := []int64{4 << 10, 12 << 10, 64 << 10, 200 << 10, 1 << 20}
	for i := 0; i < writes; i++ {
		bs := sizes[r.IntN(len(sizes))]
		off := r.Int64N((size-bs)/4096+1) * 4096
		ops = append(ops, writeOp{off, bs, false})
		fmt.Fprintf(&script, "dd if=/dev/urandom of=%s bs=%d count=1 seek=%d oflag=direct,seek_bytes conv=notrunc status=none\n",
			dev, bs, off)
	}
	sh(t, script.String())
	return ops
}

// devSHA256 hashes the first size bytes of a device (dd with direct I/O,
// several times faster than buffered reads under UML) or a file, with
// tools independent of the code under test.
func devSHA256(t *testing.T, path string, size int64) string {
	t.Helper()
	script := fmt.Sprintf("head -c %d %s | sha256sum", size, path)
	if strings.HasPrefix(path, "/dev/") {
		script = fmt.Sprintf("dd if=%s bs=1M count=%d iflag=direct,count_bytes status=none | sha256sum", path, size)
	}
	return strings.Fields(sh(t, script))[0]
}

// applyDelta applies a delta onto a replica file the way restore does:
// resize to the delta's volume size, then write DATA extents (read with
// several goroutines, through unaligned buffers as often as aligned ones)
// and zero ZERO extents. It returns the extents.
func applyDelta(t *testing.T, r *rand.Rand, d *Delta, replica *os.File) []archive.Extent {
	t.Helper()
	if err := replica.Truncate(d.Size()); err != nil {
		t.Fatal(err)
	}
	exts := collectExtents(t, d)
	type job struct {
		off, n int64
		skew   int
	}
	jobs := make(chan job)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1<<20+4096)
			for j := range jobs {
				p := buf[j.skew : j.skew+int(j.n)]
				n, err := d.ReadAt(p, j.off)
				if err == nil && int64(n) != j.n {
					err = fmt.Errorf("short read %d of %d at %d", n, j.n, j.off)
				}
				if err == nil {
					_, err = replica.WriteAt(p, j.off)
				}
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	zero := make([]byte, 1<<20)
	for _, e := range exts {
		for off := e.Offset; off < e.End(); {
			// Pieces of random sizes and offsets, aligned or not.
			n := min(e.End()-off, int64(1+r.IntN(1<<20)))
			if r.IntN(2) == 0 {
				n = min(e.End()-off, 1<<20)
			}
			if e.Kind == archive.KindData {
				skew := 0
				if r.IntN(2) == 0 {
					skew = 1 + r.IntN(4095)
				}
				jobs <- job{off, n, skew}
			} else if err := zeroRange(replica, zero, off, n); err != nil {
				t.Fatal(err)
			}
			off += n
		}
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	return exts
}

// zeroRange zeroes a range of the replica, by punching a hole where the
// file system can (tmpfs can), as restore does on sparse targets.
func zeroRange(f *os.File, zero []byte, off, n int64) error {
	const punchHole, keepSize = 0x02, 0x01 // FALLOC_FL_*
	if err := syscall.Fallocate(int(f.Fd()), punchHole|keepSize, off, n); err == nil {
		return nil
	}
	_, err := f.WriteAt(zero[:n], off)
	return err
}

// checkCoverage checks that every write of the round is inside DATA
// extents and that nothing discarded and not written since is DATA.
func checkCoverage(t *testing.T, ops []writeOp, exts []archive.Extent, size int64) {
	t.Helper()
	const chunk = 64 << 10
	kind := make([]archive.Kind, (size+chunk-1)/chunk)
	for _, e := range exts {
		for c := e.Offset / chunk; c*chunk < e.End(); c++ {
			if e.Kind == archive.KindData || kind[c] == 0 {
				kind[c] = e.Kind
			}
		}
	}
	state := map[int64]bool{} // chunk → last op was a write
	for _, op := range ops {
		for c := op.off / chunk; c*chunk < op.off+op.length; c++ {
			state[c] = !op.discard
		}
	}
	for c, written := range state {
		if c >= int64(len(kind)) {
			continue
		}
		if written && kind[c] != archive.KindData {
			t.Errorf("chunk %d was written but is %v in the delta", c, kind[c])
		}
		if !written && kind[c] == archive.KindData {
			t.Errorf("chunk %d was discarded but is DATA in the delta", c)
		}
	}
}

// sendRound snapshots the origin, opens the delta from base (nil: full),
// applies it to the replica and compares the replica with the snapshot.
func sendRound(t *testing.T, r *rand.Rand, origin Name, name string, base *LV, replica *os.File) (*LV, []archive.Extent, DeltaStats) {
	t.Helper()
	ctx := context.Background()
	snap, err := CreateSnapshot(ctx, origin, name, SnapshotOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	d, err := OpenDelta(ctx, DeltaOptions{Snap: snap, Base: base, TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	opened := time.Since(start)
	// The metadata snapshot is released before any data is read.
	if root := heldRoot(t, snap.PoolName()); root != 0 {
		t.Fatalf("metadata snapshot %d still held after OpenDelta", root)
	}
	exts := applyDelta(t, r, d, replica)
	st := d.Stats()
	if !st.Activated || st.MetadataSnapHeld <= 0 || st.ToolTime <= 0 || st.Extents != int64(len(exts)) {
		t.Errorf("stats %+v", st)
	}
	cover := int64(0)
	if base != nil {
		cover = min(base.Size, snap.Size)
	}
	if err := checkExtentInvariants(exts, snap.Size, cover); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if lookup(t, snap.FullName()).Active {
		t.Fatal("Close left the snapshot active")
	}
	// Compare with the snapshot's contents, read independently.
	a, err := EnsureActive(ctx, snap.FullName())
	if err != nil {
		t.Fatal(err)
	}
	want := devSHA256(t, snap.DMPath, snap.Size)
	if err := a.Restore(ctx); err != nil {
		t.Fatal(err)
	}
	if got := devSHA256(t, replica.Name(), snap.Size); got != want {
		t.Fatalf("%s: replica sha256 %s, snapshot %s", name, got, want)
	}
	kind := "full"
	if base != nil {
		kind = "incremental from " + base.Name
	}
	t.Logf("%s (%s): %d ranges → %d extents (%d data bytes, %d zero bytes); %s %v; metadata snapshot held %v; OpenDelta %v",
		name, kind, st.Ranges, st.Extents, st.DataBytes, st.ZeroBytes, st.Tool, st.ToolTime.Round(time.Millisecond),
		st.MetadataSnapHeld.Round(time.Millisecond), opened.Round(time.Millisecond))
	return snap, exts, st
}

func newReplica(t *testing.T) *os.File {
	t.Helper()
	// In the guest's tmpfs: hostfs writes are slow.
	f, err := os.Create(filepath.Join(t.TempDir(), "replica"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close(); os.Remove(f.Name()) })
	return f
}

// TestKernelDelta: a full and three incrementals of random writes and
// discards, each applied to a replica that must equal the snapshot.
func TestKernelDelta(t *testing.T) {
	guestOnly(t)
	r := testRand(t)
	pool := newPool(t, "tb-delta")
	origin := newThinLV(t, pool, "vol", "128M")
	dev := "/dev/tb-delta/vol"
	const size = 128 << 20
	replica := newReplica(t)

	mutate(t, r, dev, size, 30, 0)
	base, exts, _ := sendRound(t, r, origin, "vol-s0", nil, replica)
	if exts[0].Offset != 0 || exts[len(exts)-1].End() != size {
		t.Fatalf("full does not cover the volume: %v", exts)
	}
	for round := 1; round <= 3; round++ {
		ops := mutate(t, r, dev, size, 8+r.IntN(16), 1+r.IntN(4))
		snap, exts, st := sendRound(t, r, origin, fmt.Sprintf("vol-s%d", round), base, replica)
		checkCoverage(t, ops, exts, size)
		if st.DataBytes > 64<<20 {
			t.Errorf("round %d: %d data bytes for a few MiB of writes", round, st.DataBytes)
		}
		base = snap
	}
	// An unchanged volume gives an empty incremental.
	_, exts, _ = sendRound(t, r, origin, "vol-same", base, replica)
	if len(exts) != 0 {
		t.Errorf("incremental of an unchanged volume: %v", exts)
	}
}

// TestKernelRefusals: what OpenDelta must refuse.
func TestKernelRefusals(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-refuse")
	vol := newThinLV(t, pool, "vol", "16M")
	other := newThinLV(t, pool, "other", "16M")
	sh(t, "lvcreate -q -T -L 64M tb-refuse/pool2 && lvcreate -q -V 16M -T tb-refuse/pool2 -n vol2")
	s1, _ := CreateSnapshot(ctx, vol, "vol-s1", SnapshotOptions{})
	s2, _ := CreateSnapshot(ctx, vol, "vol-s2", SnapshotOptions{})
	o1, _ := CreateSnapshot(ctx, other, "other-s1", SnapshotOptions{})
	p1, err := CreateSnapshot(ctx, Name{"tb-refuse", "vol2"}, "vol2-s1", SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		snap, base *LV
		want       error
	}{
		{"live volume", lookup(t, vol), nil, ErrNotThin},
		{"pool", lookup(t, pool), nil, ErrNotThin},
		{"base of another origin", s2, o1, ErrBadBase},
		{"base in another pool", s2, p1, ErrBadBase},
		{"base is the snapshot", s2, s2, ErrBadBase},
		{"base newer (same second: decided by the metadata)", s1, s2, ErrBadBase},
	}
	for _, tt := range tests {
		_, err := OpenDelta(ctx, DeltaOptions{Snap: tt.snap, Base: tt.base})
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if heldRoot(t, pool) != 0 {
			t.Fatalf("%s: metadata snapshot left held", tt.name)
		}
	}
	if lookup(t, s1.FullName()).Active || lookup(t, s2.FullName()).Active {
		t.Error("a refused OpenDelta left a snapshot active")
	}
	// The right order works.
	d, err := OpenDelta(ctx, DeltaOptions{Snap: s2, Base: s1})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestKernelResize: snapshots of a volume that grows, shrinks and grows
// again; the replica follows byte for byte.
func TestKernelResize(t *testing.T) {
	guestOnly(t)
	r := testRand(t)
	pool := newPool(t, "tb-resize")
	origin := newThinLV(t, pool, "vol", "64M")
	dev := "/dev/tb-resize/vol"
	replica := newReplica(t)

	mutate(t, r, dev, 64<<20, 30, 0)
	base, _, _ := sendRound(t, r, origin, "vol-s0", nil, replica)

	steps := []struct {
		resize string
		size   int64
	}{
		{"lvextend -q -L 96M tb-resize/vol", 96 << 20},    // grown
		{"lvreduce -q -f -L 40M tb-resize/vol", 40 << 20}, // shrunk: mappings past the end may stay
		{"lvextend -q -L 80M tb-resize/vol", 80 << 20},    // grown over them again
	}
	for i, step := range steps {
		sh(t, step.resize)
		ops := mutate(t, r, dev, step.size, 10, 1)
		snap, exts, _ := sendRound(t, r, origin, fmt.Sprintf("vol-r%d", i+1), base, replica)
		if snap.Size != step.size {
			t.Fatalf("snapshot size %d, want %d", snap.Size, step.size)
		}
		checkCoverage(t, ops, exts, step.size)
		for _, e := range exts {
			if e.End() > step.size {
				t.Fatalf("extent %+v past the end %d", e, step.size)
			}
		}
		base = snap
	}
}

// waitHeld waits until the pool holds a metadata snapshot.
func waitHeld(t *testing.T, pool Name) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if root := heldRoot(t, pool); root != 0 {
			return root
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the helper never reserved the metadata snapshot")
	return 0
}

// TestKernelSignals interrupts a delta discovery that holds the metadata
// snapshot (its thin_delta hangs) with real signals.
func TestKernelSignals(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-sig")
	vol := newThinLV(t, pool, "vol", "32M")
	sh(t, "dd if=/dev/urandom of=/dev/tb-sig/vol bs=64k count=20 oflag=direct status=none")
	s1, _ := CreateSnapshot(ctx, vol, "vol-s1", SnapshotOptions{ReadOnly: true})
	sh(t, "dd if=/dev/urandom of=/dev/tb-sig/vol bs=64k count=5 seek=100 oflag=direct status=none")
	s2, _ := CreateSnapshot(ctx, vol, "vol-s2", SnapshotOptions{ReadOnly: true})

	// A thin_delta that hangs until its parent is gone (so the tools'
	// discovery: the native one takes milliseconds).
	hang := filepath.Join(os.Getenv("THINBACK_UML_WORK"), "thin_delta-hang")
	if err := os.WriteFile(hang, []byte("#!/bin/sh\np=$PPID\nwhile kill -0 \"$p\" 2>/dev/null; do sleep 0.05; done\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := []string{"THINBACK_TEST_SNAP=" + s2.FullName().String(), "THINBACK_TEST_BASE=" + s1.FullName().String(),
		"THINBACK_TEST_THIN_DELTA=" + hang, "THINBACK_TEST_DISCOVERY=tools"}

	interrupt := func(sig syscall.Signal, cliStyle bool) (string, *os.ProcessState) {
		t.Helper()
		e := env
		if cliStyle {
			e = append(e, "THINBACK_TEST_NOTIFY=1")
		}
		cmd := helperCmd("delta", e...)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitHeld(t, pool)
		time.Sleep(100 * time.Millisecond) // let it get into thin_delta
		start := time.Now()
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("helper did not end after %v; output:\n%s", sig, out.String())
		}
		t.Logf("%v: helper ended in %v", sig, time.Since(start).Round(time.Millisecond))
		return out.String(), cmd.ProcessState
	}
	exitSignal := func(ps *os.ProcessState) syscall.Signal {
		ws, _ := ps.Sys().(syscall.WaitStatus)
		if ws.Signaled() {
			return ws.Signal()
		}
		return 0
	}

	// SIGTERM, program without signal handling: the library's guard
	// releases, deactivates, then lets the signal end the process.
	out, ps := interrupt(syscall.SIGTERM, false)
	if heldRoot(t, pool) != 0 {
		t.Fatalf("SIGTERM: metadata snapshot left held; output:\n%s", out)
	}
	if exitSignal(ps) != syscall.SIGTERM {
		t.Errorf("SIGTERM: helper ended with %v, want death by SIGTERM; output:\n%s", ps, out)
	}
	if lookup(t, s2.FullName()).Active {
		t.Error("SIGTERM: snapshot left active")
	}

	// SIGINT, CLI style (signal.NotifyContext): OpenDelta returns the
	// cancellation, with everything released.
	out, ps = interrupt(syscall.SIGINT, true)
	if heldRoot(t, pool) != 0 {
		t.Fatalf("SIGINT: metadata snapshot left held; output:\n%s", out)
	}
	if ps.ExitCode() != 3 || !strings.Contains(out, "context canceled") {
		t.Errorf("SIGINT: helper %v, output:\n%s", ps, out)
	}
	if lookup(t, s2.FullName()).Active {
		t.Error("SIGINT: snapshot left active")
	}

	// SIGTERM, CLI style.
	out, ps = interrupt(syscall.SIGTERM, true)
	if heldRoot(t, pool) != 0 || ps.ExitCode() != 3 {
		t.Fatalf("SIGTERM (CLI style): held %d, helper %v, output:\n%s", heldRoot(t, pool), ps, out)
	}

	// SIGKILL cannot be caught: the snapshot stays, the next run reports
	// it, and the explicit option clears it.
	_, ps = interrupt(syscall.SIGKILL, false)
	if exitSignal(ps) != syscall.SIGKILL {
		t.Fatalf("SIGKILL: helper %v", ps)
	}
	stale := heldRoot(t, pool)
	if stale == 0 {
		t.Fatal("SIGKILL: no metadata snapshot left; the test did not kill in time")
	}
	cmd := helperCmd("delta", "THINBACK_TEST_SNAP="+s2.FullName().String(), "THINBACK_TEST_BASE="+s1.FullName().String())
	outb, err := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 4 || !strings.Contains(string(outb), "--release-stale-metadata-snap") {
		t.Fatalf("run after SIGKILL: %v\n%s", err, outb)
	}
	if heldRoot(t, pool) != stale {
		t.Fatal("the stale snapshot was released without being asked")
	}
	d, err := OpenDelta(ctx, DeltaOptions{Snap: s2, Base: s1, ReleaseStale: true})
	if err != nil {
		t.Fatal(err)
	}
	if heldRoot(t, pool) != 0 {
		t.Fatal("held after OpenDelta with ReleaseStale")
	}
	if d.Stats().DataBytes != 5*64<<10 {
		t.Errorf("delta has %d data bytes, want %d", d.Stats().DataBytes, 5*64<<10)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// The killed helper left the snapshot active (nothing could undo it).
	_ = Deactivate(ctx, s2.FullName())
}

// TestKernelDirectRead checks that the delta's reader returns the snapshot's
// bytes for aligned and unaligned requests, including the volume's end.
func TestKernelDirectRead(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	r := testRand(t)
	pool := newPool(t, "tb-read")
	vol := newThinLV(t, pool, "vol", "8M")
	sh(t, "dd if=/dev/urandom of=/dev/tb-read/vol bs=1M count=8 oflag=direct status=none")
	snap, err := CreateSnapshot(ctx, vol, "vol-s", SnapshotOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := OpenDelta(ctx, DeltaOptions{Snap: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !d.dev.Direct() {
		t.Error("the snapshot device was not opened with O_DIRECT")
	}
	want, err := os.ReadFile(snap.DMPath)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(want)) != snap.Size {
		t.Fatalf("read %d bytes of %d", len(want), snap.Size)
	}
	buf := make([]byte, 3<<20)
	for i := 0; i < 200; i++ {
		off := r.Int64N(snap.Size)
		n := 1 + r.IntN(3<<20-4096)
		skew := r.IntN(4096)
		if i%4 == 0 {
			off &^= 4095
			n = (n + 4095) &^ 4095
			p := alignedBuffer(n)
			got, err := d.ReadAt(p, off)
			checkRead(t, p[:got], err, want, off, n)
			continue
		}
		p := buf[skew : skew+n]
		got, err := d.ReadAt(p, off)
		checkRead(t, p[:got], err, want, off, n)
	}
	if n, err := d.ReadAt(buf[:10], snap.Size); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	f, err := os.Open(snap.DMPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var h = sha256.New()
	if _, err := io.Copy(h, bufio.NewReader(f)); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(h.Sum(nil)) != devSHA256(t, snap.DMPath, snap.Size) {
		t.Error("sha256 tools disagree")
	}
}

func checkRead(t *testing.T, got []byte, err error, want []byte, off int64, n int) {
	t.Helper()
	end := min(off+int64(n), int64(len(want)))
	if end < off+int64(n) {
		if err != io.EOF {
			t.Fatalf("read %d at %d past the end: error %v, want EOF", n, off, err)
		}
	} else if err != nil {
		t.Fatalf("read %d at %d: %v", n, off, err)
	}
	if string(got) != string(want[off:end]) {
		t.Fatalf("read %d at %d: wrong bytes", n, off)
	}
}
