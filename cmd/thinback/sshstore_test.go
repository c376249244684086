package main

import (
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/remote/sshtest"
)

// sshStoreEnv points the thinback processes this test starts at sshd s
// for ssh:// stores, with the test binary as the remote thinback; rsh is
// the ssh command to use (ssh, or a wrapper of it).
func sshStoreEnv(t *testing.T, s *sshtest.Server, dir, rsh string) {
	t.Setenv("THINBACK_RSH", rsh+strings.TrimPrefix(s.RshNoPort, "ssh"))
	t.Setenv("THINBACK_REMOTE_THINBACK", sshtest.RemoteThinback(t, os.Args[0], "THINBACK_TEST_AS_MAIN=1",
		"THINBACK_STATE="+filepath.Join(dir, "remote-state.db")))
}

// TestKillSSHClient kills the ssh client of a backup, and of a receive
// --store, to an ssh:// store at random moments (the seed is logged;
// THINBACK_SEED replays it): the connection drops under the command and
// the agent on the store's host ends. After each, the store verifies
// clean (no record without its file, no file without its record), and
// the next backup succeeds and restores exact.
func TestKillSSHClient(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a while")
	}
	s := sshtest.Start(t)
	dir := t.TempDir()
	// The wrapper tells the test the pid of the first ssh a command runs
	// (through a FIFO: the test reads it when the ssh starts), then is
	// that ssh.
	wrapper := filepath.Join(dir, "rsh")
	script := "#!/bin/sh\n" +
		"if [ -n \"$TEST_SSH_PID\" ] && mkdir \"$TEST_SSH_PID.told\" 2>/dev/null; then echo $$ > \"$TEST_SSH_PID\"; fi\n" +
		"exec ssh \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sshStoreEnv(t, s, dir, wrapper)
	store := s.Dest(filepath.Join(dir, "store"))

	seed := time.Now().UnixNano()
	if v := os.Getenv("THINBACK_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))

	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 16<<20)
	r.Read(data[:8<<20])
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "init", "--store", store, "--no-encrypt")
	start := time.Now()
	run(t, dir, "backup", "--store", store, "--file", img)
	bound := time.Since(start)

	// killSSH runs cmd and kills its ssh at a random moment within
	// bound; it reports whether the kill failed the command after the
	// agent answered: while the store was in use.
	n := 0
	killSSH := func(cmd *exec.Cmd) bool {
		n++
		fifo := filepath.Join(dir, fmt.Sprintf("sshpid.%d", n))
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, "TEST_SSH_PID="+fifo)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		pidc := make(chan int, 1)
		go func() {
			b, _ := os.ReadFile(fifo)
			pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			pidc <- pid
		}()
		var pid int
		select {
		case pid = <-pidc:
		case err := <-done:
			// The command ended without an ssh: free the reader.
			if f, ferr := os.OpenFile(fifo, os.O_WRONLY, 0); ferr == nil {
				f.Close()
			}
			<-pidc
			t.Fatalf("%v ran no ssh: %v\n%s", cmd.Args, err, out.String())
		}
		d := time.Duration(r.Int63n(int64(bound) + 1))
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case err := <-done:
			t.Logf("%v finished before its ssh was killed (%v): %v", cmd.Args[1:], d, err)
			bound = time.Since(start)
			return false
		case <-timer.C:
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			t.Fatal(err)
		}
		err := <-done
		t.Logf("ssh of %v killed after %v: %v\n%s", cmd.Args[1:], d, err, out.String())
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return false // the kill came after the command's work
		}
		if strings.Contains(out.String(), "handshake") {
			return false // before the store was reached: the transport's business
		}
		if ee.ExitCode() != exitRemote {
			t.Fatalf("%v: exit %d when its connection to the store dropped, want %d", cmd.Args[1:], ee.ExitCode(), exitRemote)
		}
		return true
	}

	landed := 0
	for i := 0; i < 16 && landed < 3; i++ {
		f, err := os.OpenFile(img, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1<<20)
		r.Read(buf)
		f.WriteAt(buf, r.Int63n(15<<20))
		f.Close()
		start = time.Now()
		if killSSH(thinbackCmd(t, dir, "backup", "--store", store, "--file", img)) {
			landed++
		}
		run(t, dir, "verify", "--store", store)
	}
	if landed == 0 {
		t.Fatal("no backup's ssh was killed while the store was in use: the test killed nothing")
	}
	// receive --store, its ssh killed while the stream comes in.
	other := filepath.Join(dir, "other.img")
	for i := 0; i < 2; i++ {
		// A snapshot of its own each time: one that was received whole
		// would be refused the second time (it is in the store).
		r.Read(data[:8<<20])
		if err := os.WriteFile(other, data[:8<<20], 0o600); err != nil {
			t.Fatal(err)
		}
		full := filepath.Join(dir, fmt.Sprintf("other.%d.tbk", i))
		run(t, dir, "send", "--file", other, "-o", full)
		cmd := thinbackCmd(t, dir, "receive", "--store", store)
		in, err := os.Open(full)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = in
		start = time.Now()
		killSSH(cmd)
		in.Close()
		run(t, dir, "verify", "--store", store)
	}
	t.Logf("backups whose ssh was killed while the store was in use: %d", landed)

	run(t, dir, "backup", "--store", store, "--file", img)
	got := filepath.Join(dir, "restored.img")
	run(t, dir, "restore", "disk.img", "--store", store, "--to", got)
	sameFile(t, img, got)
	run(t, dir, "verify", "--store", store)
}

// TestSSHStorePathAbsolute: a store's path in an ssh:// address is
// absolute on its host, even when it looks like a VG/LV (one slash),
// which a destination of send --to keeps relative.
func TestSSHStorePathAbsolute(t *testing.T) {
	s := sshtest.Start(t)
	dir := t.TempDir()
	sshStoreEnv(t, s, dir, "ssh")
	top, err := os.MkdirTemp("/tmp", "thinback-store-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	store := s.Dest(strings.TrimPrefix(top, "/")) // ssh://root@127.0.0.1:PORT/tmp/thinback-store-N
	run(t, dir, "init", "--store", store, "--no-encrypt")
	if _, err := os.Stat(filepath.Join(top, "catalog.db")); err != nil {
		t.Fatalf("init --store %s: %v", store, err)
	}
}

// TestSSHStorePointInTime: a new ssh:// store is made only when told
// whether to encrypt; cat and verify --device read a point in time of
// one through the connection, as of a local store.
func TestSSHStorePointInTime(t *testing.T) {
	s := sshtest.Start(t)
	dir := t.TempDir()
	sshStoreEnv(t, s, dir, "ssh")
	store := s.Dest(filepath.Join(dir, "store"))
	r := rand.New(rand.NewSource(1))
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 5<<20+4096)
	r.Read(data[:3<<20])
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// A store off this machine is made only when told how, as on S3.
	if res := thinback(t, dir, "", "backup", "--store", store, "--file", img); res.code != exitUsage {
		t.Fatalf("a first backup into a new ssh:// store without --encrypt or --no-encrypt: exit %d, want %d", res.code, exitUsage)
	}
	if _, err := os.Stat(filepath.Join(dir, "store")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused backup made the store: %v", err)
	}
	run(t, dir, "init", "--store", store, "--no-encrypt")
	run(t, dir, "backup", "--store", store, "--file", img)
	want := filepath.Join(dir, "want.img")
	if err := os.WriteFile(want, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r.Read(data[1<<20 : 2<<20])
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "backup", "--store", store, "--file", img)

	got := filepath.Join(dir, "got.img")
	run(t, dir, "cat", "disk.img", "--store", store, "--snapshot", "1", "-o", got)
	sameFile(t, want, got)
	os.Remove(got)
	run(t, dir, "cat", "disk.img", "--store", store, "-o", got)
	sameFile(t, img, got)
	run(t, dir, "verify", "disk.img", "--store", store, "--snapshot", "1", "--device", want)
}

// TestRollbackSSH: an ssh:// store rolled back behind this host's back
// (its directory put back to an older copy there) is noticed by the next
// backup, from this host's state, kept under the store's address.
func TestRollbackSSH(t *testing.T) {
	s := sshtest.Start(t)
	dir := t.TempDir()
	sshStoreEnv(t, s, dir, "ssh")
	local := encryptedStore(t, dir)
	store := s.Dest(local)
	img := filepath.Join(dir, "disk.img")
	writeImage(t, img, "first")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "first backup")
	if out, err := exec.Command("cp", "-a", local, local+".old").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	writeImage(t, img, "second")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "second backup")
	if err := os.RemoveAll(local); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(local+".old", local); err != nil {
		t.Fatal(err)
	}
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store)
	r.want(t, exitChain, "backup into a rolled-back store")
	wantIn(t, "backup's message", r.stderr, "store "+store+" was rolled back", "this host last saw #2", "the store's newest is #1")
}
