package main

import (
	"bytes"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// thinbackCmd returns a command running this test binary as thinback.
func thinbackCmd(t *testing.T, dir string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "THINBACK_TEST_AS_MAIN=1", "THINBACK_STATE="+filepath.Join(dir, "state.db"))
	return cmd
}

func run(t *testing.T, dir string, args ...string) string {
	t.Helper()
	var out bytes.Buffer
	cmd := thinbackCmd(t, dir, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("thinback %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// killAfter starts thinback and SIGKILLs it after d; it reports whether
// the command finished first.
func killAfter(t *testing.T, dir string, d time.Duration, args ...string) bool {
	t.Helper()
	cmd := thinbackCmd(t, dir, args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false
	}
}

func sameFile(t *testing.T, a, b string) {
	t.Helper()
	x, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(x, y) {
		t.Fatalf("%s and %s differ", a, b)
	}
}

// TestKillAnywhere SIGKILLs backup, prune and receive at random moments
// (the seed is logged; THINBACK_SEED replays it). After every kill, verify
// passes, every recorded snapshot restores to the image it was made from,
// and the next run succeeds: nothing is lost, nothing is half-recorded.
func TestKillAnywhere(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a while")
	}
	dir := t.TempDir()
	killAnywhere(t, dir, filepath.Join(dir, "store"))
}

// killAnywhere is TestKillAnywhere against the store at store (a
// directory, or an s3: address with the environment set for it). The
// writers of an S3 store are given --break-stale-lock: each kill leaves
// the volume's lock object of a process that no longer runs, which is
// only ever removed on request.
func killAnywhere(t *testing.T, dir, store string, writerFlags ...string) {
	seed := time.Now().UnixNano()
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	r := rand.New(rand.NewSource(seed))
	w := func(args ...string) []string { return append(args, writerFlags...) }
	img := filepath.Join(dir, "disk.img")
	data := make([]byte, 24<<20)
	r.Read(data[:12<<20]) // half random, half zeroes
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	// images[seq] is the image each recorded snapshot was made from.
	images := map[string]string{}
	record := func() {
		out := run(t, dir, "list", "--store", store, "--json", "disk.img")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"id": "`) {
				id := strings.Split(line, `"`)[3]
				if _, ok := images[id]; !ok {
					images[id] = img + ".at-" + id
					b, _ := os.ReadFile(img)
					os.WriteFile(images[id], b, 0o600)
				}
			}
		}
	}
	check := func(what string) {
		t.Helper()
		run(t, dir, "verify", "--store", store)
		out := run(t, dir, "list", "--store", store, "--json", "disk.img")
		for id, want := range images {
			if !strings.Contains(out, id) {
				continue // pruned
			}
			got := filepath.Join(dir, "restored.img")
			os.Remove(got)
			os.Remove(filepath.Join(dir, "state.db"))
			run(t, dir, "restore", "disk.img", "--store", store, "--snapshot", id, "--to", got)
			sameFile(t, want, got)
		}
	}
	start := time.Now()
	run(t, dir, w("backup", "--store", store, "--file", img)...)
	typical := time.Since(start)
	record()
	finished := 0
	for i := 0; i < 12; i++ {
		// The image changes; a backup is killed somewhere in its run
		// (each changed image state is a new snapshot id when recorded).
		f, _ := os.OpenFile(img, os.O_WRONLY, 0)
		buf := make([]byte, 1<<20)
		r.Read(buf)
		f.WriteAt(buf, r.Int63n(23<<20))
		f.Close()
		if killAfter(t, dir, time.Duration(r.Int63n(int64(typical)+1)), w("backup", "--store", store, "--file", img)...) {
			finished++
		}
		record()
		check(fmt.Sprintf("backup killed, round %d", i))
		run(t, dir, w("backup", "--store", store, "--file", img)...)
		record()
	}
	// Prune, killed at random moments; every kept snapshot stays exact.
	for i := 0; i < 6; i++ {
		if killAfter(t, dir, time.Duration(r.Int63n(int64(typical)+1)), w("prune", "--store", store, "disk.img", "--keep-last", fmt.Sprint(12-2*i))...) {
			finished++
		}
		check(fmt.Sprintf("prune killed, round %d", i))
	}
	// Receive, killed while reading its stream.
	full := filepath.Join(dir, "other.tbk")
	other := filepath.Join(dir, "other.img")
	os.WriteFile(other, data[:8<<20], 0o600)
	run(t, dir, "send", "--file", other, "-o", full)
	for i := 0; i < 4; i++ {
		cmd := thinbackCmd(t, dir, w("receive", "--store", store)...)
		in, _ := os.Open(full)
		cmd.Stdin = in
		cmd.Start()
		time.Sleep(time.Duration(r.Int63n(int64(typical) + 1)))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		in.Close()
		run(t, dir, "verify", "--store", store)
	}
	t.Logf("%d of the killed runs finished before the kill (typical backup %v)", finished, typical)
	run(t, dir, w("backup", "--store", store, "--file", img)...)
	record()
	check("at the end")
}
