package main

import (
	"bytes"
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

// killAfter starts cmd and SIGKILLs it after d; it reports whether the
// command finished first, and how long it ran.
func killAfter(t *testing.T, cmd *exec.Cmd, d time.Duration) (finished bool, ran time.Duration) {
	t.Helper()
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		return true, time.Since(start)
	case <-time.After(d):
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		return false, time.Since(start)
	}
}

// killer kills runs of one kind of command at random moments within how
// long such a run takes: the bound starts at a guess and becomes the
// length of each run that finished before its kill, so the next kill falls
// within a real run whatever the machine's speed.
type killer struct {
	r             *rand.Rand
	bound         time.Duration
	landed, tries int
}

func (k *killer) kill(t *testing.T, cmd *exec.Cmd) (landed bool) {
	t.Helper()
	finished, ran := killAfter(t, cmd, time.Duration(k.r.Int63n(int64(k.bound)+1)))
	k.tries++
	if finished {
		k.bound = ran
		return false
	}
	k.landed++
	return true
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

// killRounds is how many rounds of killed backups killAnywhere runs: 6 by
// default, THINBACK_KILL_ROUNDS for a longer run (12 takes about twice
// as long).
func killRounds(t *testing.T) int {
	t.Helper()
	v := os.Getenv("THINBACK_KILL_ROUNDS")
	if v == "" {
		return 6
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("THINBACK_KILL_ROUNDS=%q: want a positive number", v)
	}
	return n
}

// TestKillAnywhere SIGKILLs backup, prune and receive at random moments
// (the seed is logged; THINBACK_SEED replays it; THINBACK_KILL_ROUNDS sets
// the rounds of killed backups). After every kill, verify passes, every
// recorded snapshot restores to the image it was made from, and the next
// run succeeds: nothing is lost, nothing is half-recorded.
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
	// Every round's backup is killed mid-run: one that finishes first is
	// recorded like any backup, and the round tries again, the image
	// changed, with a kill within that run's length.
	backups := &killer{r: r, bound: typical}
	rounds := killRounds(t)
	for i := 0; i < rounds; i++ {
		landed := false
		for try := 0; try < 4 && !landed; try++ {
			f, _ := os.OpenFile(img, os.O_WRONLY, 0)
			buf := make([]byte, 1<<20)
			r.Read(buf)
			f.WriteAt(buf, r.Int63n(23<<20))
			f.Close()
			landed = backups.kill(t, thinbackCmd(t, dir, w("backup", "--store", store, "--file", img)...))
			record()
		}
		if !landed {
			t.Fatalf("round %d: four backups in a row finished before their kill (the last in %v): the test kills nothing", i, backups.bound)
		}
		check(fmt.Sprintf("backup killed, round %d", i))
		run(t, dir, w("backup", "--store", store, "--file", img)...)
		record()
	}
	// Prune, killed at random moments; every kept snapshot stays exact.
	// There are more than rounds snapshots: each prune keeps fewer.
	prunes := &killer{r: r, bound: typical}
	for i := 0; i < 6; i++ {
		keep := max(1, rounds-i*rounds/6)
		prunes.kill(t, thinbackCmd(t, dir, w("prune", "--store", store, "disk.img", "--keep-last", fmt.Sprint(keep))...))
		check(fmt.Sprintf("prune killed, round %d", i))
	}
	// Receive, killed while reading its stream.
	full := filepath.Join(dir, "other.tbk")
	other := filepath.Join(dir, "other.img")
	os.WriteFile(other, data[:8<<20], 0o600)
	run(t, dir, "send", "--file", other, "-o", full)
	receives := &killer{r: r, bound: typical}
	for i := 0; i < 4; i++ {
		cmd := thinbackCmd(t, dir, w("receive", "--store", store)...)
		in, _ := os.Open(full)
		cmd.Stdin = in
		receives.kill(t, cmd)
		in.Close()
		run(t, dir, "verify", "--store", store)
	}
	t.Logf("kills that landed mid-run: backups %d of %d, prunes %d of %d, receives %d of %d (typical backup %v)",
		backups.landed, backups.tries, prunes.landed, prunes.tries, receives.landed, receives.tries, typical)
	// A prune or receive finishes first at times; all of them doing so
	// would leave those kills untested.
	if prunes.landed < 2 || receives.landed < 1 {
		t.Fatalf("too few prunes (%d of %d) or receives (%d of %d) were killed mid-run", prunes.landed, prunes.tries, receives.landed, receives.tries)
	}
	run(t, dir, w("backup", "--store", store, "--file", img)...)
	record()
	check("at the end")
}
