// Package sshtest starts a real OpenSSH server on the loopback for tests
// of thinback's commands that reach another host: throwaway keys, a
// known_hosts of its own, root login by key only. The server itself is
// lvmtest's (the one the guest's scripts start too); this package gives
// host tests what they need around it.
package sshtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/thinback/thinback/lvmthin/lvmtest"
)

// Server is a running sshd on 127.0.0.1.
type Server struct {
	Host string // 127.0.0.1
	Port int
	User string // the user tests log in as: this one (root)
	// Rsh is the --rsh that logs in: no ssh_config, this server's
	// known_hosts, the throwaway user key, BatchMode, -p Port.
	Rsh string
	// RshNoPort is Rsh without -p: the port comes from the destination.
	RshNoPort string
	Dir       string // the server's files: keys, config, known_hosts, sshd.log

	userKey string
}

// Start starts sshd for the test; it is stopped at the test's end. It
// skips the test when not run as root (sshd changes user, and tests log in
// as root); anything else missing fails it: scripts/test installs
// openssh-server.
func Start(t testing.TB) *Server {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("sshd tests need root: sshd must run as root and tests log in as root")
	}
	// A port free a moment ago may be taken by the time sshd binds it
	// (other tests run sshd too): try a few.
	var err error
	for range 5 {
		var d *lvmtest.SSHD
		d, err = lvmtest.StartSSHD(filepath.Join(t.TempDir(), "sshd"), nil)
		if err == nil {
			t.Cleanup(func() {
				if err := d.Stop(); err != nil {
					t.Error(err)
				}
			})
			s := &Server{Host: "127.0.0.1", User: "root", Port: d.Port, Dir: d.Dir, userKey: filepath.Join(d.Dir, "user_key")}
			s.RshNoPort = s.rsh(filepath.Join(d.Dir, "known_hosts"))
			s.Rsh = s.RshNoPort + " -p " + strconv.Itoa(s.Port)
			return s
		}
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatal(err)
	return nil
}

func (s *Server) rsh(knownHosts string) string {
	return fmt.Sprintf("ssh -F none -o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentityFile=%s -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR",
		quote(knownHosts), quote(s.userKey))
}

// Dest spells path on this server as ssh://USER@127.0.0.1:PORT/PATH
// (an absolute path gets the double slash: ssh://...//abs).
func (s *Server) Dest(path string) string {
	return fmt.Sprintf("ssh://%s@%s:%d/%s", s.User, s.Host, s.Port, path)
}

// WrongHostKeyRsh is an --rsh whose known_hosts names another key for
// this server: ssh refuses to log in.
func (s *Server) WrongHostKeyRsh(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	other := filepath.Join(dir, "other")
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "thinback-test", "-f", other).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(other + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(pub))
	kh := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(kh, []byte(fmt.Sprintf("[%s]:%d %s %s\n", s.Host, s.Port, f[0], f[1])), 0o600); err != nil {
		t.Fatal(err)
	}
	return s.rsh(kh) + " -p " + strconv.Itoa(s.Port)
}

// quote quotes a word for a POSIX shell, and for --rsh.
func quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// RemoteThinback writes a script that runs exe (a test binary acting as
// thinback) with env set, and returns its path for --remote-thinback.
// sshd gives a command a fresh environment: the script sets what the test
// binary needs to know it is thinback.
func RemoteThinback(t testing.TB, exe string, env ...string) string {
	t.Helper()
	abs, err := filepath.Abs(exe)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\nexec env")
	for _, e := range env {
		b.WriteString(" " + quote(e))
	}
	b.WriteString(" " + quote(abs) + ` "$@"` + "\n")
	path := filepath.Join(t.TempDir(), "thinback")
	if err := os.WriteFile(path, []byte(b.String()), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}
