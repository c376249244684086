package s3store

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

// TestLockGone: which locks of this host LockVolume breaks by itself. One
// whose process provably no longer runs (its pid now another process's,
// or no process's) is broken with a warning, without
// BreakStaleLocks; one of a live process never, not even with it; one of
// an older thinback (no boot ID or start time) whose pid runs no more is
// stale, broken only on request; one of another host is left alone while
// it is renewed.
func TestLockGone(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testCtx(t)
	a, b := newHost(t, srv), newHost(t, srv)
	sa := a.open()
	unlock := lock(t, sa, "v")
	live, _, err := sa.s3.ReadLock(ctx, lockName("v"))
	if err != nil {
		t.Fatal(err)
	}
	unlock()
	if live.BootID == "" || live.Start == 0 {
		t.Fatalf("the lock object does not identify its process: %+v", live)
	}
	put := func(o s3.Owner) {
		t.Helper()
		data, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sa.s3.Put(ctx, lockName("v"), data); err != nil {
			t.Fatal(err)
		}
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	deadPID := dead.Process.Pid
	breaking := func(o *Options) { o.BreakStaleLocks = true }
	var le *LockedError

	// A live process of this host (this one, through another lock): not
	// even the flag breaks its lock.
	o := live
	o.Token = "another run"
	put(o)
	_, err = b.open(breaking).LockVolume("v")
	if !errors.As(err, &le) || !errors.Is(err, catalog.ErrLocked) || errors.Is(err, s3.ErrStaleLock) || le.Gone {
		t.Fatalf("lock of a live process: %v, want locked, neither stale nor gone", err)
	}

	// Its pid now runs another process (another start time): broken at
	// once, with a warning.
	o.Start++
	put(o)
	b.takeNotes()
	lock(t, b.open(), "v")()
	if notes := strings.Join(b.takeNotes(), "\n"); !strings.Contains(notes, "warning: broke the lock") || !strings.Contains(notes, "now another process") {
		t.Fatalf("notes do not warn of the broken lock:\n%s", notes)
	}

	// No process has its pid any more: the same.
	o.PID = deadPID
	put(o)
	lock(t, b.open(), "v")()
	if notes := strings.Join(b.takeNotes(), "\n"); !strings.Contains(notes, "warning: broke the lock") || !strings.Contains(notes, "no longer runs") {
		t.Fatalf("notes do not warn of the broken lock:\n%s", notes)
	}

	// An older thinback's lock, without boot ID and start time: its pid
	// running no more proves nothing (a reboot, another pid namespace),
	// so it is stale, and broken only on request.
	old := o
	old.BootID, old.PIDNS, old.Start = "", "", 0
	put(old)
	_, err = b.open().LockVolume("v")
	if !errors.As(err, &le) || !errors.Is(err, s3.ErrStaleLock) || !le.Dead || le.Gone || !strings.Contains(err.Error(), "--break-stale-lock") {
		t.Fatalf("older lock of a dead pid: %v, want stale, naming --break-stale-lock", err)
	}
	lock(t, b.open(breaking), "v")()
	if notes := strings.Join(b.takeNotes(), "\n"); !strings.Contains(notes, "broke the stale lock") {
		t.Fatalf("notes do not report the broken lock:\n%s", notes)
	}

	// Another host's lock, renewed: left alone, whatever its pid.
	other := o
	other.Host += ".elsewhere"
	put(other)
	_, err = b.open(breaking).LockVolume("v")
	if !errors.As(err, &le) || errors.Is(err, s3.ErrStaleLock) || le.Gone || le.Dead {
		t.Fatalf("another host's lock: %v, want locked, not stale", err)
	}
}
