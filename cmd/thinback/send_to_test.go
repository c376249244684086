package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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

// TestSendToInterrupted: SIGINT to a send --to waiting on the other host
// ends it with exit 130, killing its ssh. The "remote thinback" announces
// itself through a FIFO, then reads its input and never answers.
func TestSendToInterrupted(t *testing.T) {
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	seededImage(t, filepath.Join(dir, "a.img"), 1<<20, 1)
	fifo := filepath.Join(dir, "started")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	stall := filepath.Join(dir, "stall")
	if err := os.WriteFile(stall, []byte("#!/bin/sh\necho started > "+fifo+"\nexec cat >/dev/null\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := thinbackCmd(t, dir, "send", "--file", "a.img", "--to", h.s.Dest(filepath.Join(dir, "t.img")),
		"--rsh", h.s.RshNoPort, "--remote-thinback", stall)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(fifo) // returns once the remote side runs
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(f)
	f.Close()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("send --to interrupted: %v, want exit 130\n%s", err, stderr.String())
	}
	t.Logf("stderr: %s", stderr.String())
	if !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}

// TestSendToInterruptedTransfer: SIGINT to send --to in the middle of the
// transfer ends it with exit 130; the receiver, cut off, stops with what
// it verified, and running the send again finishes the target. The remote
// thinback passes the agent at most a MiB of its input (256 reads; dd,
// since head's buffered output would hold back the handshake), says so
// through a FIFO and swallows the rest, so the receiver waits for data
// that never comes until the sender is gone.
func TestSendToInterruptedTransfer(t *testing.T) {
	dir := t.TempDir()
	h := startSendToHost(t, dir)
	a := seededImage(t, filepath.Join(dir, "a.img"), 8<<20, 4)
	started, done := filepath.Join(dir, "started"), filepath.Join(dir, "done")
	for _, f := range []string{started, done} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cut := filepath.Join(dir, "cut")
	script := "#!/bin/sh\nexec 3<&0\n" +
		"{ dd bs=4096 count=256 <&3 2>/dev/null; echo started > " + started + "; cat <&3 >/dev/null; } | " + h.thinback + ` "$@"` + "\n" +
		"echo done > " + done + "\n"
	if err := os.WriteFile(cut, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "t.img")
	cmd := thinbackCmd(t, dir, "send", "--file", "a.img", "--to", h.s.Dest(target), "--rsh", h.s.RshNoPort, "--remote-thinback", cut)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	readFIFO(t, started)
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitInterrupted {
		t.Fatalf("send --to interrupted: %v, want exit 130\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "interrupted: send --to "+h.s.Dest(target)[:len("ssh://")]) || !strings.Contains(stderr.String(), "run again, finishes") {
		t.Errorf("interrupted send --to:\n%s", stderr.String())
	}
	readFIFO(t, done) // the receiver has ended
	if b, err := os.ReadFile(target); err == nil && bytes.Equal(b, a) {
		t.Fatal("the interrupted transfer completed the target: it tested nothing")
	}
	r := thinback(t, dir, "", "send", "--file", "a.img", "--to", h.s.Dest(target), "--rsh", h.s.RshNoPort, "--remote-thinback", h.thinback)
	r.want(t, 0, "send --to again")
	if sumFile(t, target) != sha256.Sum256(a) {
		t.Fatal("the target is not the image after the send ran again")
	}
}

// readFIFO waits until the other end of the FIFO writes and closes it.
func readFIFO(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.ReadAll(f); err != nil {
		t.Fatal(err)
	}
}
