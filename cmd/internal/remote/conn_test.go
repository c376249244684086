package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/thinback/thinback/cmd/internal/remote/sshtest"
)

// agent is the path of a script that runs this test binary as an agent of
// the given kind.
func agent(t *testing.T, kind string) string {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return sshtest.RemoteThinback(t, exe, agentEnv+"="+kind)
}

// lines is an io.Writer safe for the stderr goroutine.
type lines struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// echo sends data through an echo agent and checks it comes back.
func echo(t *testing.T, d Dest, o Options) {
	t.Helper()
	var stderr lines
	o.Stderr = &stderr
	c, err := Dial(context.Background(), d, o, "echo", "an arg", "it's")
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Peer(); p.Protocol != ProtocolName || p.Version != 1 || p.Thinback != "test-agent" || p.Service != "echo" {
		t.Errorf("peer %+v", p)
	}
	data := bytes.Repeat([]byte("thinback\x00\xff"), 100000) // more than any pipe holds
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Errorf("echoed %d bytes, want %d", len(got), len(data))
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	prefix := d.Host
	if prefix == "" {
		prefix = "agent"
	}
	if s := stderr.String(); s != prefix+": bye\n" {
		t.Errorf("stderr %q, want %q", s, prefix+": bye\n")
	}
}

func TestDialLocal(t *testing.T) {
	echo(t, Dest{Path: "x"}, Options{RemoteThinback: agent(t, "1")})
}

func TestDialSSH(t *testing.T) {
	s := sshtest.Start(t)
	d, err := ParseDest(s.Dest("vg0/vm1"))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "1")})
	// lvmsync's spelling, the port from --rsh.
	d, err = ParseDest("root@127.0.0.1:/dev/vg0/vm1")
	if err != nil {
		t.Fatal(err)
	}
	echo(t, d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "1")})
}

// TestAcceptArgs checks that the agent learns the arguments the client
// sent, through the remote shell's quoting.
func TestAcceptArgs(t *testing.T) {
	cr, aw := io.Pipe()
	ar, cw := io.Pipe()
	args := []string{"--to", "/dev/vg0/it's here"}
	go func() {
		writeHello(cw, clientGreeting, ourHello("receive", args))
	}()
	done := make(chan Hello, 1)
	go func() {
		h, err := readHello(bufioReader(cr), agentGreeting)
		if err != nil {
			t.Error(err)
		}
		done <- h
	}()
	c, err := Accept(ar, aw, "receive")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Peer().Args; len(got) != 2 || got[1] != args[1] {
		t.Errorf("peer args %q", got)
	}
	if h := <-done; h.Error != "" || h.Version != protocolVersion {
		t.Errorf("agent hello %+v", h)
	}
}

func TestDialNoRemote(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	_, err := Dial(context.Background(), d, Options{Rsh: s.Rsh, RemoteThinback: "/nonexistent/thinback"}, "echo")
	if !errors.Is(err, ErrNoRemote) {
		t.Fatalf("got %v, want ErrNoRemote", err)
	}
	for _, want := range []string{"root@127.0.0.1 has no thinback at /nonexistent/thinback", "'/nonexistent/thinback' 'agent' 'echo'", "--remote-thinback"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// On this host too.
	_, err = Dial(context.Background(), Dest{Path: "x"}, Options{RemoteThinback: "/nonexistent/thinback"}, "echo")
	if !errors.Is(err, ErrNoRemote) || !strings.Contains(err.Error(), "--remote-thinback") {
		t.Fatalf("locally: got %v, want ErrNoRemote", err)
	}
}

func TestDialVersion(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	_, err := Dial(context.Background(), d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "v2")}, "echo")
	if !errors.Is(err, ErrVersion) {
		t.Fatalf("got %v, want ErrVersion", err)
	}
	for _, want := range []string{"root@127.0.0.1", "version 1", "version 2", "thinback test-agent", "install the same thinback on both hosts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestDialHostKey(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	_, err := Dial(context.Background(), d, Options{Rsh: s.WrongHostKeyRsh(t), RemoteThinback: agent(t, "1")}, "echo")
	if !errors.Is(err, ErrHostKey) || !strings.Contains(err.Error(), "root@127.0.0.1") {
		t.Fatalf("got %v, want ErrHostKey naming the host", err)
	}
}

func TestDialSSHFails(t *testing.T) {
	s := sshtest.Start(t)
	// Nobody listens on the port of a listener just closed.
	d := Dest{User: "root", Host: "127.0.0.1", Port: closedPort(t), Path: "vg0/vm1"}
	_, err := Dial(context.Background(), d, Options{Rsh: s.RshNoPort, RemoteThinback: agent(t, "1")}, "echo")
	if !errors.Is(err, ErrSSH) || !strings.Contains(err.Error(), "Connection refused") {
		t.Fatalf("got %v, want ErrSSH with ssh's own message", err)
	}
	_, err = Dial(context.Background(), d, Options{Rsh: "/nonexistent/ssh"}, "echo")
	if !errors.Is(err, ErrSSH) || !strings.Contains(err.Error(), "--rsh") {
		t.Fatalf("no ssh: got %v, want ErrSSH", err)
	}
}

func TestDialBanner(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	_, err := Dial(context.Background(), d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "banner")}, "echo")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("got %v, want ErrProtocol", err)
	}
	if !strings.Contains(err.Error(), `Welcome to \x1b[1mhost2`) || strings.Contains(err.Error(), "\x1b") {
		t.Errorf("error %q does not quote the banner, sanitised", err)
	}
	// Something that echoes what it reads is no agent either.
	cat := t.TempDir() + "/cat"
	if err := os.WriteFile(cat, []byte("#!/bin/sh\nexec cat\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), Dest{Path: "x"}, Options{RemoteThinback: cat}, "echo")
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("cat: got %v, want ErrProtocol", err)
	}
}

func TestDialRefusesControlCharacters(t *testing.T) {
	_, err := Dial(context.Background(), Dest{Host: "h", Path: "x"}, Options{Rsh: "/nonexistent/ssh"}, "echo", "a\nreboot")
	if !errors.Is(err, ErrArg) {
		t.Fatalf("got %v, want ErrArg", err)
	}
	_, err = Dial(context.Background(), Dest{Path: "x"}, Options{RemoteThinback: "/nonexistent"}, "echo", "a\x1b")
	if !errors.Is(err, ErrArg) {
		t.Fatalf("locally: got %v, want ErrArg", err)
	}
}

func TestCloseReportsExit(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	var stderr lines
	c, err := Dial(context.Background(), d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "1"), Stderr: &stderr}, "fail")
	if err != nil {
		t.Fatal(err)
	}
	err = c.Close()
	if err == nil {
		t.Fatal("Close: no error from an agent that exited 3")
	}
	for _, want := range []string{"root@127.0.0.1", "exited with status 3", "line 3 / line 4 / line 5 / line 6 / line 7"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "line 2") {
		t.Errorf("error %q quotes more than the last lines", err)
	}
	if !strings.Contains(stderr.String(), "127.0.0.1: line 1\n") {
		t.Errorf("stderr %q", stderr.String())
	}
}

// TestKill kills the ssh client in the middle of a transfer: Read ends,
// Close says it was killed, and no process of its group is left.
func TestKill(t *testing.T) {
	s := sshtest.Start(t)
	d, _ := ParseDest(s.Dest("vg0/vm1"))
	c, err := Dial(context.Background(), d, Options{Rsh: s.Rsh, RemoteThinback: agent(t, "1")}, "hang")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("some")); err != nil {
		t.Fatal(err)
	}
	pid := c.cmd.Process.Pid
	if err := c.Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Kill: no error")
	}
	if err := c.Close(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Close after Kill: %v", err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still there: %v", pid, err)
	}
}

// TestCancel interrupts a connection through its context, as a signal to
// thinback does: Read returns the context's error.
func TestCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c, err := Dial(ctx, Dest{Path: "x"}, Options{RemoteThinback: agent(t, "1")}, "hang")
	if err != nil {
		t.Fatal(err)
	}
	read := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		read <- err
	}()
	cancel()
	if err := <-read; !errors.Is(err, context.Canceled) {
		t.Fatalf("Read: %v, want context.Canceled", err)
	}
	if err := c.Close(); !errors.Is(err, context.Canceled) {
		t.Fatalf("Close: %v, want context.Canceled", err)
	}
}

func bufioReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return port
}
