package catalog

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestOpenStoreLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "store")
	ts := openTestStore(t, dir)
	for _, sub := range []string{"", "volumes", "tmp", "locks"} {
		fi, err := os.Stat(filepath.Join(dir, sub))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != os.ModeDir|0o700 {
			t.Errorf("%s/: mode %v", sub, fi.Mode())
		}
	}
	fi, err := os.Stat(ts.DBPath())
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("catalog.db: %v, %v", fi, err)
	}
	// Reopening an existing store is fine; nothing is kept open between
	// calls, so the catalog can be opened exclusively right away.
	ts.putVolume("v")
	if _, err := OpenStore(dir); err != nil {
		t.Fatal(err)
	}
	db, err := Open(ts.DBPath(), &Options{Timeout: -1})
	if err != nil {
		t.Fatalf("store keeps the catalog locked between calls: %v", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestCommit(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("vg0/vm1")
	full := ts.commit("vg0/vm1", "", []byte("full contents"))
	incr := ts.commit("vg0/vm1", full.ID, []byte("incremental"))

	for i, s := range []Snapshot{full, incr} {
		want := fmt.Sprintf("volumes/vg0%%2Fvm1/%08d-%s.tbk", i+1, s.ID)
		if s.File != want || s.Seq != uint64(i+1) {
			t.Errorf("snapshot %d: file %q seq %d, want %q", i, s.File, s.Seq, want)
		}
	}
	if incr.FileSize != int64(len("incremental")) || string(ts.read(incr.File)) != "incremental" {
		t.Errorf("incremental: size %d, contents %q", incr.FileSize, ts.read(incr.File))
	}
	if got := dirFiles(t, filepath.Join(ts.Dir(), "tmp")); len(got) != 0 {
		t.Errorf("tmp/ holds %v after commits", got)
	}
	got := ts.snapshots("vg0/vm1")
	if len(got) != 2 || got[1].Parent != full.ID || got[1].File != incr.File || got[1].FileDigest != incr.FileDigest {
		t.Errorf("recorded %+v", got)
	}
}

func TestCommitRefusals(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	ts.putVolume("w")
	a := ts.commit("v", "", []byte("a"))
	w := ts.commit("w", "", []byte("w"))

	try := func(name string, snap Snapshot, want error) {
		t.Helper()
		f, err := ts.CreateTemp(snap.Volume)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("data of " + name)); err != nil {
			t.Fatal(err)
		}
		if snap.ID == "" {
			snap.ID = newID()
		}
		if snap.Time.IsZero() {
			snap.Time = baseTime
		}
		err = ts.Commit(f, &snap)
		if err == nil || (want != nil && !errors.Is(err, want)) {
			t.Errorf("%s: Commit = %v, want %v", name, err, want)
		}
		if _, serr := os.Stat(f.Name()); !errors.Is(serr, os.ErrNotExist) {
			t.Errorf("%s: temp file left behind", name)
		}
	}
	try("unknown volume", Snapshot{Volume: "x"}, ErrNotFound)
	try("existing id", Snapshot{ID: a.ID, Volume: "v"}, ErrExist)
	try("missing parent", Snapshot{Volume: "v", Parent: newID()}, ErrMissingParent)
	try("parent in another volume", Snapshot{Volume: "v", Parent: w.ID}, ErrParentVolume)
	try("seq in use", Snapshot{Volume: "v", Seq: a.Seq}, ErrExist)
	try("invalid", Snapshot{Volume: "v", ID: "not-a-uuid"}, ErrInvalidRecord)

	// A file already at the final name is never overwritten.
	id := newID()
	squatter := fileName("v", 7, id, 0)
	if err := os.WriteFile(ts.Path(squatter), []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	try("final name taken", Snapshot{ID: id, Volume: "v", Seq: 7}, ErrExist)
	if string(ts.read(squatter)) != "precious" {
		t.Error("existing file overwritten")
	}

	// A file that CreateTemp did not make is refused and left alone.
	own := filepath.Join(t.TempDir(), "mine.tbk")
	f, err := os.Create(own)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := ts.Commit(f, &Snapshot{ID: newID(), Volume: "v", Time: baseTime}); err == nil {
		t.Error("Commit of a foreign file succeeded")
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("foreign file removed: %v", err)
	}

	removed, err := ts.RemoveOrphans()
	if err != nil || len(removed) != 1 || removed[0] != squatter {
		t.Errorf("RemoveOrphans = %v, %v, want [%s]", removed, err, squatter)
	}
	if got := ts.snapshots("v"); len(got) != 1 {
		t.Errorf("refused commits left records: %v", ids(got))
	}
}

// merge stands in for the CLI's file merge: it writes data to a temp file.
func (ts *testStore) temp(volume string, data []byte) *os.File {
	ts.t.Helper()
	f, err := ts.CreateTemp(volume)
	if err != nil {
		ts.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		ts.t.Fatal(err)
	}
	return f
}

func TestReplaceIncremental(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("A"))
	b := ts.commit("v", a.ID, []byte("B"))
	c := ts.commit("v", b.ID, []byte("C"))

	merged := c
	merged.Parent, merged.FileDigest = a.ID, digest([]byte("B+C"))
	if err := ts.Replace(ts.temp("v", []byte("B+C")), &merged, b.ID); err != nil {
		t.Fatal(err)
	}
	wantFile := fmt.Sprintf("volumes/v/%08d-%s.1.tbk", c.Seq, c.ID)
	if merged.File != wantFile || merged.Seq != c.Seq || !merged.Created.Equal(c.Created) {
		t.Errorf("merged: file %q seq %d, want %q seq %d", merged.File, merged.Seq, wantFile, c.Seq)
	}
	mustView(t, ts, func(tx *Tx) error {
		chain, err := tx.Chain(c.ID)
		if err != nil {
			return err
		}
		if strings.Join(ids(chain), ",") != a.ID+","+c.ID {
			t.Errorf("chain after merge: %v", ids(chain))
		}
		if _, err := tx.Snapshot(b.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("B still recorded: %v", err)
		}
		return nil
	})
	if string(ts.read(merged.File)) != "B+C" {
		t.Error("merged contents")
	}
	for _, gone := range []string{b.File, c.File} {
		if _, err := os.Stat(ts.Path(gone)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not removed", gone)
		}
	}

	// A second rewrite of the same snapshot gets the next generation.
	again := merged
	if err := ts.Replace(ts.temp("v", []byte("B+C again")), &again); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("volumes/v/%08d-%s.2.tbk", c.Seq, c.ID); again.File != want {
		t.Errorf("second rewrite: %q, want %q", again.File, want)
	}
}

func TestReplaceFull(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("A"))
	b := ts.commit("v", a.ID, []byte("B"))
	c := ts.commit("v", b.ID, []byte("C"))

	newFull := b
	newFull.Parent, newFull.ParentSize = "", 0
	if err := ts.Replace(ts.temp("v", []byte("A+B")), &newFull, a.ID); err != nil {
		t.Fatal(err)
	}
	got := ts.snapshots("v")
	if len(got) != 2 || got[0].ID != b.ID || !got[0].IsFull() || got[1].Parent != b.ID {
		t.Errorf("after merging the full: %+v", got)
	}
	if _, err := os.Stat(ts.Path(a.File)); !errors.Is(err, os.ErrNotExist) {
		t.Error("old full's file not removed")
	}
	if string(ts.read(c.File)) != "C" {
		t.Error("untouched snapshot's file changed")
	}
}

func TestReplaceRefusals(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	ts.putVolume("w")
	a := ts.commit("v", "", []byte("A"))
	b := ts.commit("v", a.ID, []byte("B"))
	c := ts.commit("v", b.ID, []byte("C"))
	d := ts.commit("v", c.ID, []byte("D"))
	w := ts.commit("w", "", []byte("W"))

	for name, tc := range map[string]struct {
		snap   Snapshot
		remove []string
		want   error
	}{
		"child left dangling":   {withParent(d, a.ID), []string{b.ID}, ErrInUse}, // c still needs b
		"parent removed":        {withParent(c, a.ID), []string{a.ID}, ErrInUse},
		"newer parent":          {withParent(b, d.ID), nil, ErrParentOrder},
		"other volume removed":  {withParent(c, a.ID), []string{b.ID, w.ID}, nil},
		"unknown snapshot":      {Snapshot{ID: newID(), Volume: "v", Time: baseTime}, nil, ErrNotFound},
		"unknown removal":       {c, []string{newID()}, ErrNotFound},
		"replace and remove":    {c, []string{c.ID}, nil},
		"changed volume":        {func() Snapshot { s := c; s.Volume = "w"; return s }(), nil, nil},
		"changed seq":           {func() Snapshot { s := c; s.Seq = 99; return s }(), nil, nil},
		"invalid record":        {func() Snapshot { s := c; s.FileDigest = "XX"; return s }(), nil, ErrInvalidRecord},
		"parent in other chain": {withParent(c, w.ID), []string{b.ID}, ErrParentVolume},
	} {
		f := ts.temp("v", []byte("merged"))
		snap := tc.snap
		err := ts.Replace(f, &snap, tc.remove...)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Replace = %v, want %v", name, err, tc.want)
		}
	}
	// Nothing changed: the chain, the files, no orphans or temp files.
	if got := ids(ts.snapshots("v")); strings.Join(got, ",") != strings.Join(ids([]Snapshot{a, b, c, d}), ",") {
		t.Errorf("snapshots changed: %v", got)
	}
	if got := dirFiles(t, filepath.Join(ts.Dir(), "tmp")); len(got) != 0 {
		t.Errorf("tmp/ holds %v", got)
	}
}

func withParent(s Snapshot, parent string) Snapshot {
	s.Parent = parent
	return s
}

func TestRemove(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("A"))
	b := ts.commit("v", a.ID, []byte("B"))
	if err := ts.Remove("v", a.ID); !errors.Is(err, ErrInUse) {
		t.Errorf("Remove of a parent: %v, want ErrInUse", err)
	}
	if err := ts.Remove("w", b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Remove from the wrong volume: %v, want ErrNotFound", err)
	}
	if err := ts.Remove("v", b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ts.Path(b.File)); !errors.Is(err, os.ErrNotExist) {
		t.Error("file not removed")
	}
	if err := ts.Remove("v", b.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v", err)
	}
	if got := ids(ts.snapshots("v")); len(got) != 1 || got[0] != a.ID {
		t.Errorf("left %v", got)
	}
}

// TestRebuild deletes the catalog and recreates it from the files, with
// the records standing in for what the CLI reads from the file headers.
func TestRebuild(t *testing.T) {
	ts := newTestStore(t)
	headers := make(map[string]Snapshot)
	for _, vol := range []string{"vg0/vm1", "disk.img"} {
		ts.putVolume(vol)
		parent := ""
		for i := range 3 {
			s := ts.commit(vol, parent, []byte(fmt.Sprintf("%s #%d", vol, i)))
			headers[s.ID] = s
			parent = s.ID
		}
	}
	// A prune rewrote one snapshot: its new generation is what counts.
	snaps := ts.snapshots("vg0/vm1")
	merged := snaps[2]
	merged.Parent = snaps[0].ID
	if err := ts.Replace(ts.temp("vg0/vm1", []byte("merged")), &merged, snaps[1].ID); err != nil {
		t.Fatal(err)
	}
	delete(headers, snaps[1].ID)
	headers[merged.ID] = merged

	var before []Snapshot
	mustView(t, ts, func(tx *Tx) (err error) {
		before, err = tx.AllSnapshots()
		return err
	})
	if err := os.Remove(ts.DBPath()); err != nil {
		t.Fatal(err)
	}
	files, err := ts.Files()
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 5 {
		t.Fatalf("Files = %+v", files)
	}
	mustUpdate(t, ts, func(tx *Tx) error {
		if err := tx.ResetSnapshots(); err != nil {
			return err
		}
		for _, f := range files {
			h, ok := headers[f.ID]
			if !ok || h.Seq != f.Seq || h.Volume != f.Volume || h.FileSize != f.Size {
				t.Errorf("file %+v does not match its header %+v", f, h)
				continue
			}
			if _, err := tx.Volume(f.Volume); errors.Is(err, ErrNotFound) {
				if err := tx.PutVolume(testVolume(f.Volume)); err != nil {
					return err
				}
			}
			h.File = f.Path
			if err := tx.PutSnapshot(&h); err != nil {
				return err
			}
		}
		return nil
	})
	var after []Snapshot
	mustView(t, ts, func(tx *Tx) (err error) {
		after, err = tx.AllSnapshots()
		return err
	})
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("rebuilt catalog differs:\n got %+v\nwant %+v", after, before)
	}
}

func TestOrphans(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	ts.putVolume("busy")
	a := ts.commit("v", "", []byte("A"))
	planted := []string{
		fileName("v", 9, newID(), 0), // as left by a crash before recording
		"volumes/v/notes.txt",
		"volumes/not%2fcanonical/x.tbk",
		fileName("busy", 1, newID(), 0),
	}
	for _, p := range planted {
		if err := os.MkdirAll(filepath.Dir(ts.Path(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ts.Path(p), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	orphans, err := ts.Orphans()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(orphans, " ") != strings.Join(sortedCopy(planted), " ") {
		t.Errorf("Orphans = %v, want %v", orphans, sortedCopy(planted))
	}
	problems, err := ts.Check(CheckOptions{})
	if err != nil || len(problems) != len(planted) {
		t.Errorf("Check = %v, %v", problems, err)
	}
	for _, p := range problems {
		if !errors.Is(p, ErrOrphan) {
			t.Errorf("unexpected problem %v", p)
		}
	}

	// Another process is backing up "busy": its directory is left alone.
	_, stdin, out := startChild(t, "lock", ts.Dir(), "", childSpec{Volume: "busy"})
	if line, err := out.ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	removed, err := ts.RemoveOrphans()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(removed, " ") != strings.Join(sortedCopy(planted[:3]), " ") {
		t.Errorf("RemoveOrphans = %v, want %v", removed, planted[:3])
	}
	stdin.Close()
	// Now that it is done, the next run removes the rest.
	if _, err := out.ReadString('\n'); err == nil {
		t.Fatal("child wrote more")
	}
	waitUnlocked(t, ts.Store, "busy")
	removed, err = ts.RemoveOrphans()
	if err != nil || len(removed) != 1 || removed[0] != planted[3] {
		t.Errorf("second RemoveOrphans = %v, %v", removed, err)
	}
	if string(ts.read(a.File)) != "A" {
		t.Error("referenced file touched")
	}
}

func sortedCopy(s []string) []string {
	c := append([]string(nil), s...)
	for i := range c {
		for j := i + 1; j < len(c); j++ {
			if c[j] < c[i] {
				c[i], c[j] = c[j], c[i]
			}
		}
	}
	return c
}

// waitUnlocked waits until a child has released a volume lock.
func waitUnlocked(t *testing.T, s *Store, volume string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		unlock, err := s.LockVolume(volume)
		if err == nil {
			if err := unlock(); err != nil {
				t.Fatal(err)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume %s still locked: %v", volume, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deadPID returns the pid of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if processAlive(pid) {
		t.Skipf("pid %d was reused at once", pid)
	}
	return pid
}

func TestCleanTemp(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("vg0/vm1")
	tmp := filepath.Join(ts.Dir(), "tmp")
	plant := func(pid int) string {
		name := fmt.Sprintf("tbk.%d.%012x.vg0%%2Fvm1.tmp", pid, time.Now().UnixNano()&0xffffffffffff)
		if err := os.WriteFile(filepath.Join(tmp, name), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		return name
	}
	live, err := ts.CreateTemp("vg0/vm1") // this process is writing it
	if err != nil {
		t.Fatal(err)
	}
	dead := plant(deadPID(t))
	ours := plant(os.Getpid()) // a dead earlier process with our pid
	alive := plant(1)          // pid 1 always runs
	lockedName := plant(deadPID(t))
	notOurs := "scratch.tmp"
	if err := os.WriteFile(filepath.Join(tmp, notOurs), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// A writer in another pid namespace: its pid looks dead, its flock holds.
	lf, err := os.Open(filepath.Join(tmp, lockedName))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(lf.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}

	removed, err := ts.CleanTemp()
	if err != nil {
		t.Fatal(err)
	}
	want := sortedCopy([]string{"tmp/" + dead, "tmp/" + ours})
	if strings.Join(sortedCopy(removed), " ") != strings.Join(want, " ") {
		t.Errorf("CleanTemp removed %v, want %v", removed, want)
	}
	left := dirFiles(t, tmp)
	wantLeft := sortedCopy([]string{filepath.Base(live.Name()), alive, lockedName, notOurs})
	if strings.Join(left, " ") != strings.Join(wantLeft, " ") {
		t.Errorf("tmp/ holds %v, want %v", left, wantLeft)
	}

	// The live file can still be committed.
	if _, err := live.Write([]byte("full")); err != nil {
		t.Fatal(err)
	}
	if err := ts.Commit(live, &Snapshot{ID: newID(), Volume: "vg0/vm1", Time: baseTime, FileDigest: "00"}); err != nil {
		t.Fatal(err)
	}
	// Once the other writer is gone, its file goes too.
	lf.Close()
	removed, err = ts.CleanTemp()
	if err != nil || len(removed) != 1 || removed[0] != "tmp/"+lockedName {
		t.Errorf("CleanTemp after unlock = %v, %v", removed, err)
	}
	d, err := ts.CreateTemp("vg0/vm1")
	if err != nil {
		t.Fatal(err)
	}
	if err := ts.Discard(d); err != nil {
		t.Fatal(err)
	}
	if err := ts.Discard(d); err != nil {
		t.Errorf("second Discard: %v", err)
	}
	if _, err := os.Stat(d.Name()); !errors.Is(err, os.ErrNotExist) {
		t.Error("Discard left the file")
	}
}

func TestParseNames(t *testing.T) {
	id := "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0" // has letters, so upper-casing changes it
	for _, tc := range []struct {
		name string
		ok   bool
		seq  uint64
		gen  int
	}{
		{"00000001-" + id + ".tbk", true, 1, 0},
		{"123456789-" + id + ".3.tbk", true, 123456789, 3},
		{"00000000-" + id + ".tbk", false, 0, 0},
		{"00000001-" + id + ".0.tbk", false, 0, 0},
		{"00000001-" + strings.ToUpper(id) + ".tbk", false, 0, 0},
		{"1-" + id + ".tbk", false, 0, 0},
		{"00000001-" + id + ".tbk.tmp", false, 0, 0},
	} {
		seq, gotID, gen, ok := parseFileName(tc.name)
		if ok != tc.ok || (ok && (seq != tc.seq || gen != tc.gen || gotID != id)) {
			t.Errorf("parseFileName(%q) = %d %q %d %v", tc.name, seq, gotID, gen, ok)
		}
	}
	for name, ok := range map[string]bool{
		"tbk.12.0123456789ab.vg0%2Fvm1.tmp": true,
		"tbk.12.0123456789ab.a.b.tmp":       true,
		"tbk.012.0123456789ab.v.tmp":        false,
		"tbk.12.0123456789ab..tmp":          false,
		"tbk.12.xyz.v.tmp":                  false,
		"tbk.-1.0123456789ab.v.tmp":         false,
		"other.12.0123456789ab.v.tmp":       false,
	} {
		if _, got := parseTempName(name); got != ok {
			t.Errorf("parseTempName(%q) = %v, want %v", name, got, ok)
		}
	}
	if !bytes.Contains([]byte(fileName("a/b", 5, id, 2)), []byte("a%2Fb/00000005-")) {
		t.Error(fileName("a/b", 5, id, 2))
	}
}
