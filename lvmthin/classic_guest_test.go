package lvmthin

// Classic (thick) snapshots in a real kernel: run in the UML guest by
// TestGuest, skipped elsewhere.

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/cow"
	"github.com/thinback/thinback/restore"
)

// newVG creates a plain volume group on a loop device over a sparse image
// in the work dir, for thick LVs, and removes it all at the end.
func newVG(t *testing.T, vg, size string) {
	t.Helper()
	img := filepath.Join(os.Getenv("THINBACK_UML_WORK"), vg+".img")
	loop := sh(t, fmt.Sprintf("rm -f %[1]s; truncate -s %[2]s %[1]s; losetup -f --show %[1]s", img, size))
	t.Cleanup(func() {
		_ = exec.Command("bash", "-c", "grep -q ' /mnt/"+vg+" ' /proc/mounts && umount /mnt/"+vg).Run()
		_ = exec.Command("vgremove", "-f", "-y", vg).Run()
		_ = exec.Command("losetup", "-d", loop).Run()
		_ = os.Remove(img)
	})
	sh(t, fmt.Sprintf("pvcreate -q %[1]s && vgcreate -q %[2]s %[1]s", loop, vg))
}

func newThickLV(t *testing.T, vg, name, size string) Name {
	t.Helper()
	sh(t, fmt.Sprintf("lvcreate -q -Wy -Zy -L %s -n %s %s", size, name, vg))
	return Name{VG: vg, LV: name}
}

// waitNextSecond waits until the clock is past the second of t: LVM keeps
// whole seconds of a snapshot's creation, and OpenClassic orders a pair by
// them.
func waitNextSecond(t time.Time) {
	for time.Now().Unix() <= t.Unix() {
		time.Sleep(50 * time.Millisecond)
	}
}

func createClassic(t *testing.T, origin Name, name string, size int64, readOnly bool) *LV {
	t.Helper()
	lv, err := CreateClassicSnapshot(context.Background(), origin, name, ClassicSnapshotOptions{Size: size, ReadOnly: readOnly})
	if err != nil {
		t.Fatal(err)
	}
	return lv
}

func TestKernelClassicLVM(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	newVG(t, "tb-cl", "512M")
	vol := newThickLV(t, "tb-cl", "my-vol", "64M")
	sh(t, "lvcreate -q -T -L 32M tb-cl/pool && lvcreate -q -V 16M -T tb-cl/pool -n thin")

	o := lookup(t, vol)
	if o.Kind() != KindThick || o.IsThin() || o.Size != 64<<20 || !o.Active || o.DataPercent != -1 {
		t.Fatalf("thick LV: %+v (kind %v)", o, o.Kind())
	}
	// 512 MiB less the 64 MiB LV, the 32 MiB pool, its metadata and
	// their spare metadata: what vgs says, in whole extents.
	vg, err := GetVG(ctx, "tb-cl")
	if err != nil || vg.Name != "tb-cl" || vg.ExtentSize != 4<<20 || vg.Size < 500<<20 || vg.Size > 512<<20 || vg.Free <= 0 || vg.Free > vg.Size-96<<20 {
		t.Fatalf("GetVG = %+v, %v", vg, err)
	}
	if free := sh(t, "vgs --noheadings --units b --nosuffix -o vg_free tb-cl"); free != fmt.Sprint(vg.Free) {
		t.Errorf("GetVG free %d, vgs says %s", vg.Free, free)
	}
	if _, err := GetVG(ctx, "tb-nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVG of a missing VG: %v", err)
	}
	s0, err := CreateClassicSnapshot(ctx, vol, "my-vol-s0", ClassicSnapshotOptions{Size: 8 << 20, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if s0.Kind() != KindClassicSnapshot || s0.Origin != "my-vol" || s0.Attr[1] != 'r' || !s0.Active || s0.Size != 8<<20 ||
		s0.OriginSize != 64<<20 || s0.VolumeSize() != 64<<20 || s0.ChunkSize != 4096 || s0.DataPercent < 0 || s0.DataPercent > 1 ||
		s0.IsInvalidSnapshot() || s0.IsMerging() || s0.DMPath != "/dev/mapper/tb--cl-my--vol--s0" {
		t.Fatalf("classic snapshot: %+v", s0)
	}
	if o := lookup(t, vol); o.Kind() != KindThick || o.Attr[0] != 'o' {
		t.Errorf("origin: %+v", o)
	}
	s1, err := CreateClassicSnapshot(ctx, vol, "my-vol-s1", ClassicSnapshotOptions{Size: 4 << 20, ChunkSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if s1.ChunkSize != 64<<10 || s1.Attr[1] != 'w' {
		t.Errorf("64k writable snapshot: %+v", s1)
	}
	st, err := GetSnapshotStatus(ctx, s0.FullName())
	if err != nil || st.State != SnapshotValid || st.Merging || st.TotalSectors != 8<<20/512 || st.SectorsAllocated == 0 {
		t.Fatalf("status %+v, %v", st, err)
	}
	dev, err := openDevice(COWDevice(s0.FullName()))
	if err != nil {
		t.Fatal(err)
	}
	h, err := cow.ReadHeader(dev, dev.Path(), dev.Size())
	dev.Close()
	if err != nil || h.ChunkSize() != 4096 || h.Valid != 1 || !dev.Direct() || dev.Size() != 8<<20 {
		t.Fatalf("COW header %+v, %v (direct %v, size %d)", h, err, dev.Direct(), dev.Size())
	}
	snaps, err := Snapshots(ctx, vol)
	if err != nil || len(snaps) != 2 || snaps[0].Name != "my-vol-s0" || snaps[1].Name != "my-vol-s1" {
		t.Errorf("Snapshots = %v, %v", snaps, err)
	}

	for _, tt := range []struct {
		name   string
		origin Name
		snap   string
		opts   ClassicSnapshotOptions
		want   error
	}{
		{"exists", vol, "my-vol-s0", ClassicSnapshotOptions{Size: 4 << 20}, ErrExists},
		{"no space", vol, "big", ClassicSnapshotOptions{Size: 8 << 30}, nil}, // LVM caps it at what the origin needs
		{"thin origin", Name{"tb-cl", "thin"}, "x", ClassicSnapshotOptions{Size: 4 << 20}, ErrNotThick},
		{"snapshot of a snapshot", s0.FullName(), "x", ClassicSnapshotOptions{Size: 4 << 20}, ErrNotThick},
		{"pool", Name{"tb-cl", "pool"}, "x", ClassicSnapshotOptions{Size: 4 << 20}, ErrNotThick},
		{"missing", Name{"tb-cl", "nope"}, "x", ClassicSnapshotOptions{Size: 4 << 20}, ErrNotFound},
		{"bad chunk", vol, "x", ClassicSnapshotOptions{Size: 4 << 20, ChunkSize: 3 << 10}, nil},
		{"bad name", vol, "x/y", ClassicSnapshotOptions{Size: 4 << 20}, ErrName},
	} {
		_, err := CreateClassicSnapshot(ctx, tt.origin, tt.snap, tt.opts)
		switch {
		case tt.name == "no space":
			// 8 GiB is capped to the origin's need (about 68 MiB),
			// which the VG still has; fill it to see ErrNoSpace.
			if err != nil {
				t.Errorf("capped size: %v", err)
			}
			sh(t, "lvremove -q -y tb-cl/big && lvcreate -q -L 380M -n filler tb-cl")
			_, err = CreateClassicSnapshot(ctx, vol, "big", ClassicSnapshotOptions{Size: 200 << 20})
			if !errors.Is(err, ErrNoSpace) {
				t.Errorf("full VG: %v", err)
			}
			sh(t, "lvremove -q -y tb-cl/filler")
		case tt.want == nil:
			if err == nil {
				t.Errorf("%s: accepted", tt.name)
			}
		case !errors.Is(err, tt.want):
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
	}

	// Removal: snapshots only, classic ones too.
	if err := RemoveSnapshot(ctx, vol); !errors.Is(err, ErrNotSnapshot) {
		t.Fatalf("RemoveSnapshot of the origin: %v", err)
	}
	if err := RemoveSnapshot(ctx, s1.FullName()); err != nil {
		t.Fatal(err)
	}
	if _, err := Lookup(ctx, s1.FullName()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removed snapshot: %v", err)
	}

	// A merge waiting for the origin to close: the origin shows 'O', the
	// snapshot disappears from lvs, and everything refuses to work on it.
	sh(t, "mkfs.ext4 -q /dev/tb-cl/my-vol && mkdir -p /mnt/tb-cl && mount /dev/tb-cl/my-vol /mnt/tb-cl")
	s2 := createClassic(t, vol, "my-vol-s2", 8<<20, false)
	waitNextSecond(s2.Time)
	s3 := createClassic(t, vol, "my-vol-s3", 8<<20, true)
	sh(t, "lvconvert --merge tb-cl/my-vol-s2")
	if o := lookup(t, vol); !o.IsMerging() || o.Attr[0] != 'O' {
		t.Fatalf("merging origin: %+v", o)
	}
	if _, err := CreateClassicSnapshot(ctx, vol, "x", ClassicSnapshotOptions{Size: 4 << 20}); !errors.Is(err, ErrSnapshotMerging) {
		t.Errorf("snapshot of a merging origin: %v", err)
	}
	if _, err := OpenClassic(ctx, ClassicOptions{Snap: s3}); !errors.Is(err, ErrSnapshotMerging) {
		t.Errorf("OpenClassic while merging: %v", err)
	}
	if _, err := OpenClassic(ctx, ClassicOptions{Snap: s3, Base: s2}); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenClassic from the merging snapshot: %v", err)
	}
	if err := RemoveSnapshot(ctx, s2.FullName()); !errors.Is(err, ErrNotFound) {
		t.Errorf("remove the merging snapshot: %v", err)
	}
	captureFixture(t, "lvs-classic.json", sh(t, "lvs -a --reportformat json --units b --nosuffix -o "+lvsFields+" tb-cl"))
	sh(t, "umount /mnt/tb-cl")
}

// captureFixture writes a fixture for testdata/lvm when THINBACK_CAPTURE
// names a directory.
func captureFixture(t *testing.T, name, content string) {
	t.Helper()
	if dir := os.Getenv("THINBACK_CAPTURE"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// cowStore is a COW store the kernel builds in TestKernelCOWStores, with
// the origin chunks its writes must leave in the table.
type cowStore struct {
	name      string
	chunk     int64 // bytes
	cowSize   string
	writable  bool
	origin    []int64 // origin chunks written through the origin (a 512-byte write in each)
	snap      []int64 // chunks written through the snapshot
	overflow  bool    // then write more than the store holds
	wantValid bool
}

func (s cowStore) want() []uint64 {
	set := map[uint64]bool{}
	for _, c := range append(append([]int64{}, s.origin...), s.snap...) {
		set[uint64(c)] = true
	}
	var out []uint64
	for c := range set {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

// cowStores: fixed writes (not the test seed: the copies in testdata/cow
// must match testdata/cow/README.md).
func cowStores() []cowStore {
	r := rand.New(rand.NewPCG(10, 10))
	var scattered []int64
	for _, c := range r.Perm(16384)[:600] { // 600 of the 16384 chunks of 64 MiB
		scattered = append(scattered, int64(c))
	}
	return []cowStore{
		{name: "small", chunk: 4096, cowSize: "4M", origin: []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 500, 501, 502, 503, 504, 505, 16383}, wantValid: true},
		{name: "areas", chunk: 4096, cowSize: "4M", origin: scattered, wantValid: true},
		{name: "chunk64k", chunk: 64 << 10, cowSize: "4M", writable: true, origin: []int64{3, 7, 8, 1023}, snap: []int64{7, 200, 201}, wantValid: true},
		{name: "overflowed", chunk: 4096, cowSize: "4M", origin: []int64{1, 2, 3}, overflow: true},
	}
}

// TestKernelCOWStores lets the kernel build COW stores with known writes
// and reads them back, live, with O_DIRECT. With THINBACK_CAPTURE set it
// also saves them (gzipped) for testdata/cow.
func TestKernelCOWStores(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	newVG(t, "tb-cow", "256M")
	vol := newThickLV(t, "tb-cow", "vol", "64M")
	// Zeroes: the old data the kernel copies into the stores, so that
	// their copies compress to almost nothing.
	sh(t, "dd if=/dev/zero of=/dev/tb-cow/vol bs=1M count=64 oflag=direct status=none")
	for _, s := range cowStores() {
		snap, err := CreateClassicSnapshot(ctx, vol, "s-"+s.name, ClassicSnapshotOptions{Size: 4 << 20, ChunkSize: s.chunk, ReadOnly: !s.writable})
		if err != nil {
			t.Fatal(err)
		}
		var script strings.Builder
		for _, c := range s.origin {
			fmt.Fprintf(&script, "dd if=/dev/urandom of=/dev/tb-cow/vol bs=512 count=1 seek=%d oflag=direct,seek_bytes conv=notrunc status=none\n", c*s.chunk+512)
		}
		for _, c := range s.snap {
			fmt.Fprintf(&script, "dd if=/dev/urandom of=%s bs=512 count=1 seek=%d oflag=direct,seek_bytes conv=notrunc status=none\n", snap.DMPath, c*s.chunk)
		}
		if s.overflow {
			script.WriteString("dd if=/dev/urandom of=/dev/tb-cow/vol bs=1M count=6 seek=8 oflag=direct status=none\n")
		}
		sh(t, script.String())

		dev, err := openDevice(COWDevice(snap.FullName()))
		if err != nil {
			t.Fatal(err)
		}
		var runs []cow.Run
		st, err := cow.Read(dev, cow.Options{Name: dev.Path(), Size: dev.Size(), OriginSize: 64 << 20}, func(r cow.Run) error {
			runs = append(runs, r)
			return nil
		})
		if s.wantValid {
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			var got []uint64
			for _, r := range runs {
				for c := r.First; c < r.First+r.Count; c++ {
					got = append(got, c)
				}
			}
			if !slices.Equal(got, s.want()) {
				t.Errorf("%s: table lists %d chunks %v\nwant %d %v", s.name, len(got), runs, len(s.want()), s.want())
			}
			t.Logf("%s: %d exceptions in %d areas, %d runs", s.name, st.Exceptions, st.Areas, st.Runs)
		} else if !errors.Is(err, cow.ErrInvalidated) {
			t.Errorf("%s: %v, want cow.ErrInvalidated", s.name, err)
		}
		if dir := os.Getenv("THINBACK_CAPTURE"); dir != "" {
			img := make([]byte, dev.Size())
			if _, err := dev.ReadAt(img, 0); err != nil {
				t.Fatal(err)
			}
			var b bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
			zw.Write(img)
			zw.Close()
			if err := os.WriteFile(filepath.Join(dir, s.name+".cow.gz"), b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			// What the writes must leave in the table, from the write
			// list, not from the reader under test.
			var want strings.Builder
			for _, c := range s.want() {
				fmt.Fprintln(&want, c)
			}
			if !s.wantValid {
				want.Reset()
				want.WriteString("invalidated\n")
			}
			if err := os.WriteFile(filepath.Join(dir, s.name+".chunks"), []byte(want.String()), 0o644); err != nil {
				t.Fatal(err)
			}
			status := sh(t, "dmsetup status "+snap.FullName().DMName())
			captureFixture(t, "status-"+s.name+".txt", status)
		}
		dev.Close()
	}
}

// recorder passes a source through, keeping its extents.
type recorder struct {
	archive.Source
	exts []archive.Extent
}

func (r *recorder) Next() (archive.Extent, error) {
	e, err := r.Source.Next()
	if err == nil {
		r.exts = append(r.exts, e)
	}
	return e, err
}

// classicSnapshotID names a classic snapshot's state, as the CLI does for
// thin ones: from its LV UUID.
func classicSnapshotID(lv *LV) archive.Snapshot {
	return archive.Snapshot{ID: archive.DeriveID("lvm", lv.UUID), Name: lv.FullName().String(), Time: lv.Time.UTC()}
}

// sendClassic sends c through archive.Send into a delta file.
func sendClassic(t *testing.T, c *Classic, path string) []archive.Extent {
	t.Helper()
	snap, base := c.Snap(), c.Base()
	h := &archive.Header{BlockSize: 4096, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.VG + "/" + snap.Origin, VolumeSize: c.Size(), Snapshot: classicSnapshotID(snap), Tool: "lvmthin test"}
	if base != nil {
		h.Parent, h.ParentSize = classicSnapshotID(base), c.Size()
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := archive.NewWriter(f)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Source: c}
	if err := archive.Send(context.Background(), w, rec, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return rec.exts
}

// applyFile applies a delta file onto the replica with restore.
func applyFile(t *testing.T, replica, path string, st restore.State) restore.State {
	t.Helper()
	tg, err := restore.OpenTarget(replica, restore.TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := restore.Apply(context.Background(), tg, []restore.Input{{Name: path, R: f}}, restore.Options{State: st})
	if err != nil {
		t.Fatal(err)
	}
	return restore.State{VolumeName: res.VolumeName, VolumeSize: res.VolumeSize, Snapshot: res.Snapshot}
}

// rawWrite is a write the test made with dd, to be found in the delta.
type rawWrite struct{ off, n int64 }

// checkClassicCoverage checks that every raw write lies inside DATA
// extents.
func checkClassicCoverage(t *testing.T, writes []rawWrite, exts []archive.Extent) {
	t.Helper()
	for _, w := range writes {
		for pos := w.off; pos < w.off+w.n; {
			i, _ := slices.BinarySearchFunc(exts, pos, func(e archive.Extent, p int64) int {
				switch {
				case e.End() <= p:
					return -1
				case e.Offset > p:
					return 1
				}
				return 0
			})
			if i >= len(exts) || exts[i].Offset > pos || exts[i].Kind != archive.KindData {
				t.Fatalf("byte %d, written with dd (%d bytes at %d), is in no DATA extent", pos, w.n, w.off)
			}
			pos = exts[i].End()
		}
	}
}

// TestKernelClassicDelta: an ext4 volume with real files and raw writes,
// seeded rounds of changes, each round's classic snapshot sent as an
// incremental from the previous one (through archive.Send into a delta
// file) and applied with restore onto a replica, which must equal the
// snapshot byte for byte.
func TestKernelClassicDelta(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	r := testRand(t)
	const size, fsSize = 96 << 20, 64 << 20
	newVG(t, "tb-cd", "512M")
	vol := newThickLV(t, "tb-cd", "vol", "96M")
	dev := "/dev/tb-cd/vol"
	mnt := "/mnt/tb-cd"
	sh(t, fmt.Sprintf("dd if=/dev/urandom of=%s bs=1M count=96 oflag=direct status=none && "+
		"mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 %s 64M && mkdir -p %s && mount %s %s", dev, dev, mnt, dev, mnt))
	work := t.TempDir()
	replica := filepath.Join(work, "replica")
	var files []string
	nfile := 0
	fileOps := func() {
		var s strings.Builder
		for i := 0; i < 2+r.IntN(4); i++ {
			nfile++
			name := fmt.Sprintf("%s/f%d", mnt, nfile)
			fmt.Fprintf(&s, "dd if=/dev/urandom of=%s bs=4k count=%d status=none\n", name, 1+r.IntN(300))
			files = append(files, name)
		}
		if len(files) > 2 {
			src := files[r.IntN(len(files))]
			nfile++
			dst := fmt.Sprintf("%s/f%d", mnt, nfile)
			fmt.Fprintf(&s, "cp %s %s\n", src, dst)
			files = append(files, dst)
			i := r.IntN(len(files))
			fmt.Fprintf(&s, "rm %s\n", files[i])
			files = slices.Delete(files, i, i+1)
			fmt.Fprintf(&s, "head -c %d /dev/urandom >> %s\n", 1+r.IntN(100000), files[r.IntN(len(files))])
		}
		s.WriteString("sync\n")
		sh(t, s.String())
	}
	ddWrites := func(target string, lo, hi int64, n int) []rawWrite {
		var ws []rawWrite
		var s strings.Builder
		for i := 0; i < n; i++ {
			bs := []int64{512, 4096, 12288, 65536, 200 << 10}[r.IntN(5)]
			off := lo + r.Int64N((hi-lo-bs)/512+1)*512
			ws = append(ws, rawWrite{off, bs})
			fmt.Fprintf(&s, "dd if=/dev/urandom of=%s bs=%d count=1 seek=%d oflag=direct,seek_bytes conv=notrunc status=none\n", target, bs, off)
		}
		sh(t, s.String())
		return ws
	}
	sendRound := func(snap, base *LV, st restore.State, round int) (restore.State, []archive.Extent, ClassicStats) {
		t.Helper()
		c, err := OpenClassic(ctx, ClassicOptions{Snap: snap, Base: base, TempDir: work})
		if err != nil {
			t.Fatal(err)
		}
		if !c.dev.Direct() {
			t.Error("snapshot device not opened with O_DIRECT")
		}
		delta := filepath.Join(work, fmt.Sprintf("round%d.tbk", round))
		exts := sendClassic(t, c, delta)
		cs := c.Stats()
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if err := checkExtentInvariants(exts, size, 0); base == nil && err != nil {
			t.Fatal(err)
		}
		st = applyFile(t, replica, delta, st)
		want := devSHA256(t, snap.DMPath, size)
		if got := devSHA256(t, replica, size); got != want {
			t.Fatalf("round %d: replica sha256 %s, snapshot %s %s", round, got, snap.Name, want)
		}
		fi, _ := os.Stat(delta)
		t.Logf("round %d (%s): %d exceptions (base) + %d (snapshot) → %d runs → %d extents, %d data bytes of %d; table read in %v, %d metadata bytes; base COW %.1f%% used; delta file %d bytes",
			round, cs.Tool, cs.BaseExceptions, cs.SnapExceptions, cs.Ranges, cs.Extents, cs.DataBytes, int64(size),
			cs.ToolTime.Round(time.Millisecond), cs.MetadataBytes, usage(cs.BaseStatus), fi.Size())
		return st, exts, cs
	}

	fileOps()
	base := createClassic(t, vol, "vol-s0", 48<<20, true)
	st, _, cs := sendRound(base, nil, restore.State{}, 0)
	if cs.Tool != "full" || cs.DataBytes != size {
		t.Fatalf("full: %+v", cs)
	}
	for round := 1; round <= 4; round++ {
		fileOps()
		writes := ddWrites(dev, fsSize, size, 5+r.IntN(20))
		if base.Attr[1] == 'w' {
			// Writing to the base after it was sent only adds chunks.
			ddWrites(base.DMPath, 0, size, 1+r.IntN(5))
		}
		waitNextSecond(base.Time)
		writable := r.IntN(2) == 0
		snap := createClassic(t, vol, fmt.Sprintf("vol-s%d", round), 48<<20, !writable)
		if writable {
			// The new snapshot's own writes are in its table only.
			writes = append(writes, ddWrites(snap.DMPath, 0, size, 1+r.IntN(5))...)
		}
		var exts []archive.Extent
		st, exts, cs = sendRound(snap, base, st, round)
		checkClassicCoverage(t, writes, exts)
		if cs.Tool != "cow" || cs.DataBytes >= size/2 || cs.BaseExceptions == 0 {
			t.Errorf("round %d: %+v", round, cs)
		}
		if err := RemoveSnapshot(ctx, base.FullName()); err != nil {
			t.Fatal(err)
		}
		base = snap
	}
	// Nothing written between two snapshots of an unmounted volume: the
	// incremental is empty.
	sh(t, "umount "+mnt)
	waitNextSecond(base.Time)
	quiet := createClassic(t, vol, "vol-quiet", 8<<20, true)
	if err := RemoveSnapshot(ctx, base.FullName()); err != nil {
		t.Fatal(err)
	}
	waitNextSecond(quiet.Time)
	last := createClassic(t, vol, "vol-last", 8<<20, true)
	c, err := OpenClassic(ctx, ClassicOptions{Snap: last, Base: quiet, TempDir: work})
	if err != nil {
		t.Fatal(err)
	}
	if s := c.Stats(); s.Extents != 0 || s.DataBytes != 0 || s.BaseExceptions != 0 {
		t.Errorf("incremental of an unchanged volume: %+v", s)
	}
	c.Close()
}

func usage(st *SnapshotStatus) float64 {
	if st == nil {
		return 0
	}
	return st.Usage()
}

// TestKernelClassicOverflow: an invalidated base (before the table is read
// and while it is), and an invalidated snapshot to send.
func TestKernelClassicOverflow(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	newVG(t, "tb-ov", "512M")
	vol := newThickLV(t, "tb-ov", "vol", "64M")
	dev := "/dev/tb-ov/vol"
	sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=64 oflag=direct status=none")

	// Overflowed before: 4 MiB of COW space, 8 MiB of new writes.
	s0 := createClassic(t, vol, "s0", 4<<20, true)
	sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=8 oflag=direct status=none")
	s0 = lookup(t, s0.FullName())
	if !s0.IsInvalidSnapshot() || s0.DataPercent != 100 {
		t.Fatalf("overflowed snapshot: %+v", s0)
	}
	if st, err := GetSnapshotStatus(ctx, s0.FullName()); err != nil || st.State != SnapshotInvalid {
		t.Fatalf("status of the overflowed snapshot: %+v, %v", st, err)
	}
	d, err := openDevice(COWDevice(s0.FullName()))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cow.ReadHeader(d, d.Path(), d.Size()); !errors.Is(err, cow.ErrInvalidated) {
		t.Errorf("header of the overflowed store: %v", err)
	}
	d.Close()
	waitNextSecond(s0.Time)
	s1 := createClassic(t, vol, "s1", 16<<20, true)
	_, err = OpenClassic(ctx, ClassicOptions{Snap: s1, Base: s0})
	if !errors.Is(err, ErrBaseInvalid) || errors.Is(err, ErrSnapshotInvalid) {
		t.Fatalf("incremental from an overflowed base: %v", err)
	}
	t.Logf("overflowed base: %v", err)
	// The snapshot itself is fine: a full of it works.
	c, err := OpenClassic(ctx, ClassicOptions{Snap: s1})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Overflowing while the table is read: the check afterwards sees it.
	s2 := createClassic(t, vol, "s2", 8<<20, true)
	sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=1 seek=20 oflag=direct status=none")
	waitNextSecond(s2.Time)
	s3 := createClassic(t, vol, "s3", 32<<20, true)
	classicAfterRead = func() {
		sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=12 seek=30 oflag=direct status=none")
	}
	_, err = OpenClassic(ctx, ClassicOptions{Snap: s3, Base: s2})
	classicAfterRead = nil
	if !errors.Is(err, ErrBaseInvalid) {
		t.Fatalf("base overflowing during the read: %v", err)
	}
	t.Logf("base overflowed during the read: %v", err)

	// An invalidated snapshot cannot be sent at all.
	s4 := createClassic(t, vol, "s4", 4<<20, true)
	sh(t, "dd if=/dev/urandom of="+dev+" bs=1M count=8 seek=40 oflag=direct status=none")
	if _, err := OpenClassic(ctx, ClassicOptions{Snap: s4}); !errors.Is(err, ErrSnapshotInvalid) || errors.Is(err, ErrBaseInvalid) {
		t.Errorf("full of an overflowed snapshot: %v", err)
	}
	if _, err := OpenClassic(ctx, ClassicOptions{Snap: s4, Base: s3}); !errors.Is(err, ErrSnapshotInvalid) {
		t.Errorf("incremental to an overflowed snapshot: %v", err)
	}
	for _, s := range []*LV{s0, s1, s2, s3, s4} {
		if err := RemoveSnapshot(ctx, s.FullName()); err != nil {
			t.Errorf("remove a snapshot: %v", err)
		}
	}
}
