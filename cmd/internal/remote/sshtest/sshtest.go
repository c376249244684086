// Package sshtest starts a real OpenSSH server on the loopback for tests
// of thinback's commands that reach another host: throwaway keys, a
// known_hosts of its own, root login by key only.
package sshtest

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Sshd is the absolute path sshd is run from (sshd refuses a relative
// one).
const Sshd = "/usr/sbin/sshd"

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
	Dir       string // the server's files: keys, config, known_hosts

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
	if _, err := os.Stat(Sshd); err != nil {
		t.Fatalf("%v: install openssh-server (scripts/test does)", err)
	}
	// Privilege separation needs it; a fresh machine may not have it
	// until sshd's own service ran once.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &Server{Host: "127.0.0.1", User: "root", Dir: dir}
	keygen(t, filepath.Join(dir, "host"))
	keygen(t, filepath.Join(dir, "user"))
	s.userKey = filepath.Join(dir, "user")
	pub, err := os.ReadFile(s.userKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// A port free a moment ago may be taken by the time sshd binds it
	// (other tests run sshd too): try a few.
	var lastErr string
	for range 5 {
		port := freePort(t)
		stderr, ok := s.run(t, port)
		if ok {
			s.Port = port
			s.RshNoPort = s.rsh(filepath.Join(dir, "known_hosts"))
			s.Rsh = s.RshNoPort + " -p " + strconv.Itoa(port)
			if err := s.writeKnownHosts(filepath.Join(dir, "known_hosts"), filepath.Join(dir, "host.pub")); err != nil {
				t.Fatal(err)
			}
			return s
		}
		lastErr = stderr
		if !strings.Contains(stderr, "Address already in use") {
			break
		}
	}
	t.Fatalf("sshd did not start: %s", lastErr)
	return nil
}

// run starts sshd on port and waits until it says it listens: its stderr
// is the signal. It returns sshd's output when sshd ended instead.
func (s *Server) run(t testing.TB, port int) (string, bool) {
	cfg := filepath.Join(s.Dir, "sshd_config")
	conf := strings.Join([]string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(s.Dir, "host"),
		"PidFile none",
		"AuthorizedKeysFile " + filepath.Join(s.Dir, "authorized_keys"),
		"StrictModes no",
		"UsePAM no",
		"PermitRootLogin prohibit-password",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"PubkeyAuthentication yes",
		"AllowUsers " + s.User,
		"PrintMotd no",
		"LogLevel INFO",
	}, "\n") + "\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Sshd, "-D", "-e", "-f", cfg)
	// Its sessions too are ended with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stderr)
	var out []string
	for sc.Scan() {
		line := sc.Text()
		out = append(out, line)
		if strings.Contains(line, "Server listening on") {
			done := make(chan struct{})
			go func() {
				defer close(done)
				for sc.Scan() {
					if testing.Verbose() {
						t.Logf("sshd: %s", sc.Text())
					}
				}
			}()
			t.Cleanup(func() {
				syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				cmd.Wait() // closes stderr, which ends the goroutine
				<-done
			})
			return "", true
		}
	}
	cmd.Wait()
	return strings.Join(out, "\n"), false
}

func (s *Server) rsh(knownHosts string) string {
	return fmt.Sprintf("ssh -F none -o UserKnownHostsFile=%s -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentityFile=%s -o IdentitiesOnly=yes -o BatchMode=yes -o LogLevel=ERROR",
		quote(knownHosts), quote(s.userKey))
}

func (s *Server) writeKnownHosts(path, hostPub string) error {
	pub, err := os.ReadFile(hostPub)
	if err != nil {
		return err
	}
	f := strings.Fields(string(pub))
	line := fmt.Sprintf("[%s]:%d %s %s\n", s.Host, s.Port, f[0], f[1])
	return os.WriteFile(path, []byte(line), 0o600)
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
	keygen(t, filepath.Join(dir, "other"))
	kh := filepath.Join(dir, "known_hosts")
	if err := s.writeKnownHosts(kh, filepath.Join(dir, "other.pub")); err != nil {
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

func keygen(t testing.TB, path string) {
	t.Helper()
	out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "thinback-test", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
