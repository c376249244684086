package lvmthin

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func withLockDir(t *testing.T) {
	t.Helper()
	old := lockDir
	lockDir = t.TempDir() + "/locks" // created on demand, as in /run/lock
	t.Cleanup(func() { lockDir = old })
}

func TestLockPoolSerializes(t *testing.T) {
	withLockDir(t)
	pool := Name{"vg-0", "pool"}
	ctx := context.Background()
	first, err := lockPool(ctx, pool, false)
	if err != nil {
		t.Fatal(err)
	}
	// Another holder is refused when not waiting...
	if _, err := lockPool(ctx, pool, true); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock without waiting: %v, want ErrLocked", err)
	}
	// ...and a different pool is independent.
	other, err := lockPool(ctx, Name{"vg-0", "pool2"}, true)
	if err != nil {
		t.Fatalf("lock of another pool: %v", err)
	}
	other.Close()
	// A waiter gives up when its context ends...
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := lockPool(short, pool, false); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting lock: %v, want the deadline", err)
	}
	// ...and gets the lock once the holder lets go.
	var got atomic.Bool
	done := make(chan error, 1)
	go func() {
		f, err := lockPool(ctx, pool, false)
		if err == nil {
			got.Store(true)
			f.Close()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if got.Load() {
		t.Fatal("second holder got the lock while the first held it")
	}
	first.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(lockDir + "/vg--0-pool-tpool.lock"); err != nil {
		t.Errorf("lock file: %v", err)
	}
}

// TestGuardedContext sends itself SIGTERM while a guard is active: the
// guarded context is cancelled, and finish sends the signal again when the
// caller's context did not see it.
func TestGuardedContext(t *testing.T) {
	// Keep the test process alive: with a channel registered, SIGTERM is
	// delivered here instead of killing it.
	mine := make(chan os.Signal, 4)
	signal.Notify(mine, syscall.SIGTERM)
	defer signal.Stop(mine)

	gctx, finish := newGuardedContext(context.Background())
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-gctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("SIGTERM did not cancel the guarded context")
	}
	<-mine
	finish()
	select {
	case <-mine:
	case <-time.After(5 * time.Second):
		t.Fatal("the caught signal was not sent again")
	}
	finish() // a second call does nothing
	select {
	case <-mine:
		t.Fatal("signal sent twice")
	case <-time.After(100 * time.Millisecond):
	}

	// A caller that cancels its own context on the signal (as the CLI
	// does) gets it once only.
	parent, cancel := context.WithCancel(context.Background())
	gctx, finish = newGuardedContext(parent)
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-mine
	cancel()
	<-gctx.Done()
	finish()
	select {
	case <-mine:
		t.Fatal("signal sent again although the caller saw it")
	case <-time.After(200 * time.Millisecond):
	}

	// No signal: the context is cancelled by finish, nothing is sent.
	gctx, finish = newGuardedContext(context.Background())
	finish()
	if gctx.Err() == nil {
		t.Error("finish did not cancel the guarded context")
	}
	select {
	case s := <-mine:
		t.Fatalf("unexpected %v", s)
	case <-time.After(100 * time.Millisecond):
	}
}
