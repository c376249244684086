package restore

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
)

// cutStream is a stream (not seekable) of a file's first n bytes: a
// transfer that stopped there.
type cutStream struct{ r io.Reader }

func (c cutStream) Read(p []byte) (int, error) { return c.r.Read(p) }

func openCut(t *testing.T, path string, n int64) io.Reader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return cutStream{io.LimitReader(f, n)}
}

// applyStream applies r as a stream to target with the state in st,
// recording checkpoints there too.
func (st stateStore) applyStream(t *testing.T, target string, r io.Reader, opts Options) (*Result, error) {
	t.Helper()
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	id, err := tg.Identity()
	if err != nil {
		t.Fatal(err)
	}
	opts.State = st[id.Key]
	save := func(s State) error { st[id.Key] = s; return nil }
	opts.Begin, opts.Finish, opts.Stopped = save, save, save
	if opts.Checkpoint != nil {
		opts.Checkpoint = save
	}
	opts.Revert = func() error { delete(st, id.Key); return nil }
	return Apply(context.Background(), tg, []Input{{Name: "-", R: r}}, opts)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestResumeStream cuts a stream at a random byte, with the apply's
// progress recorded every 64 KiB, then applies the resumed file from the
// durable prefix the state says: the target holds the snapshot, and the
// snapback file, continued by the second run, undoes both.
func TestResumeStream(t *testing.T) {
	for _, incr := range []bool{false, true} {
		for _, key := range []*archive.Key{nil, testKeyRestore(t)} {
			w := newWorld(t)
			w.key = key
			base := w.image(w.random(2 << 20))
			next := w.image(w.mutate(base.data, 200))
			target := filepath.Join(w.dir, "target")
			st := stateStore{}
			var before []byte
			var parent *image
			if incr {
				if _, err := st.apply(t, target, []string{w.delta(base, nil)}, Options{Key: key}); err != nil {
					t.Fatal(err)
				}
				before, parent = base.data, base
			}
			file := w.delta(next, parent)
			size := fileSize(t, file)
			cut := size/3 + w.r.Int63n(size/2)
			t.Logf("incremental %v, encrypted %v: the stream of %d bytes cut after %d", incr, key != nil, size, cut)

			sbPath := filepath.Join(w.dir, "undo.tbk")
			opts := Options{Key: key, Checkpoint: func(State) error { return nil }, CheckpointBytes: 64 << 10, Workers: 2}
			opts.Snapback = newSnapback(t, sbPath)
			_, err := st.applyStream(t, target, openCut(t, file, cut), opts)
			if !errors.Is(err, archive.ErrTruncated) {
				t.Fatalf("the cut stream: %v, want ErrTruncated", err)
			}
			tg, _ := OpenTarget(target, TargetOptions{NoCreate: true})
			id, _ := tg.Identity()
			tg.Close()
			m := st[id.Key].InProgress
			if m == nil || m.Done <= 0 || m.Done%w.bs != 0 || m.Size != int64(len(next.data)) {
				t.Fatalf("after the cut the state is %+v, want a mark with a durable prefix", m)
			}

			// The rest, from the durable prefix, with the snapback file
			// continued.
			w.resumeFrom = m.Done
			rest := w.delta(next, parent)
			w.resumeFrom = 0
			if got := fileSize(t, rest); got >= size {
				t.Fatalf("the resumed file is %d bytes, the whole %d", got, size)
			}
			sb, err := os.OpenFile(sbPath, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer sb.Close()
			rf, _ := os.Open(rest)
			defer rf.Close()
			opts = Options{Key: key, Snapback: sb, ResumeSnapback: true, Checkpoint: func(State) error { return nil }, CheckpointBytes: 64 << 10}
			if _, err := st.applyStream(t, target, cutStream{rf}, opts); err != nil {
				t.Fatalf("the resumed stream: %v", err)
			}
			mustEqual(t, target, next.data)
			if s := st[id.Key]; s.InProgress != nil || s.Snapshot.ID != next.snap.ID {
				t.Fatalf("after the resumed apply the state is %+v", s)
			}

			// Undo: the snapback file covers both runs.
			if _, err := st.apply(t, target, []string{sbPath}, Options{Key: key}); err != nil {
				t.Fatalf("undo: %v", err)
			}
			if incr {
				mustEqual(t, target, before)
			} else if err := os.Remove(target); err != nil { // was created: the undo makes it all zeroes
				t.Fatal(err)
			}
		}
	}
}

func testKeyRestore(t *testing.T) *archive.Key {
	master := make([]byte, archive.MasterKeySize)
	for i := range master {
		master[i] = byte(i * 7)
	}
	k, err := archive.NewKey(master)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestResumeRefused: a resumed file is applied only to the target of the
// interrupted transfer it continues, with at least its offset durable,
// and never with other files.
func TestResumeRefused(t *testing.T) {
	w := newWorld(t)
	base := w.image(w.random(1 << 20))
	other := w.image(w.random(1 << 20))
	w.resumeFrom = 256 << 10
	rest := w.delta(base, nil)
	w.resumeFrom = 0
	full := w.delta(base, nil)
	target := filepath.Join(w.dir, "target")
	if err := os.WriteFile(target, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, _ := OpenTarget(target, TargetOptions{NoCreate: true})
	id, _ := tg.Identity()
	tg.Close()
	for _, tc := range []struct {
		name string
		mark *Mark
		want string
	}{
		{"no interrupted transfer", nil, "holds no interrupted transfer"},
		{"another snapshot", &Mark{Snapshot: other.snap.ID, Done: 1 << 20, Size: 1 << 20}, "the transfer interrupted on"},
		{"too little durable", &Mark{Snapshot: base.snap.ID, Done: 128 << 10, Size: 1 << 20}, "made only bytes below 131072 durable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := stateStore{}
			if tc.mark != nil {
				st[id.Key] = State{InProgress: tc.mark}
			}
			_, err := st.apply(t, target, []string{rest}, Options{Force: true})
			if !errors.Is(err, ErrResume) {
				t.Fatalf("got %v, want ErrResume", err)
			}
			if !contains(err.Error(), tc.want) {
				t.Fatalf("got %q, want it to say %q", err, tc.want)
			}
		})
	}
	st := stateStore{id.Key: State{InProgress: &Mark{Snapshot: base.snap.ID, Done: 1 << 20}}}
	if _, err := st.apply(t, target, []string{full, rest}, Options{}); !errors.Is(err, ErrNotChain) {
		t.Fatalf("a resumed file after another: %v, want ErrNotChain", err)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
