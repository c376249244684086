package replica_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/gob"
	"errors"
	"flag"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/replica"
	"github.com/thinback/thinback/cmd/internal/replica/replicatest"
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

// fileTarget is a replica in a regular file, its state kept in memory as
// the state file would keep it: the apply path of receive --to.
type fileTarget struct {
	path string
	st   restore.State
}

func (f *fileTarget) Holding(context.Context) (replica.Holding, error) {
	h := replica.Holding{Kind: replica.KindFile, Target: f.path}
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
		h.Partial = &replica.Partial{Snapshot: archive.Snapshot{ID: m.Snapshot}, Parent: m.Parent}
		return h, nil
	}
	h.Snapshot = st.Snapshot
	if st.Modified != "" {
		h.Modified = &replica.Change{Reason: st.Modified}
	}
	return h, nil
}

func (f *fileTarget) Rollback(context.Context) error {
	return errors.New("a file has no snapshot to roll back to")
}

func (f *fileTarget) Create(context.Context, int64) error {
	return errors.New("a file is created by the apply")
}

func (f *fileTarget) Apply(ctx context.Context, r io.Reader, _ replica.Transfer, overwrite bool) (replica.Applied, error) {
	t, err := restore.OpenTarget(f.path, restore.TargetOptions{})
	if err != nil {
		return replica.Applied{}, err
	}
	defer t.Close()
	st, err := t.Verify(f.st)
	if err != nil {
		return replica.Applied{}, err
	}
	prev := f.st
	save := func(s restore.State) error { f.st = s; return nil }
	res, err := restore.Apply(ctx, t, []restore.Input{{Name: "stream", R: r}}, restore.Options{
		Force: overwrite, State: st, Begin: save, Finish: save, Stopped: save,
		Revert: func() error { f.st = prev; return nil },
	})
	if err != nil {
		return replica.Applied{}, err
	}
	return replica.Applied{DataBytes: res.DataBytes, ZeroBytes: res.ZeroBytes}, nil
}

func (f *fileTarget) Commit(context.Context, replica.Transfer) ([]string, []string, error) {
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
func run(t *testing.T, src replica.Source, tgt replica.Target, o replica.Options, cut int64) (*replica.Result, error, error) {
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
		err := replica.Serve(ctx, conn{r1, w2}, tgt, replica.ServeOptions{Code: func(error) int { return 5 }})
		// The receiver's process ends: both its ends close.
		r1.CloseWithError(io.ErrClosedPipe)
		w2.Close()
		served <- err
	}()
	if o.Dest == "" {
		o.Dest = "replica"
	}
	res, err := replica.Send(ctx, conn{r2, sw}, src, o)
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
	src := replicatest.NewImageSource(t, 64*replicatest.Block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	for round := range 4 {
		src.Write(t, r, 1+r.Intn(8))
		res, err, serr := run(t, src, tgt, replica.Options{Keep: 1}, 0)
		if err != nil || serr != nil {
			t.Fatalf("round %d: %v; receiver: %v", round, err, serr)
		}
		want := replica.Incremental
		if round == 0 {
			want = replica.Full
		}
		if res.Kind != want {
			t.Errorf("round %d sent a %s, want %s", round, res.Kind, want)
		}
		last := src.Snaps[len(src.Snaps)-1]
		if res.SnapshotID != last.ID || tgt.st.Snapshot.ID != last.ID {
			t.Errorf("round %d: the replica holds %s (result %s), the newest snapshot is %s", round, tgt.st.Snapshot.ID, res.SnapshotID, last.ID)
		}
		if digest(t, tgt.path) != digest(t, src.Paths[last.ID]) {
			t.Fatalf("round %d: the replica differs from %s", round, last.Name)
		}
		// The snapshot the replica holds and one older one stay.
		if n := len(src.Snaps); n != min(round+1, 2) {
			t.Errorf("round %d: %d snapshots on the source, want %d", round, n, min(round+1, 2))
		}
		if res.WireSent < res.DeltaBytes || res.DeltaBytes == 0 {
			t.Errorf("round %d: %d bytes on the wire for a delta of %d", round, res.WireSent, res.DeltaBytes)
		}
	}
}

func TestReplicateModifiedRefused(t *testing.T) {
	r := seed(t)
	src := replicatest.NewImageSource(t, 32*replicatest.Block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	src.Write(t, r, 4)
	if _, err, serr := run(t, src, tgt, replica.Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	// Someone writes to the replica.
	f, err := os.OpenFile(tgt.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("written on the replica"), 3*replicatest.Block); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mtime := time.Now().Add(time.Hour) // the file's times are its fingerprint
	os.Chtimes(tgt.path, mtime, mtime)
	src.Write(t, r, 2)
	before := len(src.Snaps)
	_, err, _ = run(t, src, tgt, replica.Options{Dest: "h:/dev/vg1/lv"}, 0)
	var me *replica.ModifiedError
	if !errors.As(err, &me) || !errors.Is(err, restore.ErrModified) {
		t.Fatalf("replicate to a modified target: %v, want a replica.ModifiedError", err)
	}
	if want := "destination h:/dev/vg1/lv has been modified since most recent snapshot"; !bytes.Contains([]byte(err.Error()), []byte(want)) {
		t.Errorf("error %q does not say %q", err, want)
	}
	if len(src.Snaps) != before {
		t.Errorf("a refused run left %d snapshots on the source, want %d", len(src.Snaps), before)
	}
	res, err, serr := run(t, src, tgt, replica.Options{Rollback: true}, 0)
	if err != nil || serr != nil {
		t.Fatalf("--rollback: %v; receiver: %v", err, serr)
	}
	if res.Kind != replica.Full {
		t.Errorf("--rollback on a file sent a %s, want a full", res.Kind)
	}
	last := src.Snaps[len(src.Snaps)-1]
	if digest(t, tgt.path) != digest(t, src.Paths[last.ID]) {
		t.Fatal("after --rollback the replica differs from the source")
	}
}

func TestReplicateInterrupted(t *testing.T) {
	r := seed(t)
	src := replicatest.NewImageSource(t, 256*replicatest.Block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	src.Write(t, r, 6)
	if _, err, serr := run(t, src, tgt, replica.Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	src.Write(t, r, 40)
	// Cut the connection somewhere in the delta of the incremental,
	// after its first chunk reached the receiver.
	cut := int64(replica.ChunkSize + 4<<10 + r.Intn(1<<20))
	_, err, serr := run(t, src, tgt, replica.Options{}, cut)
	if err == nil {
		t.Fatalf("a transfer cut after %d bytes succeeded", cut)
	}
	t.Logf("cut after %d bytes: %v; receiver: %v", cut, err, serr)
	if tgt.st.InProgress == nil {
		t.Fatalf("after the cut the replica's state has no interrupted apply: %+v", tgt.st)
	}
	if len(src.Snaps) != 2 {
		t.Fatalf("after the cut the source has %d snapshots, want the base and the one being sent", len(src.Snaps))
	}
	sent := src.Snaps[1]
	src.Write(t, r, 3) // the next run sends the interrupted one, not a new one
	res, err, serr := run(t, src, tgt, replica.Options{}, 0)
	if err != nil || serr != nil {
		t.Fatalf("the run after the cut: %v; receiver: %v", err, serr)
	}
	if res.SnapshotID != sent.ID {
		t.Errorf("the run after the cut sent %s, want the interrupted %s again", res.Snapshot, sent.Name)
	}
	if digest(t, tgt.path) != digest(t, src.Paths[sent.ID]) {
		t.Fatal("after the cut and the next run the replica differs from the snapshot")
	}
	if len(src.Snaps) != 1 || src.Snaps[0].ID != sent.ID {
		t.Errorf("the source keeps %v, want only %s", src.Snaps, sent.Name)
	}
}

func TestServeRefuses(t *testing.T) {
	src := replicatest.NewImageSource(t, 16*replicatest.Block)
	tgt := &fileTarget{path: filepath.Join(t.TempDir(), "replica.img")}
	if _, err, serr := run(t, src, tgt, replica.Options{}, 0); err != nil || serr != nil {
		t.Fatalf("%v; receiver: %v", err, serr)
	}
	for _, c := range []struct {
		name string
		q    replica.Query
		tr   *replica.Transfer
		want error
	}{
		{"a newer protocol", replica.Query{Version: replica.Version + 1}, nil, replica.ErrProtocol},
		{"an incremental from another base", replica.Query{Version: replica.Version},
			&replica.Transfer{Mode: replica.Incremental, Snapshot: archive.Snapshot{ID: archive.NewID()}, Parent: archive.NewID()}, restore.ErrMismatch},
	} {
		t.Run(c.name, func(t *testing.T) {
			r1, w1 := io.Pipe()
			r2, w2 := io.Pipe()
			served := make(chan error, 1)
			go func() {
				served <- replica.Serve(context.Background(), conn{r1, w2}, tgt, replica.ServeOptions{Code: func(error) int { return 42 }})
				w2.Close()
			}()
			enc, dec := gob.NewEncoder(w1), gob.NewDecoder(r2)
			enc.Encode(c.q)
			var st replica.Status
			if err := dec.Decode(&st); err != nil {
				t.Fatal(err)
			}
			var f *replica.Failure
			if c.tr == nil {
				f = st.Err
			} else {
				enc.Encode(*c.tr)
				var rep replica.Reply
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

// TestRefuse: a receiver that cannot find its target answers the query
// with its error and exit code, which Send returns as a RemoteError.
func TestRefuse(t *testing.T) {
	r1, w1 := io.Pipe()
	r2, w2 := io.Pipe()
	go func() {
		replica.Refuse(conn{r1, w2}, errors.New("no such target"), replica.ServeOptions{Code: func(error) int { return 7 }})
		w2.Close()
		r1.Close()
	}()
	_, err := replica.Send(context.Background(), conn{r2, w1}, replicatest.NewImageSource(t, 4*replicatest.Block), replica.Options{Dest: "h:/dev/vg/lv", Host: "h"})
	var re *replica.RemoteError
	if !errors.As(err, &re) || re.Code != 7 || re.Host != "h" || !strings.Contains(err.Error(), "no such target") {
		t.Fatalf("Send to a refusing receiver: %v, want its error with code 7", err)
	}
}
