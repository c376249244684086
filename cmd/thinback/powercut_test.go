package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/lvmthin/lvmtest"
	"github.com/thinback/thinback/lvmthin/lvmtest/logwrites"
)

// TestGuestPowerCut cuts the power at every flush and FUA of a store's
// filesystem, and of a target's, in the User-Mode Linux guest: see
// TestPowerCutStore and TestPowerCutApply.
func TestGuestPowerCut(t *testing.T) {
	lvmtest.RunGuest(t, "../..", lvmtest.Options{Pattern: "^TestPowerCut(Store|Apply)$", Timeout: 25 * time.Minute, Mem: "1536M"})
}

// The checks replay a log onto a copy of the filesystem and mount it where
// the logged filesystem was mounted, through a device-mapper device of the
// same number, so that what thinback recorded about paths and devices
// (a target's device and inode in the state file) still holds.
const (
	pcLogDev   = "tbpc-log"
	pcCheckDev = "tbpc-check"
	pcMinor    = "200"
	pcVolSize  = 8 << 20  // the backed-up image
	pcFSSize   = 48 << 20 // the filesystem under test
)

// pcPoints says how many points a test checks: every one when there are
// at most def, else a seeded sample of def, which keeps the default run to
// a few minutes of guest time. THINBACK_POWERCUT_POINTS=all checks every
// point, a number sets the sample's size.
func pcPoints(t *testing.T, def int) int {
	t.Helper()
	switch v := os.Getenv("THINBACK_POWERCUT_POINTS"); v {
	case "":
		return def
	case "all":
		return 0
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("THINBACK_POWERCUT_POINTS=%q: want all or a positive number", v)
		}
		return n
	}
}

// pcSeed is the seed of a test's images and of its sample of points:
// logged, and taken back from THINBACK_SEED.
func pcSeed(t *testing.T) int64 {
	t.Helper()
	seed := time.Now().UnixNano()
	if v := os.Getenv("THINBACK_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", v, err)
		}
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return seed
}

func pcRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// pcThinback runs the thinback command (this test binary as thinback).
func pcThinback(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "THINBACK_TEST_AS_MAIN=1")
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running thinback %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), code
}

// pcMust runs thinback and fails the test unless it exits 0.
func pcMust(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, code := pcThinback(t, args...)
	if code != 0 {
		t.Fatalf("thinback %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func pcCopy(t *testing.T, dst, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func pcSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// pcVersions writes n versions of a disk image, each the last with some
// 64 KiB blocks rewritten (random data, text or zeroes), and returns their
// paths and digests.
func pcVersions(t *testing.T, dir string, r *rand.Rand, n int) (paths, sums []string) {
	t.Helper()
	img := make([]byte, pcVolSize)
	fill := func(b []byte) {
		switch r.Intn(3) {
		case 0:
			clear(b)
		case 1:
			r.Read(b)
		default:
			for i := range b {
				b[i] = "thinback power cut\n"[i%19]
			}
		}
	}
	for off := 0; off < len(img); off += 65536 {
		fill(img[off : off+65536])
	}
	for v := 0; v < n; v++ {
		if v > 0 {
			for i := 0; i < 8+r.Intn(24); i++ {
				off := r.Intn(len(img)/65536) * 65536
				fill(img[off : off+65536])
			}
		}
		p := filepath.Join(dir, fmt.Sprintf("v%d.img", v))
		if err := os.WriteFile(p, img, 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
		sums = append(sums, hex.EncodeToString(func() []byte { s := sha256.Sum256(img); return s[:] }()))
	}
	return paths, sums
}

// logged is an ext4 filesystem on a dm-log-writes device: every write,
// flush and FUA that reaches it is logged on a second device.
type logged struct {
	dir, mnt, major   string
	data, logf        string // images of the filesystem and of the log
	base              string // the filesystem before logging started
	dataLoop, logLoop string
	log               *logwrites.Log
}

func newLogged(t *testing.T) *logged {
	t.Helper()
	if !lvmtest.InGuest() {
		t.Skip("runs inside the User-Mode Linux guest (TestGuestPowerCut)")
	}
	dir := t.TempDir()
	l := &logged{dir: dir, mnt: filepath.Join(dir, "mnt"), data: filepath.Join(dir, "fs.img"),
		logf: filepath.Join(dir, "log.img"), base: filepath.Join(dir, "base.img")}
	devices, err := os.ReadFile("/proc/devices")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(devices), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[1] == "device-mapper" {
			l.major = f[0]
		}
	}
	if l.major == "" {
		t.Fatal("no device-mapper in /proc/devices")
	}
	pcRun(t, "truncate", "-s", strconv.Itoa(pcFSSize), l.data)
	// Everything initialised now, so no background thread writes later.
	pcRun(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", l.data)
	pcCopy(t, l.base, l.data)
	pcRun(t, "truncate", "-s", "1G", l.logf)
	l.dataLoop = pcRun(t, "losetup", "-f", "--show", l.data)
	l.logLoop = pcRun(t, "losetup", "-f", "--show", l.logf)
	t.Cleanup(func() {
		exec.Command("umount", l.mnt).Run()
		exec.Command("dmsetup", "remove", pcLogDev).Run()
		exec.Command("losetup", "-d", l.dataLoop, l.logLoop).Run()
	})
	pcRun(t, "dmsetup", "create", pcLogDev, "--major", l.major, "--minor", pcMinor, "--table",
		fmt.Sprintf("0 %d log-writes %s %s", pcFSSize/512, l.dataLoop, l.logLoop))
	pcRun(t, "dmsetup", "mknodes", pcLogDev)
	if err := os.Mkdir(l.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	pcRun(t, "mount", "-t", "ext4", "/dev/mapper/"+pcLogDev, l.mnt)
	return l
}

func (l *logged) mark(t *testing.T, name string) {
	t.Helper()
	pcRun(t, "dmsetup", "message", pcLogDev, "0", "mark", name)
}

// finish unmounts the filesystem, removes the log-writes device and reads
// the log.
func (l *logged) finish(t *testing.T) {
	t.Helper()
	pcRun(t, "umount", l.mnt)
	pcRun(t, "dmsetup", "remove", pcLogDev)
	pcRun(t, "losetup", "-d", l.dataLoop, l.logLoop)
	f, err := os.Open(l.logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if l.log, err = logwrites.Read(f, fi.Size()); err != nil {
		t.Fatal(err)
	}
	if _, ok := l.log.Mark(logwrites.EndMark); !ok {
		t.Fatalf("the log has no %q mark: the kernel stopped logging (log device full?)", logwrites.EndMark)
	}
}

// eachPoint replays the log to each chosen flush or FUA point onto a copy
// of the starting filesystem, mounts a copy of that state where the
// logged filesystem was, and calls check with the marks logged before the
// point. check may call remount to start again from the same state.
func (l *logged) eachPoint(t *testing.T, sample int, seed int64, check func(t *testing.T, marks map[string]bool, remount func())) {
	t.Helper()
	points := l.log.Points()
	limit := pcPoints(t, sample)
	chosen := points
	if limit > 0 && len(points) > limit {
		r := rand.New(rand.NewSource(seed))
		// Always the last point (everything on disk), plus a sample.
		chosen = []int{points[len(points)-1]}
		for _, i := range r.Perm(len(points) - 1)[:limit-1] {
			chosen = append(chosen, points[i])
		}
		sort.Ints(chosen)
		t.Logf("checking %d of %d flush/FUA points of %d log entries, a sample (THINBACK_POWERCUT_POINTS=all for every point)",
			len(chosen), len(points), len(l.log.Entries))
	} else {
		t.Logf("checking all %d flush/FUA points of %d log entries", len(points), len(l.log.Entries))
	}
	replay := filepath.Join(l.dir, "replay.img")
	pcCopy(t, replay, l.base)
	rf, err := os.OpenFile(replay, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rp := logwrites.NewReplayer(l.log, rf, pcFSSize)
	check1 := filepath.Join(l.dir, "check.img")
	failed := 0
	for _, p := range chosen {
		if err := rp.ReplayTo(p); err != nil {
			t.Fatal(err)
		}
		marks := map[string]bool{}
		var last string
		for _, e := range l.log.Entries[:p+1] {
			if e.Flags&logwrites.FlagMark != 0 {
				marks[e.Mark], last = true, e.Mark
			}
		}
		ok := t.Run(fmt.Sprintf("entry-%d", p), func(t *testing.T) {
			t.Logf("power cut at %s, after mark %q", l.log.Entries[p], last)
			var loop string
			unmount := func() {
				if loop == "" {
					return
				}
				pcRun(t, "umount", l.mnt)
				pcRun(t, "dmsetup", "remove", pcCheckDev)
				pcRun(t, "losetup", "-d", loop)
				loop = ""
			}
			mount := func() {
				unmount()
				if err := rf.Sync(); err != nil {
					t.Fatal(err)
				}
				pcCopy(t, check1, replay)
				loop = pcRun(t, "losetup", "-f", "--show", check1)
				pcRun(t, "dmsetup", "create", pcCheckDev, "--major", l.major, "--minor", pcMinor, "--table",
					fmt.Sprintf("0 %d linear %s 0", pcFSSize/512, loop))
				pcRun(t, "dmsetup", "mknodes", pcCheckDev)
				pcRun(t, "mount", "-t", "ext4", "/dev/mapper/"+pcCheckDev, l.mnt)
			}
			defer func() {
				if loop != "" {
					exec.Command("umount", l.mnt).Run()
					exec.Command("dmsetup", "remove", pcCheckDev).Run()
					exec.Command("losetup", "-d", loop).Run()
				}
			}()
			mount()
			check(t, marks, mount)
			unmount()
		})
		if !ok {
			failed++
		}
	}
	t.Logf("power cuts checked: %d points of %d (%d log entries), %d failed", len(chosen), len(points), len(l.log.Entries), failed)
}

// pcListing is what list --json says of the store's one volume.
type pcListing []struct {
	Name      string `json:"name"`
	Snapshots []struct {
		ID   string `json:"id"`
		Seq  int    `json:"seq"`
		File string `json:"file"`
	} `json:"snapshots"`
}

// TestPowerCutStore: a full, two incrementals and a prune into a store on
// ext4; at every flush or FUA, the store that a power cut leaves lists
// every backup that had finished, verifies, restores each snapshot it
// lists to the right bytes, and takes the next backup, after which nothing
// temporary or orphaned is left.
func TestPowerCutStore(t *testing.T) {
	l := newLogged(t)
	seed := pcSeed(t)
	vers, sums := pcVersions(t, l.dir, rand.New(rand.NewSource(seed)), 4)
	src := filepath.Join(l.dir, "src.img")
	store := filepath.Join(l.mnt, "store")
	t.Setenv("THINBACK_STATE", filepath.Join(l.dir, "state.db"))
	for i := 0; i < 3; i++ {
		pcCopy(t, src, vers[i])
		l.mark(t, fmt.Sprintf("begin-%d", i+1))
		pcMust(t, "backup", "--file", src, "--store", store, "--quiet")
		l.mark(t, fmt.Sprintf("done-%d", i+1))
	}
	l.mark(t, "begin-prune")
	pcMust(t, "prune", "src.img", "--store", store, "--keep-last", "1")
	l.mark(t, "done-prune")
	l.finish(t)

	// The next backup's source: a fourth version.
	pcCopy(t, src, vers[3])
	n := 0
	l.eachPoint(t, 12, seed, func(t *testing.T, marks map[string]bool, _ func()) {
		n++
		restored := filepath.Join(l.dir, fmt.Sprintf("restored-%d.img", n))
		defer os.Remove(restored)
		restore := func(seq int) string {
			t.Helper()
			os.Remove(restored)
			pcMust(t, "restore", "src.img", "--store", store, "--snapshot", "#"+strconv.Itoa(seq), "--to", restored, "--quiet",
				"--state", filepath.Join(l.dir, fmt.Sprintf("state-%d.db", n)))
			return pcSum(t, restored)
		}
		list := func() (pcListing, map[int]string) {
			t.Helper()
			var ls pcListing
			if err := json.Unmarshal([]byte(pcMust(t, "list", "--store", store, "--json")), &ls); err != nil {
				t.Fatal(err)
			}
			seqs := map[int]string{}
			for _, v := range ls {
				for _, s := range v.Snapshots {
					seqs[s.Seq] = s.File
				}
			}
			return ls, seqs
		}
		if _, err := os.Stat(filepath.Join(store, "catalog.db")); err == nil {
			_, seqs := list()
			// What a backup that finished stored stays, until the prune
			// began (which merges #1 and #2 into #3); the kept #3 stays
			// throughout.
			for i := 1; i <= 3; i++ {
				if marks[fmt.Sprintf("done-%d", i)] && (!marks["begin-prune"] || i == 3) && seqs[i] == "" {
					t.Errorf("backup #%d had finished, but the store does not list it: %v", i, seqs)
				}
				if !marks[fmt.Sprintf("begin-%d", i)] && seqs[i] != "" {
					t.Errorf("the store lists #%d before its backup began", i)
				}
			}
			if marks["done-prune"] && (len(seqs) != 1 || seqs[3] == "") {
				t.Errorf("the prune had finished, but the store lists %v, not #3 alone", seqs)
			}
			if out, errOut, code := pcThinback(t, "verify", "--store", store); code != 0 {
				t.Errorf("verify: exit %d\n%s%s", code, out, errOut)
			}
			for seq := range seqs {
				if seq < 1 || seq > 3 {
					t.Errorf("the store lists #%d", seq)
					continue
				}
				if got := restore(seq); got != sums[seq-1] {
					t.Errorf("#%d restores to other bytes than its backup read", seq)
				}
			}
		} else if marks["done-1"] {
			t.Errorf("the first backup had finished, but the store has no catalog: %v", err)
		}
		if t.Failed() {
			return
		}

		// The next backup succeeds, is restored right, and leaves nothing
		// temporary or unrecorded behind.
		pcMust(t, "backup", "--file", src, "--store", store, "--quiet")
		if out, errOut, code := pcThinback(t, "verify", "--store", store); code != 0 {
			t.Errorf("verify after the next backup: exit %d\n%s%s", code, out, errOut)
		}
		_, seqs := list()
		newest := 0
		for seq := range seqs {
			newest = max(newest, seq)
		}
		if got := restore(newest); got != sums[3] {
			t.Errorf("the next backup, #%d, restores to other bytes than it read", newest)
		}
		left, _ := filepath.Glob(filepath.Join(store, "tmp", "*"))
		if len(left) > 0 {
			t.Errorf("the next backup left temporary files: %v", left)
		}
		files, _ := filepath.Glob(filepath.Join(store, "volumes", "*", "*"))
		recorded := map[string]bool{}
		for _, f := range seqs {
			recorded[filepath.Join(store, f)] = true
		}
		for _, f := range files {
			if !recorded[f] {
				t.Errorf("the next backup left a file the catalog does not list: %s", f)
			}
		}
	})
}

// TestPowerCutApply: a full and two incrementals applied to a target file
// with its state file and snapback files on ext4; at every flush or FUA,
// either the state says the target holds a snapshot and it does, or it
// says an apply was interrupted, and running that apply again, applying
// its snapback file (then the apply again), and running the apply again
// with its snapback file (then that file) all give the right bytes.
// Every apply that finished stays recorded, and the rest of the chain
// applies on top of what the state says.
func TestPowerCutApply(t *testing.T) {
	l := newLogged(t)
	seed := pcSeed(t)
	vers, sums := pcVersions(t, l.dir, rand.New(rand.NewSource(seed)), 3)
	// The delta files, outside the filesystem under test.
	files := []string{filepath.Join(l.dir, "full.tbk"), filepath.Join(l.dir, "incr1.tbk"), filepath.Join(l.dir, "incr2.tbk")}
	pcMust(t, "send", "--file", vers[0], "--volume", "pc", "-o", files[0], "--quiet")
	pcMust(t, "send", "--file", vers[1], "--base-file", vers[0], "--volume", "pc", "-o", files[1], "--quiet")
	pcMust(t, "send", "--file", vers[2], "--base-file", vers[1], "--volume", "pc", "-o", files[2], "--quiet")
	version := map[string]int{} // snapshot ID -> version
	for i, f := range files {
		var h struct {
			Header struct {
				Snapshot struct {
					ID string `json:"id"`
				} `json:"snapshot"`
			} `json:"header"`
		}
		if err := json.Unmarshal([]byte(pcMust(t, "inspect", "--json", f)), &h); err != nil {
			t.Fatal(err)
		}
		version[h.Header.Snapshot.ID] = i
	}
	target := filepath.Join(l.mnt, "target.img")
	state := filepath.Join(l.mnt, "state", "state.db")
	undo := func(i int) string { return filepath.Join(l.mnt, fmt.Sprintf("undo%d.tbk", i)) }
	apply := func(t *testing.T, i int, snapback string) {
		t.Helper()
		args := []string{"apply", files[i], "--to", target, "--state", state, "--quiet"}
		if snapback != "" {
			args = append(args, "--snapback", snapback)
		}
		pcMust(t, args...)
	}
	for i := range files {
		l.mark(t, fmt.Sprintf("begin-%d", i))
		sb := ""
		if i > 0 {
			sb = undo(i)
		}
		apply(t, i, sb)
		l.mark(t, fmt.Sprintf("done-%d", i))
	}
	l.finish(t)

	torn, undone := 0, 0
	l.eachPoint(t, 16, seed, func(t *testing.T, marks map[string]bool, remount func()) {
		done := -1 // the last apply that finished
		for i := range files {
			if marks[fmt.Sprintf("done-%d", i)] {
				done = i
			}
		}
		var rec *catalog.Target
		err := catalog.View(state, nil, func(tx *catalog.Tx) error {
			ts, err := tx.Targets()
			if len(ts) > 1 {
				return fmt.Errorf("%d targets recorded, want 1", len(ts))
			}
			if len(ts) == 1 {
				rec = &ts[0]
			}
			return err
		})
		if err != nil {
			t.Fatalf("reading the state file: %v", err)
		}
		// finishFrom applies the rest of the chain after version held and
		// checks the target's bytes at each step.
		finishFrom := func(held int) {
			t.Helper()
			for i := held + 1; i < len(files); i++ {
				apply(t, i, filepath.Join(l.mnt, fmt.Sprintf("reundo%d.tbk", i)))
				if pcSum(t, target) != sums[i] {
					t.Fatalf("after applying %s the target does not hold version %d", filepath.Base(files[i]), i)
				}
			}
		}
		switch {
		case rec == nil:
			if done >= 0 {
				t.Fatalf("apply %d had finished, but the state file records no target", done)
			}
			finishFrom(-1)
		case rec.InProgress == nil:
			held, ok := version[rec.Snapshot]
			if !ok {
				t.Fatalf("the state says the target holds %s (%q), none of the applied snapshots", rec.Snapshot, rec.SnapshotName)
			}
			if held < done {
				t.Fatalf("apply %d had finished, but the state says the target holds version %d", done, held)
			}
			if pcSum(t, target) != sums[held] {
				t.Fatalf("the state says the target holds version %d, and it does not", held)
			}
			finishFrom(held)
		default:
			k, ok := version[rec.InProgress.Snapshot]
			if !ok {
				t.Fatalf("the state says an apply of %s was interrupted, none of the applied snapshots", rec.InProgress.Snapshot)
			}
			if k <= done {
				t.Fatalf("apply %d had finished, but the state says it was interrupted", k)
			}
			t.Logf("the state says apply %d was interrupted", k)
			// Running the same apply again finishes it.
			apply(t, k, "")
			if pcSum(t, target) != sums[k] {
				t.Fatalf("running interrupted apply %d again did not give version %d", k, k)
			}
			finishFrom(k)
			if k == 0 {
				return // no snapback file
			}
			// From the same state, the snapback file undoes it, even torn
			// (which inspect, with no state to go by, refuses).
			remount()
			if _, _, code := pcThinback(t, "inspect", undo(k)); code == 3 {
				torn++
				t.Logf("the snapback file of interrupted apply %d is torn", k)
			}
			out, errOut, code := pcThinback(t, "apply", undo(k), "--to", target, "--state", state, "--quiet")
			if code != 0 {
				t.Fatalf("applying the snapback file of interrupted apply %d: exit %d\n%s%s", k, code, out, errOut)
			}
			if pcSum(t, target) != sums[k-1] {
				t.Fatalf("applying the snapback file of interrupted apply %d did not give version %d back", k, k-1)
			}
			finishFrom(k - 1)
			// From the same state, the apply run again with its snapback
			// file continues that file, which then undoes both runs.
			remount()
			apply(t, k, undo(k))
			if pcSum(t, target) != sums[k] {
				t.Fatalf("running interrupted apply %d again with its snapback file did not give version %d", k, k)
			}
			if out, errOut, code := pcThinback(t, "apply", undo(k), "--to", target, "--state", state, "--quiet"); code != 0 {
				t.Fatalf("applying the continued snapback file of apply %d: exit %d\n%s%s", k, code, out, errOut)
			}
			if pcSum(t, target) != sums[k-1] {
				t.Fatalf("applying the continued snapback file of apply %d did not give version %d back", k, k-1)
			}
			undone++
		}
	})
	t.Logf("snapback files of interrupted applies: %d undid and were continued, %d of them torn", undone, torn)
}
