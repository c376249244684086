package main

import (
	"crypto/sha256"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/cmd/internal/remote/sshtest"
)

// sendToHost is a real sshd on the loopback with this test binary as the
// thinback it runs, keeping its state file in dir.
type sendToHost struct {
	s        *sshtest.Server
	thinback string // for --remote-thinback
	state    string // the receiving side's state file
}

func startSendToHost(t *testing.T, dir string) sendToHost {
	s := sshtest.Start(t)
	state := filepath.Join(dir, "remote-state.db")
	return sendToHost{s: s, state: state,
		thinback: sshtest.RemoteThinback(t, os.Args[0], "THINBACK_TEST_AS_MAIN=1", "THINBACK_STATE="+state)}
}

// seededImage writes size bytes of seeded data, with a zero run.
func seededImage(t *testing.T, path string, size int, seed int64) []byte {
	t.Helper()
	b := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(b)
	clear(b[size/4 : size/2])
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return b
}

func sumFile(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestSendTo sends a full and an incremental of an image over a real sshd
// with send --to, in both spellings of the destination: the target ends
// equal to each image in turn, and a --snapback file saved on the
// receiving host undoes the incremental.
func TestSendTo(t *testing.T) {
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	a := seededImage(t, filepath.Join(dir, "a.img"), 3<<20, 1)
	b := append([]byte(nil), a...)
	copy(b[1<<20:], strings.Repeat("changed ", 40000))
	if err := os.WriteFile(filepath.Join(dir, "b.img"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "target.img")
	r := thinback(t, dir, "", "send", "--file", "a.img", "--to", h.s.Dest(target),
		"--rsh", h.s.RshNoPort, "--remote-thinback", h.thinback)
	r.want(t, 0, "send --to a full")
	if sumFile(t, target) != sha256.Sum256(a) {
		t.Fatal("the target is not the image sent")
	}
	if !strings.Contains(r.stderr, "127.0.0.1: applied - to "+target) || !strings.Contains(r.stderr, "sent a.img (full)") {
		t.Errorf("send --to does not show both ends' summaries:\n%s", r.stderr)
	}
	// lvmsync's spelling; the port comes with --rsh.
	undo := filepath.Join(dir, "undo.tbk")
	r = thinback(t, dir, "", "send", "--file", "b.img", "--base-file", "a.img", "--snapback", undo,
		"--to", "root@127.0.0.1:"+target, "--rsh", h.s.Rsh, "--remote-thinback", h.thinback)
	r.want(t, 0, "send --to an incremental")
	if sumFile(t, target) != sha256.Sum256(b) {
		t.Fatal("the target is not the second image")
	}
	r = thinback(t, dir, "", "apply", undo, "--to", target, "--state", h.state)
	r.want(t, 0, "apply the snapback file saved by the receiver")
	if sumFile(t, target) != sha256.Sum256(a) {
		t.Fatal("the snapback file did not undo the incremental")
	}
}

// TestSendToRefused: an incremental to a target that does not hold its
// base is refused by the receiver, whose exit code and message the sender
// exits with; nothing is written there.
func TestSendToRefused(t *testing.T) {
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	seededImage(t, filepath.Join(dir, "a.img"), 1<<20, 1)
	seededImage(t, filepath.Join(dir, "b.img"), 1<<20, 2)
	other := seededImage(t, filepath.Join(dir, "other.img"), 1<<20, 3)
	target := filepath.Join(dir, "other.img")
	// What the receiver says when the stream comes through a pipe.
	thinback(t, dir, "", "send", "--file", "b.img", "--base-file", "a.img", "-o", "incr.tbk").want(t, 0, "send -o")
	local := thinback(t, dir, "incr.tbk", "receive", "--to", target, "--state", h.state)
	local.want(t, exitChain, "receive --to of an incremental onto another image")

	r := thinback(t, dir, "", "send", "--file", "b.img", "--base-file", "a.img", "--to", h.s.Dest(target),
		"--rsh", h.s.RshNoPort, "--remote-thinback", h.thinback)
	r.want(t, exitChain, "send --to of an incremental onto another image")
	msg := strings.TrimPrefix(strings.TrimSpace(local.stderr), "thinback: ")
	if !strings.Contains(r.stderr, "thinback: send: root@127.0.0.1: "+msg) {
		t.Errorf("send --to does not report the receiver's error %q:\n%s", msg, r.stderr)
	}
	if strings.Count(r.stderr, msg) != 1 {
		t.Errorf("the receiver's error is reported more than once:\n%s", r.stderr)
	}
	if sumFile(t, target) != sha256.Sum256(other) {
		t.Error("the refused incremental changed the target")
	}
}

// TestSendToUnreachable: a host without thinback, or whose host key ssh
// refuses, is exit 15 with the host named; a bad destination is exit 2.
func TestSendToUnreachable(t *testing.T) {
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	seededImage(t, filepath.Join(dir, "a.img"), 1<<20, 1)
	target := filepath.Join(dir, "t.img")
	r := thinback(t, dir, "", "send", "--file", "a.img", "--to", h.s.Dest(target), "--rsh", h.s.RshNoPort, "--remote-thinback", "/nonexistent/thinback")
	r.want(t, exitRemote, "send --to a host without thinback")
	if !strings.Contains(r.stderr, "root@127.0.0.1 has no thinback at /nonexistent/thinback") {
		t.Errorf("no thinback: %s", r.stderr)
	}
	r = thinback(t, dir, "", "send", "--file", "a.img", "--to", "root@127.0.0.1:"+target, "--rsh", h.s.WrongHostKeyRsh(t), "--remote-thinback", h.thinback)
	r.want(t, exitRemote, "send --to a host whose key is not the known one")
	if !strings.Contains(r.stderr, "ssh refused the host key of root@127.0.0.1") {
		t.Errorf("host key: %s", r.stderr)
	}
	if _, err := os.Stat(target); err == nil {
		t.Error("a send that never reached the host made its target")
	}
	for _, args := range [][]string{
		{"send", "--file", "a.img", "--to", "ssh://h:99999/x"},
		{"send", "--file", "a.img", "--to", "ssh://h/x", "-o", "x.tbk"},
		{"send", "--file", "a.img", "-o", "x.tbk", "--snapback", "u.tbk"},
		{"send", "--file", "a.img", "--to", "h:/x", "--key-file", "k"},
	} {
		thinback(t, dir, "", args...).want(t, exitUsage, strings.Join(args, " "))
	}
}

// TestSendToLocal: --to without a host runs the receiver on this host.
func TestSendToLocal(t *testing.T) {
	dir := t.TempDir()
	a := seededImage(t, filepath.Join(dir, "a.img"), 1<<20, 1)
	rt := sshtest.RemoteThinback(t, os.Args[0], "THINBACK_TEST_AS_MAIN=1", "THINBACK_STATE="+filepath.Join(dir, "state.db"))
	r := thinback(t, dir, "", "send", "--file", "a.img", "--to", "t.img", "--remote-thinback", rt)
	r.want(t, 0, "send --to a local file")
	if sumFile(t, filepath.Join(dir, "t.img")) != sha256.Sum256(a) {
		t.Fatal("the target is not the image sent")
	}
	if !strings.Contains(r.stderr, "agent: applied - to t.img") {
		t.Errorf("stderr:\n%s", r.stderr)
	}
}
