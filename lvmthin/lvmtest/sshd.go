package lvmtest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// SSHD is a throwaway OpenSSH server on 127.0.0.1, for tests that reach
// "another host" over ssh inside one machine (the User-Mode Linux guest,
// or a root test on the host): its host key, the client's key, the
// authorized_keys and known_hosts files all live in one directory of the
// test's, and root logs in by that key only.
type SSHD struct {
	Dir  string // the directory holding keys, configuration and log
	Port int
	// Rsh is the ssh command line that reaches it, for thinback's --rsh:
	// ssh -F none -o UserKnownHostsFile=... -o IdentityFile=... -o
	// BatchMode=yes -p PORT (no user's or system's configuration, the
	// server's own known_hosts, never a password prompt).
	Rsh string
	// SSH is an executable script that runs ssh with Rsh's options and
	// its arguments: SSH root@127.0.0.1 COMMAND.
	SSH string
	// Dest is the user and host to give ssh: "root@127.0.0.1".
	Dest string

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	once sync.Once
	err  error
}

// SSHDPath is where Debian's openssh-server puts sshd, which must be run
// by its absolute path.
const SSHDPath = "/usr/sbin/sshd"

// StartSSHD starts sshd -D -e as root on 127.0.0.1 and a free port, with
// keys made by ssh-keygen in dir (created if missing). The sessions it
// runs get env (NAME=VALUE, e.g. the PATH holding the thinback to run, and
// LVM_SYSTEM_DIR) through sshd's SetEnv, since ssh passes none of the
// client's. It brings the loopback interface up first (a fresh guest
// kernel has it down) and returns once sshd says it listens. The caller
// must Stop it.
func StartSSHD(dir string, env []string) (_ *SSHD, err error) {
	if _, err := os.Stat(SSHDPath); err != nil {
		return nil, fmt.Errorf("sshd: %w (apt-get install openssh-server)", err)
	}
	if err := loopbackUp(); err != nil {
		return nil, fmt.Errorf("sshd: bring up the loopback interface lo: %w", err)
	}
	// sshd's privilege separation directory (Debian's).
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); !ok || k == "" || strings.ContainsAny(v, " \t\n\"'\\") {
			return nil, fmt.Errorf("sshd: environment %q: want NAME=VALUE without blanks or quotes", e)
		}
	}
	s := &SSHD{Dir: dir, Dest: "root@127.0.0.1", done: make(chan struct{})}
	path := func(name string) string { return filepath.Join(dir, name) }
	for _, k := range []string{"host_key", "user_key"} {
		_ = os.Remove(path(k))
		_ = os.Remove(path(k + ".pub"))
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "thinback-test", "-f", path(k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("sshd: ssh-keygen %s: %v: %s", path(k), err, out)
		}
	}
	if s.Port, err = freePort(); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	hostPub, err := os.ReadFile(path("host_key.pub"))
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	userPub, err := os.ReadFile(path("user_key.pub"))
	if err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	f := strings.Fields(string(hostPub))
	if len(f) < 2 {
		return nil, fmt.Errorf("sshd: %s: not a public key", path("host_key.pub"))
	}
	files := map[string]string{
		"authorized_keys": string(userPub),
		"known_hosts":     fmt.Sprintf("[127.0.0.1]:%d %s %s\n", s.Port, f[0], f[1]),
		"sshd_config": strings.Join([]string{
			"ListenAddress 127.0.0.1:" + strconv.Itoa(s.Port),
			"HostKey " + path("host_key"),
			"PidFile none",
			"AuthorizedKeysFile " + path("authorized_keys"),
			"StrictModes no",
			"UsePAM no",
			"PermitRootLogin prohibit-password",
			"PubkeyAuthentication yes",
			"PasswordAuthentication no",
			"KbdInteractiveAuthentication no",
			"PrintMotd no",
			"PrintLastLog no",
			"SetEnv " + strings.Join(env, " "),
			"",
		}, "\n"),
	}
	if len(env) == 0 {
		files["sshd_config"] = strings.Replace(files["sshd_config"], "SetEnv \n", "", 1)
	}
	for name, content := range files {
		if err := os.WriteFile(path(name), []byte(content), 0o600); err != nil {
			return nil, fmt.Errorf("sshd: %w", err)
		}
	}
	s.Rsh = fmt.Sprintf("ssh -F none -o UserKnownHostsFile=%s -o IdentityFile=%s -o IdentitiesOnly=yes -o BatchMode=yes -p %d",
		path("known_hosts"), path("user_key"), s.Port)
	s.SSH = path("ssh")
	if err := os.WriteFile(s.SSH, []byte("#!/bin/sh\nexec "+s.Rsh+" \"$@\"\n"), 0o755); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}

	if s.log, err = os.Create(path("sshd.log")); err != nil {
		return nil, fmt.Errorf("sshd: %w", err)
	}
	s.cmd = exec.Command(SSHDPath, "-D", "-e", "-f", path("sshd_config"))
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		s.log.Close()
		return nil, fmt.Errorf("sshd: %w", err)
	}
	if err := s.cmd.Start(); err != nil {
		s.log.Close()
		return nil, fmt.Errorf("sshd: %w", err)
	}
	// sshd prints "Server listening on 127.0.0.1 port N." once its socket
	// listens: that line, not a delay, says it is ready. Everything it
	// prints goes to sshd.log.
	ready := make(chan bool, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		listening := false
		for sc.Scan() {
			fmt.Fprintln(s.log, sc.Text())
			if !listening && strings.HasPrefix(sc.Text(), "Server listening on 127.0.0.1 port "+strconv.Itoa(s.Port)) {
				listening = true
				ready <- true
			}
		}
		_, _ = io.Copy(s.log, stderr)
		if !listening {
			ready <- false
		}
		s.err = s.cmd.Wait()
	}()
	if !<-ready {
		<-s.done
		log, _ := os.ReadFile(path("sshd.log"))
		s.log.Close()
		return nil, fmt.Errorf("sshd -D -e -f %s ended without listening (%v): %s", path("sshd_config"), s.err, log)
	}
	return s, nil
}

// Stop ends sshd and waits for it.
func (s *SSHD) Stop() error {
	s.once.Do(func() {
		_ = s.cmd.Process.Signal(unix.SIGTERM)
		<-s.done
		s.log.Close()
	})
	if s.err != nil {
		// SIGTERM ends sshd by the signal, or with status 255.
		var ee *exec.ExitError
		if errors.As(s.err, &ee) && (!ee.Exited() || ee.ExitCode() == 255) {
			return nil
		}
		return fmt.Errorf("sshd: %w", s.err)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 nothing listens on now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// loopbackUp sets the loopback interface up (the kernel gives it
// 127.0.0.1 then), as `ip link set lo up` would, without needing iproute2.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
