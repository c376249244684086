package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// steps is the order in which a run did things, as the fake source, the
// store and the hooks tell it.
type steps struct {
	mu   sync.Mutex
	list []string
}

func (s *steps) add(step string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.list = append(s.list, step)
}

func (s *steps) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// Write records what a hook printed, one step per line.
func (s *steps) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		s.add(line)
	}
	return len(p), nil
}

// before checks that step a happened, and before b when b happened.
func before(t *testing.T, got []string, a, b string) {
	t.Helper()
	i, j := slices.Index(got, a), slices.Index(got, b)
	if i < 0 || (j >= 0 && j < i) {
		t.Errorf("%s should come before %s: %q", a, b, got)
	}
}

// recordingStore is a real directory store that tells the steps when a
// run locks it, reads its records and commits to it. commitErr, when set,
// makes a commit fail after the file was written, as a full disk would at
// the last moment.
type recordingStore struct {
	*catalog.Store
	steps     *steps
	commitErr error
}

func (r *recordingStore) LockVolume(volume string) (func() error, error) {
	unlock, err := r.Store.LockVolume(volume)
	if err != nil {
		return nil, err
	}
	r.steps.add("lock")
	return func() error { r.steps.add("unlock"); return unlock() }, nil
}

func (r *recordingStore) View(fn func(*catalog.Tx) error) error {
	r.steps.add("read records")
	return r.Store.View(fn)
}

func (r *recordingStore) write(write func(io.Writer) (catalog.Snapshot, error), commit func() (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	if r.commitErr != nil {
		if _, err := write(io.Discard); err != nil {
			return catalog.Snapshot{}, err
		}
		return catalog.Snapshot{}, r.commitErr
	}
	rec, err := commit()
	if err == nil {
		r.steps.add("commit")
	}
	return rec, err
}

func (r *recordingStore) WriteDelta(volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return r.write(write, func() (catalog.Snapshot, error) { return r.Store.WriteDelta(volume, id, write) })
}

func (r *recordingStore) WriteVolumeDelta(vol catalog.Volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return r.write(write, func() (catalog.Snapshot, error) { return r.Store.WriteVolumeDelta(vol, id, write) })
}

func (r *recordingStore) SetRetention(volume string, ret catalog.Retention) error {
	r.steps.add("set retention")
	return r.Store.SetRetention(volume, ret)
}

func newStore(t *testing.T, st *steps) *recordingStore {
	t.Helper()
	s, err := catalog.OpenStore(filepath.Join(t.TempDir(), "store"))
	if err != nil {
		t.Fatal(err)
	}
	return &recordingStore{Store: s, steps: st}
}

// memSource is one extent of data; a failing one fails its read.
type memSource struct {
	data []byte
	done bool
	err  error
}

func (m *memSource) Next() (archive.Extent, error) {
	if m.err != nil {
		return archive.Extent{}, m.err
	}
	if m.done {
		return archive.Extent{}, io.EOF
	}
	m.done = true
	return archive.Extent{Offset: 0, Length: int64(len(m.data)), Kind: archive.KindData}, nil
}

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.data).ReadAt(p, off)
}

var errFake = errors.New("fake failure")

// fakeSource is a source whose every step is recorded; failAt names the
// step that fails.
type fakeSource struct {
	steps  *steps
	failAt string
	data   []byte
	v      catalog.Volume
	taken  bool
	live   bool // read as it is, as an image is
}

func (f *fakeSource) step(name string) error {
	f.steps.add(name)
	if f.failAt == name {
		return fmt.Errorf("%s: %w", name, errFake)
	}
	return nil
}

func (f *fakeSource) Identify() catalog.Volume {
	f.steps.add("identify")
	return catalog.Volume{Name: "vg/fake", UUID: "fake-uuid", Kind: catalog.KindLVMThin, Source: "vg/fake", BlockSize: 4096}
}

func (f *fakeSource) CheckVolume(v catalog.Volume) ([]string, error) {
	return nil, f.step("check volume")
}

func (f *fakeSource) ChooseBase(_ context.Context, s catalog.Repository, _ *archive.Key, v catalog.Volume) ([]string, error) {
	f.v = v
	return []string{"a note of the base"}, f.step("choose base")
}

func (f *fakeSource) NextSnapshot() string { return "vg/fake.thinback.1" }
func (f *fakeSource) Origin() string       { return "vg/fake" }
func (f *fakeSource) Live() bool           { return f.live }

func (f *fakeSource) TakeSnapshot(context.Context) error {
	if err := f.step("snapshot"); err != nil {
		return err
	}
	f.taken = true
	return nil
}

func (f *fakeSource) Discover(_ context.Context, res *Result, newProgress func(int64) Progress) (*Delta, error) {
	if err := f.step("discover"); err != nil {
		return nil, err
	}
	src := &memSource{data: f.data}
	if f.failAt == "read" {
		src.err = fmt.Errorf("read: %w", errFake)
	}
	now := time.Now().UTC()
	h := &archive.Header{
		BlockSize: 4096, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: f.v.Name, VolumeUUID: f.v.UUID, VolumeSize: int64(len(f.data)),
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "vg/fake.thinback.1", Time: now},
		Tool:     "thinback test",
	}
	return &Delta{
		Header: h, Source: src, Progress: newProgress(int64(len(f.data))), CountWrites: true,
		Record: catalog.Snapshot{LVName: "fake.thinback.1", LVUUID: "snap-uuid"},
		Close:  func() error { f.steps.add("close discovery"); return nil }, Name: "vg/fake.thinback.1",
		Stored: func(rec catalog.Snapshot, res *Result) { res.BytesRead = rec.DataBytes },
	}, nil
}

func (f *fakeSource) RemoveSnapshot(_ context.Context, err error) error {
	f.steps.add("remove snapshot")
	return err
}

func (f *fakeSource) Rotate(context.Context) []string {
	f.steps.add("rotate")
	return []string{"an old snapshot stays"}
}

func (f *fakeSource) Release() { f.steps.add("release") }

// options are a run's options that record the hooks, the prune and the
// report.
func options(st *steps) Options {
	return Options{
		Pre: "echo pre hook", Post: "echo post hook", HookOutput: st,
		Retention: catalog.Retention{KeepLast: 5},
		Prune: func(context.Context, string, catalog.Retention) ([]uint64, error) {
			st.add("prune")
			return nil, nil
		},
		Report: func(*Result) error { st.add("report"); return nil },
		Warn:   func(msg string) { st.add("warning: " + msg) },
	}
}

// A backup does its steps in the lifecycle's order: the volume is locked
// before its records are read and unlocked last, the snapshot is taken
// between the hooks, older snapshots are rotated only once the new one is
// committed, and retention comes last.
func TestRunOrder(t *testing.T) {
	st := &steps{}
	s := newStore(t, st)
	src := &fakeSource{steps: st, data: bytes.Repeat([]byte("fake volume\n"), 4096)}
	res, err := Run(context.Background(), s, src, options(st))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"identify", "lock", "read records", "check volume", "choose base",
		"pre hook", "snapshot", "post hook", "discover", "commit", "close discovery",
		"rotate", "release", "set retention", "prune", "report", "unlock",
	}
	if got := st.get(); !slices.Equal(got, want) {
		t.Errorf("steps\n got %q\nwant %q", got, want)
	}
	if res.Kind != "full" || res.Seq != 1 || res.Volume != "vg/fake" || res.BytesRead != int64(len(src.data)) {
		t.Errorf("result %+v", res)
	}
	if !slices.Equal(res.Notes, []string{"a note of the base"}) || !slices.Equal(res.Warnings, []string{"an old snapshot stays"}) {
		t.Errorf("notes %q, warnings %q", res.Notes, res.Warnings)
	}
	// The record has the snapshot's LVM fields, and the volume its record.
	err = s.View(func(tx *catalog.Tx) error {
		rec, err := tx.Latest("vg/fake")
		if err != nil {
			return err
		}
		if rec.LVUUID != "snap-uuid" || rec.LVName != "fake.thinback.1" {
			t.Errorf("record %+v", rec)
		}
		v, err := tx.Volume("vg/fake")
		if v.UUID != "fake-uuid" || v.Retention.KeepLast != 5 {
			t.Errorf("volume %+v", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// The failures of each step: what the run returns, which steps it did,
// and that a snapshot taken is removed unless it was recorded.
func TestRunFailures(t *testing.T) {
	for _, c := range []struct {
		name      string
		failAt    string
		pre, post string
		commitErr bool
		// removed says the snapshot is removed; stored that the store
		// holds the backup afterwards.
		removed, stored bool
		errHas          string
	}{
		{name: "volume check", failAt: "check volume", errHas: "check volume"},
		{name: "base", failAt: "choose base", errHas: "choose base"},
		{name: "pre hook", pre: "exit 3", errHas: `--pre command "exit 3" failed`},
		{name: "snapshot", failAt: "snapshot", errHas: "snapshot: fake failure"},
		{name: "post hook", post: "exit 4", removed: true, errHas: `--post command "exit 4" failed: exit status 4 (the snapshot vg/fake.thinback.1 was taken)`},
		{name: "discovery", failAt: "discover", removed: true, errHas: "discover: fake failure"},
		{name: "store", failAt: "read", removed: true, errHas: "read: fake failure"},
		{name: "commit", commitErr: true, removed: true, errHas: "commit refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := &steps{}
			s := newStore(t, st)
			if c.commitErr {
				s.commitErr = errors.New("commit refused")
			}
			src := &fakeSource{steps: st, failAt: c.failAt, data: bytes.Repeat([]byte("x"), 8192)}
			o := options(st)
			if c.pre != "" {
				o.Pre = c.pre
			}
			if c.post != "" {
				o.Post = c.post
			}
			res, err := Run(context.Background(), s, src, o)
			if err == nil || res != nil || !strings.Contains(err.Error(), c.errHas) {
				t.Fatalf("Run = %+v, %v; want an error with %q", res, err, c.errHas)
			}
			got := st.get()
			if slices.Contains(got, "remove snapshot") != c.removed {
				t.Errorf("snapshot removed: %v, want %v: %q", !c.removed, c.removed, got)
			}
			for _, never := range []string{"rotate", "set retention", "prune", "report"} {
				if slices.Contains(got, never) {
					t.Errorf("a failed backup did %q: %q", never, got)
				}
			}
			if got[len(got)-1] != "unlock" {
				t.Errorf("the volume is not unlocked last: %q", got)
			}
			if c.pre != "" && slices.Contains(got, "snapshot") {
				t.Errorf("a snapshot was taken after the --pre command failed: %q", got)
			}
			if slices.Contains(got, "snapshot") && c.pre == "" && !slices.Contains(got, "post hook") && c.post == "" {
				t.Errorf("the --post command did not run after the snapshot: %q", got)
			}
			// Nothing of the failed backup is in the store.
			err = s.View(func(tx *catalog.Tx) error {
				_, err := tx.Volume("vg/fake")
				return err
			})
			if !errors.Is(err, catalog.ErrNotFound) {
				t.Errorf("the store holds the volume after a failed first backup: %v", err)
			}
		})
	}
}

// A source read as it is (an image) runs its --post command once, after
// the read, whether the read, the store or the commit failed, and after
// the failure: the command undoes what --pre did (thaws a filesystem).
func TestRunLiveFailures(t *testing.T) {
	for _, failAt := range []string{"", "snapshot", "discover", "read", "commit"} {
		t.Run("fail at "+failAt, func(t *testing.T) {
			st := &steps{}
			s := newStore(t, st)
			if failAt == "commit" {
				s.commitErr = errFake
			}
			src := &fakeSource{steps: st, failAt: failAt, live: true, data: bytes.Repeat([]byte("l"), 8192)}
			_, err := Run(context.Background(), s, src, options(st))
			if (err != nil) != (failAt != "") {
				t.Fatalf("Run: %v", err)
			}
			got := st.get()
			if n := slices.Index(got, "post hook"); n < 0 || slices.Index(got[n+1:], "post hook") >= 0 {
				t.Fatalf("the --post command did not run exactly once: %q", got)
			}
			before(t, got, "pre hook", "post hook")
			switch failAt {
			case "", "read", "commit":
				before(t, got, "discover", "post hook")
			default:
				before(t, got, failAt, "post hook")
			}
		})
	}
}

// A snapshot recorded in the store is not removed when what follows
// fails: a failed prune is reported with the result, and the snapshot
// stays the base of the next backup.
func TestRunPruneFails(t *testing.T) {
	st := &steps{}
	s := newStore(t, st)
	src := &fakeSource{steps: st, data: bytes.Repeat([]byte("y"), 4096)}
	o := options(st)
	o.Prune = func(context.Context, string, catalog.Retention) ([]uint64, error) {
		st.add("prune")
		return []uint64{7}, errFake
	}
	res, err := Run(context.Background(), s, src, o)
	if !errors.Is(err, errFake) || res == nil || !strings.Contains(err.Error(), "the backup is stored, but pruning failed") {
		t.Fatalf("Run = %+v, %v; want the result and the prune's error", res, err)
	}
	if !slices.Equal(res.Pruned, []string{"#7"}) {
		t.Errorf("pruned %q", res.Pruned)
	}
	got := st.get()
	if slices.Contains(got, "remove snapshot") {
		t.Errorf("the recorded snapshot was removed: %q", got)
	}
	before(t, got, "commit", "rotate")
	before(t, got, "prune", "report")
}

// A second run on a locked volume fails before it reads any record.
func TestRunLocked(t *testing.T) {
	st := &steps{}
	s := newStore(t, st)
	unlock, err := s.Store.LockVolume("vg/fake")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	src := &fakeSource{steps: st, data: []byte("z")}
	_, err = Run(context.Background(), s, src, options(st))
	if !errors.Is(err, catalog.ErrLocked) || !strings.Contains(err.Error(), "is a backup of vg/fake still running?") {
		t.Fatalf("Run on a locked volume: %v", err)
	}
	if got := st.get(); !slices.Equal(got, []string{"identify"}) {
		t.Errorf("steps of a locked run: %q", got)
	}
}

// An image is backed up into a real store, changed and backed up again
// (an incremental of the changed blocks, the --post command after it was
// read), and both points restore byte for byte. With a key, both files
// are encrypted under it, the incremental bound to the full, and they
// restore under the key.
func TestFileRoundTrip(t *testing.T) {
	key, err := archive.NewKey(bytes.Repeat([]byte{3}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("in the clear", func(t *testing.T) { fileRoundTrip(t, nil) })
	t.Run("encrypted", func(t *testing.T) { fileRoundTrip(t, key) })
}

func fileRoundTrip(t *testing.T, key *archive.Key) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	state1 := bytes.Repeat([]byte("the first state of the image\n"), 1<<20/29+1)[:1<<20]
	if err := os.WriteFile(img, state1, 0o600); err != nil {
		t.Fatal(err)
	}
	st := &steps{}
	s := newStore(t, st)
	backup := func() *Result {
		t.Helper()
		src, err := OpenFile(img, 64<<10, "thinback test")
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		o := Options{Pre: "echo pre hook", Post: "echo post hook", HookOutput: st, Key: key}
		res, err := Run(context.Background(), s, src, o)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	r1 := backup()
	if r1.Kind != "full" || r1.Seq != 1 || r1.Volume != "disk.img" {
		t.Fatalf("first backup %+v", r1)
	}
	state2 := slices.Clone(state1)
	copy(state2[300<<10:], bytes.Repeat([]byte("changed"), 1000))
	if err := os.WriteFile(img, state2, 0o600); err != nil {
		t.Fatal(err)
	}
	st.list = nil
	r2 := backup()
	if r2.Kind != "incremental" || r2.Parent != "#1" || r2.Seq != 2 || r2.DataBytes != 64<<10 || r2.BytesRead != 1<<20 {
		t.Fatalf("second backup %+v; want an incremental of one 64 KiB block", r2)
	}
	// An image has no snapshot: the --post command runs once it is read.
	before(t, st.get(), "commit", "post hook")

	for i, want := range [][]byte{state1, state2} {
		var chain []catalog.Snapshot
		if err := s.View(func(tx *catalog.Tx) error {
			snaps, err := tx.Snapshots("disk.img")
			chain = snaps[:i+1]
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var inputs []restore.Input
		for _, rec := range chain {
			f, err := s.OpenDelta(rec.File)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if h, err := archive.NewReader(f).Header(); err != nil || h.IsEncrypted() != (key != nil) {
				t.Fatalf("%s: encrypted %v (%v) with key %v", rec.File, h != nil && h.IsEncrypted(), err, key != nil)
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, restore.Input{Name: rec.File, R: f})
		}
		target := filepath.Join(dir, fmt.Sprintf("restored%d.img", i+1))
		tg, err := restore.OpenTarget(target, restore.TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = restore.Apply(context.Background(), tg, inputs, restore.Options{Key: key})
		if cerr := tg.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, want) {
			t.Errorf("point #%d does not restore (%v)", i+1, err)
		}
	}
}
