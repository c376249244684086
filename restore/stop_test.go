package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
)

// TestSmallFileVerifiedBeforeWriting: a seekable file small enough to be
// read twice has every payload verified before the first write, so a
// damaged record late in it stops the apply with nothing written, nothing
// recorded, and no snapback file left.
func TestSmallFileVerifiedBeforeWriting(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(300 * 4096))
	next := append([]byte(nil), v1.data...)
	w.r.Read(next)
	v2 := w.image(next)
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	before := st.only(t)
	good := w.delta(v2, v1)
	nums, _ := dataRecords(t, good)
	bad := corruptAt(t, good, nums[len(nums)-1])
	undo := filepath.Join(w.dir, "undo.tbk")
	_, err := st.apply(t, target, []string{bad}, Options{Snapback: newSnapback(t, undo)})
	if !errors.Is(err, archive.ErrChecksum) {
		t.Fatalf("got %v, want ErrChecksum", err)
	}
	t.Log(err)
	mustEqual(t, target, v1.data)
	if after := st.only(t); after.InProgress != nil || after.Snapshot.ID != before.Snapshot.ID {
		t.Fatalf("state after a refused file: %+v", after)
	}
	if fi, err := os.Stat(undo); err != nil || fi.Size() != 0 {
		t.Fatalf("snapback file of an apply that wrote nothing: %v, %v bytes (want it untouched, for the caller to remove)", err, fi.Size())
	}
	if strings.Contains(err.Error(), "partly written") {
		t.Fatal("the message says the target is partly written; nothing was written")
	}
	if _, err := st.apply(t, target, []string{good}, Options{}); err != nil {
		t.Fatalf("the good copy after the refused one: %v", err)
	}
	mustEqual(t, target, v2.data)
}

// only returns the one state of st.
func (st stateStore) only(t *testing.T) State {
	t.Helper()
	if len(st) != 1 {
		t.Fatalf("%d states, want 1: %+v", len(st), st)
	}
	for _, s := range st {
		return s
	}
	panic("unreachable")
}

// TestFailedApplyRemovesCreatedTarget: a file target that the apply
// created is removed when the apply fails (a damaged file, a state file
// that cannot be written), and the caller is told to put its state back
// (and to drop the snapback file); a target that existed before is never
// removed.
func TestFailedApplyRemovesCreatedTarget(t *testing.T) {
	verifyFirstLimit(t, 0) // the damage is found after writing began
	w := newWorld(t)
	v1 := w.image(w.random(300 * 4096))
	good := w.delta(v1, nil)
	nums, _ := dataRecords(t, good)
	bad := corruptAt(t, good, nums[len(nums)-1])
	gone := func(path string) {
		t.Helper()
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s is still there (%v)", path, err)
		}
	}

	st := stateStore{}
	target := filepath.Join(w.dir, "new.img")
	undo := filepath.Join(w.dir, "undo.tbk")
	reverted := false
	_, err := st.apply(t, target, []string{bad}, Options{Snapback: newSnapback(t, undo), Workers: 1,
		Revert: func() error { reverted = true; return nil }})
	if !errors.Is(err, archive.ErrChecksum) || !strings.Contains(err.Error(), "which this run created, was removed") {
		t.Fatalf("got %v, want ErrChecksum and the removal said", err)
	}
	gone(target)
	if !reverted || len(st) != 0 {
		t.Fatalf("Revert called: %v, state %+v: the state and snapback file of a removed target must go", reverted, st)
	}

	// The state file cannot be written.
	failing := errors.New("state file: disk full")
	_, err = st.apply(t, target, []string{good}, Options{Begin: func(State) error { return failing }})
	if !errors.Is(err, failing) {
		t.Fatalf("got %v, want the state file's error", err)
	}
	gone(target)

	// A target that was there before stays, written in part and marked.
	old := bytes.Repeat([]byte{7}, 300*4096)
	if err := os.WriteFile(target, old, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = st.apply(t, target, []string{bad}, Options{Workers: 1})
	if !errors.Is(err, archive.ErrChecksum) {
		t.Fatal(err)
	}
	got, err := os.ReadFile(target)
	if err != nil {
		t.Fatalf("a target that existed before was removed: %v", err)
	}
	if bytes.Equal(got, old) {
		t.Fatal("nothing was written: the test wants an apply that stops half-way")
	}
	if st.only(t).InProgress == nil {
		t.Fatal("no mark on the partly written target")
	}
}

// TestHugeVolumeSizeLeavesStateAlone: a (crafted, valid) full of a 4 EiB
// volume fails before anything is recorded or written: the target keeps
// its state, and the next valid incremental applies.
func TestHugeVolumeSizeLeavesStateAlone(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(64 * 4096))
	v2 := w.image(w.mutate(v1.data, 10))
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	probe := filepath.Join(w.dir, "probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(probe, 1<<62); err == nil {
		// This filesystem (tmpfs) holds 4 EiB files: a file size limit
		// stands in for one that does not, as FAT's 4 GiB would.
		os.Remove(probe)
		var old syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
			t.Fatal(err)
		}
		lim := old
		lim.Cur = 1 << 40
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) })
	}
	huge := w.image(nil)
	h := w.header(huge, nil)
	h.VolumeSize = 1 << 62
	crafted := filepath.Join(w.dir, "huge.tbk")
	f, err := os.Create(crafted)
	if err != nil {
		t.Fatal(err)
	}
	aw := archive.NewWriter(f)
	if err := aw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := aw.WriteRecord(&archive.Record{Kind: archive.KindZero, Offset: 0, Length: h.VolumeSize}); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	before := st.only(t)
	_, err = st.apply(t, target, []string{crafted}, Options{Snapback: newSnapback(t, filepath.Join(w.dir, "undo.tbk"))})
	if !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("got %v, want ErrTargetTooSmall", err)
	}
	t.Log(err)
	if strings.Contains(err.Error(), "partly written") {
		t.Fatal("the message says partly written; nothing was written")
	}
	if after := st.only(t); after.InProgress != nil || after.Snapshot.ID != before.Snapshot.ID {
		t.Fatalf("the state changed: %+v", after)
	}
	mustEqual(t, target, v1.data)
	if _, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{}); err != nil {
		t.Fatalf("a valid incremental after the refused file: %v", err)
	}
	mustEqual(t, target, v2.data)
}

// TestIncrementalOfAnotherVolumeName: an incremental whose parent is the
// target's snapshot but whose volume name differs (and neither side has a
// UUID) is refused unless forced; a name derived from an image's file name,
// which changes along a chain of sends, is not compared.
func TestIncrementalOfAnotherVolumeName(t *testing.T) {
	held := archive.Snapshot{ID: archive.NewID(), Name: "a"}
	st := State{VolumeName: "vm1", Snapshot: held}
	h := &archive.Header{VolumeName: "vm2", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "b"}, Parent: held}
	files := []File{{Name: "incr.tbk", Header: h}}
	err := CheckChain(files, "t.img", st, false)
	if !errors.Is(err, ErrVolumeMismatch) {
		t.Fatalf("got %v, want ErrVolumeMismatch", err)
	}
	t.Log(err)
	if err := CheckChain(files, "t.img", st, true); err != nil {
		t.Fatalf("--force: %v", err)
	}
	h.VolumeName = "vm1"
	if err := CheckChain(files, "t.img", st, false); err != nil {
		t.Fatalf("the same name: %v", err)
	}
	h.VolumeName = "b.img"
	h.SetAttr("file.path", "/images/b.img")
	if err := CheckChain(files, "t.img", st, false); err != nil {
		t.Fatalf("a name derived from the image's: %v", err)
	}
}

// TestModifiedTargetRefusesIncremental: after an apply, the state holds a
// fingerprint of the target; writing to one of its sampled blocks (as
// mounting a filesystem does), or changing a file's size, makes the
// target "modified": an incremental is refused in ZFS's words, --force and
// a full still apply, and an untouched target takes its incremental.
func TestModifiedTargetRefusesIncremental(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(300 * 4096))
	v2 := w.image(w.mutate(v1.data, 20))
	full, incr := w.delta(v1, nil), w.delta(v2, v1)

	for _, tc := range []struct {
		name   string
		modify func(t *testing.T, path string, fp *Fingerprint)
	}{
		{"superblock", func(t *testing.T, path string, fp *Fingerprint) { scribble(t, path, 1024, 16) }},
		{"sampled block", func(t *testing.T, path string, fp *Fingerprint) {
			scribble(t, path, fp.Samples[len(fp.Samples)/2].Offset+100, 1)
		}},
		{"grown", func(t *testing.T, path string, fp *Fingerprint) {
			if err := os.Truncate(path, fp.Size+4096); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stateStore{}
			target := filepath.Join(t.TempDir(), "copy")
			if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
				t.Fatal(err)
			}
			fp := st.only(t).Fingerprint
			if fp == nil || len(fp.Samples) != fingerprintSamples {
				t.Fatalf("fingerprint %+v: want %d samples", fp, fingerprintSamples)
			}
			tc.modify(t, target, fp)
			_, err := st.apply(t, target, []string{incr}, Options{})
			if !errors.Is(err, ErrModified) || !strings.Contains(err.Error(), "destination "+target+" has been modified since most recent snapshot") {
				t.Fatalf("got %v, want ErrModified in ZFS's words", err)
			}
			t.Log(err)
			if _, err := st.apply(t, target, []string{incr}, Options{Force: true}); err != nil {
				t.Fatalf("--force: %v", err)
			}
			if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
				t.Fatalf("a full over a modified target: %v", err)
			}
			mustEqual(t, target, v1.data)
			if _, err := st.apply(t, target, []string{incr}, Options{}); err != nil {
				t.Fatalf("the incremental after the full: %v", err)
			}
			mustEqual(t, target, v2.data)
		})
	}
}

func scribble(t *testing.T, path string, off int64, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	f.ReadAt(b, off)
	for i := range b {
		b[i] ^= 0xa5
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// TestFingerprintSamples: the sample is the same for the same snapshot
// (two targets of one full), always holds the first block, the block at
// 64 KiB and the last one, and prefers data to zeroes: on a volume with
// few data blocks, every data block is sampled.
func TestFingerprintSamples(t *testing.T) {
	w := newWorld(t)
	data := make([]byte, 1000*4096+100)
	dataBlocks := []int64{3, 170, 500, 999}
	for _, b := range dataBlocks {
		w.r.Read(data[b*4096 : b*4096+4096])
	}
	v1 := w.image(data)
	full := w.delta(v1, nil)
	var fps []*Fingerprint
	for i := 0; i < 2; i++ {
		st := stateStore{}
		if _, err := st.apply(t, filepath.Join(w.dir, "t"+string(rune('a'+i))), []string{full}, Options{}); err != nil {
			t.Fatal(err)
		}
		fps = append(fps, st.only(t).Fingerprint)
	}
	if len(fps[0].Samples) != len(fps[1].Samples) {
		t.Fatal("two applies of one file sampled differently")
	}
	at := map[int64]bool{}
	for i, s := range fps[0].Samples {
		if s != fps[1].Samples[i] {
			t.Fatalf("sample %d differs between two applies of one file: %+v %+v", i, s, fps[1].Samples[i])
		}
		at[s.Offset] = true
	}
	for _, off := range append([]int64{0, superblockOffset, 1000 * 4096}, dataBlocks[0]*4096, dataBlocks[1]*4096, dataBlocks[2]*4096, dataBlocks[3]*4096) {
		if !at[off] {
			t.Errorf("block at %d not sampled: %v", off, fps[0].Samples)
		}
	}
}
