package replica

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/restore"
)

var seedFlag = flag.Int64("seed", 0, "seed of the random tests (default $THINBACK_SEED, else the time)")

// seed returns the random tests' seed, printed so that a failure can be
// run again with -seed or THINBACK_SEED.
func seed(t *testing.T) *rand.Rand {
	s := *seedFlag
	if s == 0 {
		if env := os.Getenv("THINBACK_SEED"); env != "" {
			v, err := strconv.ParseInt(env, 10, 64)
			if err != nil {
				t.Fatalf("THINBACK_SEED: %v", err)
			}
			s = v
		}
	}
	if s == 0 {
		s = time.Now().UnixNano()
	}
	t.Logf("seed %d (run again with -seed %d or THINBACK_SEED=%d)", s, s, s)
	return rand.New(rand.NewSource(s))
}

const block = 64 << 10

// imageSource is a volume kept as an image whose snapshots are copies of
// it: a real source of deltas (backup.OpenFileSend) without LVM.
type imageSource struct {
	dir, live string
	n         int
	snaps     []Local
	paths     map[archive.ID]string
	removed   []string
}

func newImageSource(t *testing.T, size int64) *imageSource {
	dir := t.TempDir()
	s := &imageSource{dir: dir, live: filepath.Join(dir, "live.img"), paths: map[archive.ID]string{}}
	if err := os.WriteFile(s.live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.live, size); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *imageSource) Snapshots(context.Context) ([]Local, error) {
	return append([]Local(nil), s.snaps...), nil
}

func (s *imageSource) Take(context.Context) (Local, error) {
	s.n++
	path := filepath.Join(s.dir, fmt.Sprintf("snap%d.img", s.n))
	b, err := os.ReadFile(s.live)
	if err != nil {
		return Local{}, err
	}
	if err := os.WriteFile(path, b, 0o400); err != nil {
		return Local{}, err
	}
	out, err := backup.OpenFileSend(backup.FileSendOptions{File: path, BlockSize: block, Volume: "vol", Progress: noProgress})
	if err != nil {
		return Local{}, err
	}
	out.Close()
	l := Local{ID: out.Header.Snapshot.ID, Name: filepath.Base(path), Time: out.Header.Snapshot.Time}
	s.snaps = append(s.snaps, l)
	s.paths[l.ID] = path
	return l, nil
}

func (s *imageSource) Open(_ context.Context, snap Local, base *Local, from int64) (*backup.Outgoing, error) {
	if from != 0 {
		return nil, errors.New("an image source sends no resumed delta")
	}
	o := backup.FileSendOptions{File: s.paths[snap.ID], BlockSize: block, Volume: "vol", Progress: noProgress}
	if base != nil {
		o.BaseFile = s.paths[base.ID]
	}
	return backup.OpenFileSend(o)
}

func (s *imageSource) Resumable() bool { return false }

func (s *imageSource) Remove(_ context.Context, l Local) error {
	if err := os.Remove(s.paths[l.ID]); err != nil {
		return err
	}
	for i, x := range s.snaps {
		if x.ID == l.ID {
			s.snaps = append(s.snaps[:i], s.snaps[i+1:]...)
			break
		}
	}
	s.removed = append(s.removed, l.Name)
	return nil
}

func (s *imageSource) write(t *testing.T, r *rand.Rand, n int) {
	f, err := os.OpenFile(s.live, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	for range n {
		p := make([]byte, 1+r.Intn(3*block))
		r.Read(p)
		if _, err := f.WriteAt(p, r.Int63n(fi.Size()-int64(len(p)))); err != nil {
			t.Fatal(err)
		}
	}
}

func noProgress(int64) backup.Progress { return backup.NoProgress{} }

// fileTarget is a replica in a regular file, its state kept in memory as
// the state file would keep it: the apply path of receive --to.
type fileTarget struct {
	path string
	st   restore.State
}

func (f *fileTarget) Holding(context.Context) (Holding, error) {
	h := Holding{Kind: KindFile, Target: f.path}
	t, err := restore.OpenTarget(f.path, restore.TargetOptions{})
	if err != nil {
		return h, err
	}
	defer t.Close()
	if created := t.Size() == 0; created {
		t.RemoveCreated()
		return h, nil
	}
	st, err := t.Verify(f.st)
	if err != nil {
		return h, err
	}
	h.Size = t.Size()
	if m := st.InProgress; m != nil {
		h.Partial = &Partial{Snapshot: archive.Snapshot{ID: m.Snapshot}, Parent: m.Parent}
		return h, nil
	}
	h.Snapshot = st.Snapshot
	if st.Modified != "" {
		h.Modified = &Change{Reason: st.Modified}
	}
	return h, nil
}

func (f *fileTarget) Rollback(context.Context) error {
	return errors.New("a file has no snapshot to roll back to")
}

func (f *fileTarget) Create(context.Context, int64) error {
	return errors.New("a file is created by the apply")
}

func (f *fileTarget) Apply(ctx context.Context, r io.Reader, _ Transfer, overwrite bool) (Applied, error) {
	t, err := restore.OpenTarget(f.path, restore.TargetOptions{})
	if err != nil {
		return Applied{}, err
	}
	defer t.Close()
	st, err := t.Verify(f.st)
	if err != nil {
		return Applied{}, err
	}
	prev := f.st
	save := func(s restore.State) error { f.st = s; return nil }
	res, err := restore.Apply(ctx, t, []restore.Input{{Name: "stream", R: r}}, restore.Options{
		Force: overwrite, State: st, Begin: save, Finish: save, Stopped: save,
		Revert: func() error { f.st = prev; return nil },
	})
	if err != nil {
		return Applied{}, err
	}
	return Applied{DataBytes: res.DataBytes, ZeroBytes: res.ZeroBytes}, nil
}

func (f *fileTarget) Commit(context.Context, Transfer) ([]string, []string, error) {
	return nil, nil, nil
}

// conn is one end of an in-process connection.
type conn struct {
	io.Reader
	io.Writer
}

// CloseWrite ends what the other end reads, as remote.Conn's does.
func (c conn) CloseWrite() error {
	if cw, ok := c.Writer.(*cutWriter); ok {
		return cw.w.(*io.PipeWriter).Close()
	}
	return c.Writer.(*io.PipeWriter).Close()
}

// cutWriter fails every write after limit bytes: a connection that
// dropped.
type cutWriter struct {
	w     io.Writer
	limit int64
}

var errCut = errors.New("connection cut")

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.limit {
		n, _ := c.w.Write(p[:c.limit])
		c.limit = 0
		return n, errCut
	}
	c.limit -= int64(len(p))
	return c.w.Write(p)
}

// run replicates src to tgt over an in-process connection, the sender's
// writes cut after cut bytes when cut > 0.
func run(t *testing.T, src Source, tgt Target, o Options, cut int64) (*Result, error, error) {
	t.Helper()
	ctx := context.Background()
	r1, w1 := io.Pipe() // sender → receiver
	r2, w2 := io.Pipe() // receiver → sender
	var sw io.Writer = w1
	if cut > 0 {
		sw = &cutWriter{w: w1, limit: cut}
	}
	served := make(chan error, 1)
	go func() {
		err := Serve(ctx, conn{r1, w2}, tgt, ServeOptions{Code: func(error) int { return 5 }})
		// The receiver's process ends: both its ends close.
		r1.CloseWithError(io.ErrClosedPipe)
		w2.Close()
		served <- err
	}()
	if o.Dest == "" {
		o.Dest = "replica"
	}
	res, err := Send(ctx, conn{r2, sw}, src, o)
	w1.CloseWithError(io.EOF) // the sender's process ends
	r2.Close()
	return res, err, <-served
}

func digest(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

func TestReplicateRounds(t *testing.T) {
	r := seed(t)
	src := newImageSource(t, 64*block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	for round := range 4 {
		src.write(t, r, 1+r.Intn(8))
		res, err, serr := run(t, src, tgt, Options{Keep: 1}, 0)
		if err != nil || serr != nil {
			t.Fatalf("round %d: %v; receiver: %v", round, err, serr)
		}
		want := Incremental
		if round == 0 {
			want = Full
		}
		if res.Kind != want {
			t.Errorf("round %d sent a %s, want %s", round, res.Kind, want)
		}
		last := src.snaps[len(src.snaps)-1]
		if res.SnapshotID != last.ID || tgt.st.Snapshot.ID != last.ID {
			t.Errorf("round %d: the replica holds %s (result %s), the newest snapshot is %s", round, tgt.st.Snapshot.ID, res.SnapshotID, last.ID)
		}
		if digest(t, tgt.path) != digest(t, src.paths[last.ID]) {
			t.Fatalf("round %d: the replica differs from %s", round, last.Name)
		}
		// The snapshot the replica holds and one older one stay.
		if n := len(src.snaps); n != min(round+1, 2) {
			t.Errorf("round %d: %d snapshots on the source, want %d", round, n, min(round+1, 2))
		}
		if res.WireSent < res.DeltaBytes || res.DeltaBytes == 0 {
			t.Errorf("round %d: %d bytes on the wire for a delta of %d", round, res.WireSent, res.DeltaBytes)
		}
	}
}

func TestReplicateModifiedRefused(t *testing.T) {
	r := seed(t)
	src := newImageSource(t, 32*block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	src.write(t, r, 4)
	if _, err, serr := run(t, src, tgt, Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	// Someone writes to the replica.
	f, err := os.OpenFile(tgt.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written on the replica"), 3*block); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mtime := time.Now().Add(time.Hour) // the file's times are its fingerprint
	os.Chtimes(tgt.path, mtime, mtime)
	src.write(t, r, 2)
	before := len(src.snaps)
	_, err, _ = run(t, src, tgt, Options{Dest: "h:/dev/vg1/lv"}, 0)
	var me *ModifiedError
	if !errors.As(err, &me) || !errors.Is(err, restore.ErrModified) {
		t.Fatalf("replicate to a modified target: %v, want a ModifiedError", err)
	}
	if want := "destination h:/dev/vg1/lv has been modified since most recent snapshot"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if len(src.snaps) != before {
		t.Errorf("a refused run left %d snapshots on the source, want %d", len(src.snaps), before)
	}
	res, err, serr := run(t, src, tgt, Options{Rollback: true}, 0)
	if err != nil || serr != nil {
		t.Fatalf("--rollback: %v; receiver: %v", err, serr)
	}
	if res.Kind != Full {
		t.Errorf("--rollback on a file sent a %s, want a full", res.Kind)
	}
	last := src.snaps[len(src.snaps)-1]
	if digest(t, tgt.path) != digest(t, src.paths[last.ID]) {
		t.Fatal("after --rollback the replica differs from the source")
	}
}

func TestReplicateInterrupted(t *testing.T) {
	r := seed(t)
	src := newImageSource(t, 256*block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	src.write(t, r, 6)
	if _, err, serr := run(t, src, tgt, Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	src.write(t, r, 40)
	// Cut the connection somewhere in the delta of the incremental,
	// after its first chunk reached the receiver.
	cut := int64(ChunkSize + 4<<10 + r.Intn(1<<20))
	_, err, serr := run(t, src, tgt, Options{}, cut)
	if err == nil {
		t.Fatalf("a transfer cut after %d bytes succeeded", cut)
	}
	t.Logf("cut after %d bytes: %v; receiver: %v", cut, err, serr)
	if tgt.st.InProgress == nil {
		t.Fatalf("after the cut the replica's state has no interrupted apply: %+v", tgt.st)
	}
	if len(src.snaps) != 2 {
		t.Fatalf("after the cut the source has %d snapshots, want the base and the one being sent", len(src.snaps))
	}
	sent := src.snaps[1]
	src.write(t, r, 3) // the next run sends the interrupted one, not a new one
	res, err, serr := run(t, src, tgt, Options{}, 0)
	if err != nil || serr != nil {
		t.Fatalf("the run after the cut: %v; receiver: %v", err, serr)
	}
	if res.SnapshotID != sent.ID {
		t.Errorf("the run after the cut sent %s, want the interrupted %s again", res.Snapshot, sent.Name)
	}
	if digest(t, tgt.path) != digest(t, src.paths[sent.ID]) {
		t.Fatal("after the cut and the next run the replica differs from the snapshot")
	}
	if len(src.snaps) != 1 || src.snaps[0].ID != sent.ID {
		t.Errorf("the source keeps %v, want only %s", src.snaps, sent.Name)
	}
}

func TestServeRefuses(t *testing.T) {
	src := newImageSource(t, 16*block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	if _, err, serr := run(t, src, tgt, Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	for _, c := range []struct {
		name string
		q    Query
		tr   *Transfer
		want error
	}{
		{"a newer protocol", Query{Version: Version + 1}, nil, ErrProtocol},
		{"an incremental from another base", Query{Version: Version},
			&Transfer{Mode: Incremental, Snapshot: archive.Snapshot{ID: archive.NewID()}, Parent: archive.NewID()}, restore.ErrMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			r1, w1 := io.Pipe()
			r2, w2 := io.Pipe()
			served := make(chan error, 1)
			go func() {
				served <- Serve(context.Background(), conn{r1, w2}, tgt, ServeOptions{Code: func(error) int { return 42 }})
				w2.Close()
			}()
			enc, dec := gob.NewEncoder(w1), gob.NewDecoder(r2)
			enc.Encode(c.q)
			var st Status
			if err := dec.Decode(&st); err != nil {
				t.Fatal(err)
			}
			var f *Failure
			if c.tr == nil {
				f = st.Err
			} else {
				enc.Encode(*c.tr)
				var rep Reply
				if err := dec.Decode(&rep); err != nil {
					t.Fatal(err)
				}
				f = rep.Err
			}
			if f == nil || f.Code != 42 {
				t.Fatalf("the receiver answered %+v, want a failure with its exit code", f)
			}
			if err := <-served; !errors.Is(err, c.want) {
				t.Errorf("Serve: %v, want %v", err, c.want)
			}
			w1.Close()
		})
	}
}
