package main

import (
	"bytes"
	"context"
	"errors"

	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/cmd/internal/remote/sshtest"

	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAgentHidden: thinback agent is not in thinback --help, has its own,
// and run by hand without a client it fails at the handshake saying so,
// writing nothing.
func TestAgentHidden(t *testing.T) {
	dir := t.TempDir()
	r := thinback(t, dir, "", "--help")
	r.want(t, 0, "--help")
	if strings.Contains(r.stdout, "agent") {
		t.Errorf("thinback --help lists the agent:\n%s", r.stdout)
	}
	if !strings.Contains(r.stdout, "15   the other host") {
		t.Errorf("thinback --help does not explain exit code 15:\n%s", r.stdout)
	}
	r = thinback(t, dir, "", "agent", "--help")
	r.want(t, 0, "agent --help")
	if !strings.Contains(r.stdout, "Services: receive") {
		t.Errorf("agent --help does not list its services:\n%s", r.stdout)
	}
	if err := os.WriteFile(filepath.Join(dir, "in"), []byte("hello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = thinback(t, dir, "in", "agent", "receive", "--to", "t.img")
	r.want(t, exitRemote, "agent by hand")
	if !strings.Contains(r.stderr, "not by hand") || !strings.Contains(r.stderr, `printed "hello"`) {
		t.Errorf("agent by hand: %q", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "t.img")); err == nil {
		t.Error("agent by hand wrote its target")
	}
	r = thinback(t, dir, "", "agent")
	r.want(t, exitUsage, "agent without a service")
}

// TestAgentNoService: a client asking for a service this thinback does
// not have is told so, once, with what to do, and the agent exits 15.
func TestAgentNoService(t *testing.T) {
	dir := t.TempDir()
	rt := sshtest.RemoteThinback(t, os.Args[0], "THINBACK_TEST_AS_MAIN=1", "THINBACK_STATE="+filepath.Join(dir, "state.db"))
	var stderr bytes.Buffer
	_, err := remote.Dial(context.Background(), remote.Dest{Path: "x"}, remote.Options{RemoteThinback: rt, Stderr: &stderr}, "frobnicate", "a")
	if !errors.Is(err, remote.ErrProtocol) || exitCode(err) != exitRemote {
		t.Fatalf("got %v, want ErrProtocol (exit 15)", err)
	}
	for _, want := range []string{`has no service "frobnicate" (it has receive, replicate, store)`, "install the same thinback on both hosts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("the agent also printed its refusal: %q", stderr.String())
	}
}
