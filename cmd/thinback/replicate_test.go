package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/cmd/internal/replica"
	"github.com/thinback/thinback/cmd/internal/replica/replicatest"
	"github.com/thinback/thinback/restore"
)

// replicateOverSSH runs replicate's sender against the agent started over
// the real sshd of h, replicating src to target on that "host"; kill,
// when not 0, kills the connection once that many bytes were written to
// it.
func replicateOverSSH(t *testing.T, h sendToHost, src replica.Source, target string, o replica.Options, kill int64, agentArgs ...string) (*replica.Result, error) {
	t.Helper()
	ctx := context.Background()
	d, err := remote.ParseDest(h.s.Dest(target))
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	conn, err := remote.Dial(ctx, d, remote.Options{Rsh: h.s.RshNoPort, RemoteThinback: h.thinback, Stderr: &stderr},
		"replicate", append([]string{d.Path}, agentArgs...)...)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	o.Dest, o.Host = d.String(), d.Host
	var rw io.ReadWriter = conn
	if kill > 0 {
		rw = &connKiller{Conn: conn, left: kill}
	}
	res, err := replica.Send(ctx, rw, src, o)
	if cerr := conn.Close(); err == nil && cerr != nil {
		err = cerr
	}
	t.Logf("agent's stderr: %s", stderr.String())
	return res, err
}

// connKiller kills its connection's ssh once left bytes were written to it,
// as a dropped connection does.
type connKiller struct {
	*remote.Conn
	left int64
}

func (k *connKiller) Write(p []byte) (int, error) {
	if int64(len(p)) >= k.left {
		n, _ := k.Conn.Write(p[:k.left])
		k.left = 0
		k.Conn.Kill()
		return n, errors.New("killed the connection")
	}
	k.left -= int64(len(p))
	return k.Conn.Write(p)
}

func replicateSeed(t *testing.T) *rand.Rand {
	seed := time.Now().UnixNano()
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// TestReplicateAgent replicates an image in seeded rounds to a file on
// the other end of a real ssh connection, through thinback agent
// replicate and its state file: each round leaves the replica equal to
// the snapshot sent; a replica written to is refused with exit code 5
// and overwritten with --rollback; a target the receiver cannot take
// comes back with the receiver's exit code.
func TestReplicateAgent(t *testing.T) {
	r := replicateSeed(t)
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	src := replicatest.NewImageSource(t, 64*replicatest.Block)
	target := filepath.Join(dir, "replica.img")
	for round := range 3 {
		src.Write(t, r, 1+r.Intn(6))
		res, err := replicateOverSSH(t, h, src, target, replica.Options{Keep: 1}, 0)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		last := src.Snaps[len(src.Snaps)-1]
		if sumFile(t, target) != sumFile(t, src.Paths[last.ID]) {
			t.Fatalf("round %d: the replica differs from %s", round, last.Name)
		}
		if want := map[bool]replica.Mode{true: replica.Full, false: replica.Incremental}[round == 0]; res.Kind != want {
			t.Errorf("round %d sent a %s, want %s", round, res.Kind, want)
		}
		if res.TargetKind != replica.KindFile || res.WireSent < res.DeltaBytes {
			t.Errorf("round %d: target %s, %d bytes on the wire for a delta of %d", round, res.TargetKind, res.WireSent, res.DeltaBytes)
		}
	}

	// Someone writes to the replica.
	f, err := os.OpenFile(target, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("written on the replica"), 5*replicatest.Block)
	f.Close()
	src.Write(t, r, 2)
	_, err = replicateOverSSH(t, h, src, target, replica.Options{}, 0)
	if !errors.Is(err, restore.ErrModified) || exitCode(err) != exitChain {
		t.Fatalf("replicate to a modified replica: %v (exit %d), want exit %d", err, exitCode(err), exitChain)
	}
	if !strings.Contains(err.Error(), "has been modified since most recent snapshot") {
		t.Errorf("the refusal does not say it in ZFS's words: %v", err)
	}
	res, err := replicateOverSSH(t, h, src, target, replica.Options{Rollback: true}, 0)
	if err != nil {
		t.Fatalf("--rollback: %v", err)
	}
	if last := src.Snaps[len(src.Snaps)-1]; res.Kind != replica.Full || sumFile(t, target) != sumFile(t, src.Paths[last.ID]) {
		t.Fatalf("--rollback sent a %s and the replica is not %s", res.Kind, last.Name)
	}

	// A directory is no target: the receiver says so, with its code.
	_, err = replicateOverSSH(t, h, src, dir, replica.Options{}, 0)
	var re *replica.RemoteError
	if !errors.As(err, &re) || re.Code != exitTarget || re.Host != "127.0.0.1" {
		t.Fatalf("replicate to a directory: %v, want the receiver's exit code %d", err, exitTarget)
	}
}

// TestReplicateAgentResume kills the ssh connection at a seeded point of
// a transfer; the next run continues it from the byte the receiver had
// made durable, sending less, and the replica is exact.
func TestReplicateAgentResume(t *testing.T) {
	r := replicateSeed(t)
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	src := replicatest.NewImageSource(t, 256*replicatest.Block) // 16 MiB
	target := filepath.Join(dir, "replica.img")
	src.Write(t, r, 400)
	kill := int64(6<<20 + r.Intn(6<<20))
	_, err := replicateOverSSH(t, h, src, target, replica.Options{}, kill, "--checkpoint-mib", "1")
	if err == nil {
		t.Fatalf("a transfer killed after %d bytes succeeded", kill)
	}
	t.Logf("killed after %d bytes: %v", kill, err)
	if len(src.Snaps) != 1 {
		t.Fatalf("the source kept %d snapshots after the cut, want the one being sent", len(src.Snaps))
	}
	sent := src.Snaps[0]
	res, err := replicateOverSSH(t, h, src, target, replica.Options{}, 0, "--checkpoint-mib", "1")
	if err != nil {
		t.Fatalf("the run after the cut: %v", err)
	}
	if res.Kind != replica.Resumed || res.ResumedFrom <= 0 || res.SnapshotID != sent.ID {
		t.Fatalf("the run after the cut sent a %s from %d of %s, want the rest of %s", res.Kind, res.ResumedFrom, res.Snapshot, sent.Name)
	}
	if sumFile(t, target) != sumFile(t, src.Paths[sent.ID]) {
		t.Fatal("the resumed replica differs from the snapshot")
	}
	t.Logf("resumed from byte %d: %d delta bytes sent", res.ResumedFrom, res.DeltaBytes)
}

// TestReplicateUsage: replicate's bad command lines are exit code 2,
// before anything is looked up or reached.
func TestReplicateUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"replicate", "vg0/vm1"}, "give the volume and the destination"},
		{[]string{"replicate", "--promote", "vg1/vm1", "host:/dev/vg1/vm1"}, "--promote takes the replica VG/LV"},
		{[]string{"replicate", "--keep", "-1", "vg0/vm1", "host:/dev/vg1/vm1"}, "--keep -1"},
		{[]string{"replicate", "--checkpoint-mib", "0", "vg0/vm1", "host:/dev/vg1/vm1"}, "--checkpoint-mib 0"},
		{[]string{"replicate", "vg0/vm1", "ssh://"}, ""},
	} {
		r := thinback(t, dir, "", c.args...)
		r.want(t, exitUsage, strings.Join(c.args, " "))
		if !strings.Contains(r.stderr, c.want) {
			t.Errorf("%s: %q does not say %q", strings.Join(c.args, " "), r.stderr, c.want)
		}
	}
}

// TestReplicateLock: one replicate of a volume at a time; a second one
// is exit code 9, as a second backup is, and the lock goes with the run.
func TestReplicateLock(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state", "state.db")
	unlock, err := lockReplicate(state, "vg0/vm1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockReplicate(state, "vg0/vm1"); exitCode(err) != exitLocked {
		t.Fatalf("a second lock of vg0/vm1: %v (exit %d), want exit %d", err, exitCode(err), exitLocked)
	}
	other, err := lockReplicate(state, "vg0/vm2")
	if err != nil {
		t.Fatalf("another volume's lock: %v", err)
	}
	other()
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	again, err := lockReplicate(state, "vg0/vm1")
	if err != nil {
		t.Fatalf("the lock after the first run: %v", err)
	}
	again()
}
