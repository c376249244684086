package s3

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestLockExclusive(t *testing.T) {
	srv := s3test.Start(t)
	a := openTest(t, srv, "st")
	b := openTest(t, srv, "st") // another client: no state shared with a
	ctx := testCtx(t)

	la, err := a.Lock(ctx, "locks/vg0+vm1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.Lock(ctx, "locks/vg0+vm1", time.Minute)
	var le *LockedError
	if !errors.Is(err, ErrLocked) || errors.Is(err, ErrStaleLock) || !errors.As(err, &le) {
		t.Fatalf("second lock: %v", err)
	}
	host, _ := os.Hostname()
	if le.Owner.PID != os.Getpid() || le.Owner.Host != host || le.Owner.Token != la.Owner().Token || le.Object != "locks/vg0+vm1" {
		t.Fatalf("locked error names %+v", le)
	}
	if !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(err.Error(), a.String()) {
		t.Fatalf("message does not name the holder and store: %v", err)
	}
	// Other names are independent.
	lo, err := b.Lock(ctx, "locks/vg0+vm2", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := lo.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
	select {
	case <-la.Lost():
	default:
		t.Fatal("Lost not closed after Release")
	}
	lb, err := b.Lock(ctx, "locks/vg0+vm1", time.Minute)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("left behind: %v", keys)
	}
}

// TestLockRace has clients with separate state race for one lock, round
// after round: exactly one wins each time.
func TestLockRace(t *testing.T) {
	srv := s3test.Start(t)
	const clients = 6
	var stores []*Store
	for range clients {
		stores = append(stores, openTest(t, srv, "race"))
	}
	ctx := testCtx(t)
	for round := range 8 {
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			winners []*Lock
			others  int
		)
		start := make(chan struct{})
		for _, s := range stores {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				l, err := s.Lock(ctx, "lock", time.Minute)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners = append(winners, l)
				case errors.Is(err, ErrLocked):
					others++
				default:
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 || others != clients-1 {
			t.Fatalf("round %d: %d winners, %d locked out", round, len(winners), others)
		}
		if err := winners[0].Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLockTwoProcesses races two processes (this test binary run again)
// for one lock: one wins, the other is told who holds it.
func TestLockTwoProcesses(t *testing.T) {
	srv := s3test.Start(t)
	loc := srv.Location("proc")
	type child struct {
		cmd   *exec.Cmd
		stdin interface{ Close() error }
		out   *bufio.Scanner
		write func(string)
	}
	var kids []*child
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.v=false")
		cmd.Env = append(os.Environ(), "THINBACK_S3_LOCK_HELPER="+loc)
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		kids = append(kids, &child{cmd: cmd, stdin: in, out: bufio.NewScanner(out),
			write: func(s string) { _, _ = in.Write([]byte(s)) }})
	}
	line := func(c *child) string {
		if !c.out.Scan() {
			t.Fatalf("child %d: no output: %v", c.cmd.Process.Pid, c.out.Err())
		}
		return c.out.Text()
	}
	// rest is what a child said after an unexpected line: its test log.
	rest := func(c *child) string {
		var b strings.Builder
		for c.out.Scan() {
			b.WriteString(c.out.Text() + "\n")
		}
		return b.String()
	}
	for _, c := range kids {
		if l := line(c); l != "ready" {
			t.Fatalf("child says %q\n%s", l, rest(c))
		}
	}
	for _, c := range kids {
		c.write("go\n")
	}
	var winner, loser *child
	var loserSays string
	for _, c := range kids {
		switch l := line(c); {
		case l == "won":
			winner = c
		case strings.HasPrefix(l, "locked "):
			loser, loserSays = c, l
		default:
			t.Fatalf("child %d: %q\n%s", c.cmd.Process.Pid, l, rest(c))
		}
	}
	if winner == nil || loser == nil {
		t.Fatal("not one winner and one loser")
	}
	if want := fmt.Sprintf("locked pid=%d", winner.cmd.Process.Pid); loserSays != want {
		t.Fatalf("loser says %q, want %q", loserSays, want)
	}
	winner.stdin.Close()
	if l := line(winner); l != "released" {
		t.Fatalf("winner says %q", l)
	}
	if err := winner.cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("lock object left: %v", keys)
	}
}

// TestLockHelperProcess is the other process of TestLockTwoProcesses.
func TestLockHelperProcess(t *testing.T) {
	locStr := os.Getenv("THINBACK_S3_LOCK_HELPER")
	if locStr == "" {
		t.Skip("helper process of TestLockTwoProcesses")
	}
	loc, err := ParseLocation(locStr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := Open(ctx, loc, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	// Probe before the race so both processes race on the lock alone.
	if err := s.ProbeConditional(ctx); err != nil {
		t.Fatal(err)
	}
	in := bufio.NewScanner(os.Stdin)
	fmt.Println("ready")
	in.Scan()
	l, err := s.Lock(ctx, "volume.lock", time.Minute)
	var le *LockedError
	switch {
	case err == nil:
		fmt.Println("won")
	case errors.As(err, &le):
		fmt.Printf("locked pid=%d\n", le.Owner.PID)
		return
	default:
		t.Fatal(err)
	}
	for in.Scan() {
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	fmt.Println("released")
}

// TestLockStale: a holder that stops renewing leaves a stale lock, which
// is reported with its owner and not taken over; BreakLock removes it;
// the old holder then finds out at its next renewal and cannot release
// the new holder's lock.
func TestLockStale(t *testing.T) {
	srv := s3test.Start(t)
	a := openTest(t, srv, "")
	b := openTest(t, srv, "")
	ctx := testCtx(t)
	la, err := a.Lock(ctx, "lk", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	// The holder "dies": its renewals stop.
	la.stopped.Do(func() { close(la.stop) })
	la.wg.Wait()
	// Stale by the time to live it declared, shorter than the taker's.
	waitServerAge(t, a, "lk", 300*time.Millisecond+dateSlack)
	_, err = b.Lock(ctx, "lk", time.Minute)
	var le *LockedError
	if !errors.Is(err, ErrStaleLock) || !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.Owner.Token != la.Owner().Token {
		t.Fatalf("lock over a stale one: %v", err)
	}
	if !strings.Contains(err.Error(), "time to live of 300ms") {
		t.Fatalf("message does not say the lock outlived its time to live: %v", err)
	}
	owner, err := b.BreakLock(ctx, "lk")
	if err != nil || owner.Token != la.Owner().Token {
		t.Fatalf("break: %+v, %v", owner, err)
	}
	lb, err := b.Lock(ctx, "lk", time.Minute)
	if err != nil {
		t.Fatalf("lock after break: %v", err)
	}
	if err := la.Renew(ctx); !errors.Is(err, ErrNotHolder) {
		t.Fatalf("renew of a broken lock: %v", err)
	}
	select {
	case <-la.Lost():
	default:
		t.Fatal("Lost not closed")
	}
	if !errors.Is(la.Err(), ErrNotHolder) {
		t.Fatalf("Err: %v", la.Err())
	}
	if err := la.Release(ctx); err != nil && !errors.Is(err, ErrNotHolder) {
		t.Fatalf("release of a broken lock: %v", err)
	}
	if owner, _, err := b.ReadLock(ctx, "lk"); err != nil || owner.Token != lb.Owner().Token {
		t.Fatalf("the new holder's lock: %+v, %v", owner, err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.BreakLock(ctx, "lk"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("break of no lock: %v", err)
	}
}

// TestLockRenews: a held lock's expiry moves forward by itself.
func TestLockRenews(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	l, err := s.Lock(ctx, "lk", 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	first := l.Owner().Expires
	for i := 0; ; i++ {
		o, _, err := s.ReadLock(ctx, "lk")
		if err != nil {
			t.Fatal(err)
		}
		if o.Expires.After(first) {
			break
		}
		if i == 3000 {
			t.Fatal("the lock was never renewed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-l.Lost():
		t.Fatalf("lost: %v", l.Err())
	default:
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestLockDamaged: a lock object that does not decode still counts as
// held, and can be broken.
func TestLockDamaged(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "lk", []byte("{not json")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "lk", time.Minute); !errors.Is(err, ErrLocked) {
		t.Fatalf("lock over a damaged lock object: %v", err)
	}
	if _, err := s.BreakLock(ctx, "lk"); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "lk", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	_ = l.Release(ctx)
}
