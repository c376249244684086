package main

import (
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
