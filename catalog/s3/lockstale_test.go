package s3

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
	"golang.org/x/sys/unix"
)

// waitServerAge waits until the server's clock is more than d past the
// last write of the object name, as the server itself reports both.
func waitServerAge(t *testing.T, s *Store, name string, d time.Duration) {
	t.Helper()
	ctx := testCtx(t)
	for {
		_, info, err := s.Get(ctx, name, maxLockSize)
		if err != nil {
			t.Fatal(err)
		}
		if info.Date.IsZero() || info.Modified.IsZero() {
			t.Fatalf("the server sends no Date or Last-Modified: %+v", info)
		}
		if info.Date.Sub(info.Modified) > d {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the server's clock never passed %v after the write of %s", d, name)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// TestLockStaleByServerTime: a lock object goes stale when the server's
// clock is past its last write by the time to live, whatever it says:
// one claiming to be valid until 2099, an empty one and one that does not
// decode can all be broken once they have not been written for that long,
// and not before.
func TestLockStaleByServerTime(t *testing.T) {
	srv := s3test.Start(t)
	forever, _ := json.Marshal(Owner{Host: "elsewhere", PID: 1, Since: time.Now().UTC(), Renewed: time.Now().UTC(),
		Expires: time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC), Token: "f0f0"})
	cases := map[string][]byte{"until 2099": forever, "empty": {}, "undecodable": []byte("{not json")}
	for name, data := range cases {
		t.Run(strings.ReplaceAll(name, " ", "-"), func(t *testing.T) {
			t.Parallel()
			s := openTest(t, srv, strings.ReplaceAll(name, " ", "-"))
			ctx := testCtx(t)
			if _, err := s.Put(ctx, "lk", data); err != nil {
				t.Fatal(err)
			}
			const ttl = time.Second
			_, err := s.Lock(ctx, "lk", ttl)
			if !errors.Is(err, ErrLocked) || errors.Is(err, ErrStaleLock) {
				t.Fatalf("lock over a fresh lock object: %v, want locked and not stale", err)
			}
			waitServerAge(t, s, "lk", ttl+dateSlack)
			_, err = s.Lock(ctx, "lk", ttl)
			var le *LockedError
			if !errors.Is(err, ErrStaleLock) || !errors.As(err, &le) {
				t.Fatalf("lock over a lock object not written for longer than its time to live: %v, want stale", err)
			}
			if !strings.Contains(err.Error(), "last written") || !strings.Contains(err.Error(), "server's clock") {
				t.Errorf("message does not say when the lock was last written: %v", err)
			}
			if _, err := s.BreakLockIf(ctx, "lk", le.ETag); err != nil {
				t.Fatalf("break: %v", err)
			}
			l, err := s.Lock(ctx, "lk", time.Minute)
			if err != nil {
				t.Fatalf("lock after break: %v", err)
			}
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestBreakLockIf: a lock object that changed after it was judged stale
// (renewed, or taken by another) is not broken.
func TestBreakLockIf(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	info, err := s.Put(ctx, "lk", []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "lk", []byte(`{"token":"new"}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BreakLockIf(ctx, "lk", info.ETag); !errors.Is(err, ErrChanged) {
		t.Fatalf("break of a changed lock: %v, want ErrChanged", err)
	}
	if got := mustGet(t, s, "lk"); string(got) != `{"token":"new"}` {
		t.Fatalf("the lock object is now %q", got)
	}
}

// TestLockIdentity: a lock object records the boot, the pid namespace
// and the start time of its holder, and its holder, alive, is not Gone;
// a lock object written before those existed still decodes.
func TestLockIdentity(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	l, err := s.Lock(ctx, "lk", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release(ctx)
	o, _, err := s.ReadLock(ctx, "lk")
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	ns, _ := os.Readlink("/proc/self/ns/pid")
	start, _, err := procStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if o.BootID == "" || o.BootID != strings.TrimSpace(string(boot)) || o.PIDNS == "" || o.PIDNS != ns || o.Start == 0 || o.Start != start {
		t.Fatalf("lock object %+v, want boot %q, pid namespace %q, start %d", o, boot, ns, start)
	}
	if gone, why := o.Gone(); gone {
		t.Fatalf("a live holder is gone: %s", why)
	}

	old := `{"host":"h","pid":12,"since":"2026-01-02T03:04:05Z","renewed":"2026-01-02T03:04:05Z","expires":"2026-01-02T03:14:05Z","token":"abc"}`
	if _, err := s.Put(ctx, "old", []byte(old)); err != nil {
		t.Fatal(err)
	}
	o, _, err = s.ReadLock(ctx, "old")
	if err != nil || o.Token != "abc" || o.PID != 12 || o.BootID != "" {
		t.Fatalf("lock object of an older thinback: %+v, %v", o, err)
	}
}

// TestOwnerGone: a holder is Gone only when it is provably a process of
// this boot and pid namespace that no longer runs: killed (reaped or a
// zombie), or its pid now another process's. A live one, one of another
// host, boot or pid namespace, or a lock that recorded none of these, is
// not.
func TestOwnerGone(t *testing.T) {
	cmd := exec.Command("sleep", "1000")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	start, _, err := procStat(pid)
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	live := Owner{Host: host, PID: pid, Token: "t", BootID: bootID(), PIDNS: pidNamespace(), Start: start}
	if live.BootID == "" || live.PIDNS == "" {
		t.Fatalf("no boot ID or pid namespace: %+v", live)
	}
	change := func(f func(*Owner)) Owner { o := live; f(&o); return o }
	for _, c := range []struct {
		name string
		o    Owner
		gone bool
	}{
		{"live", live, false},
		{"pid reused", change(func(o *Owner) { o.Start++ }), true},
		{"another host", change(func(o *Owner) { o.Host += "x"; o.Start++ }), false},
		{"another boot", change(func(o *Owner) { o.BootID = "00000000-0000-4000-8000-000000000000"; o.Start++ }), false},
		{"another pid namespace", change(func(o *Owner) { o.PIDNS = "pid:[1]"; o.Start++ }), false},
		{"no identity (older thinback)", change(func(o *Owner) { o.BootID, o.PIDNS, o.Start = "", "", 0 }), false},
		{"undecodable", Owner{}, false},
	} {
		if gone, why := c.o.Gone(); gone != c.gone {
			t.Errorf("%s: Gone = %v (%s), want %v", c.name, gone, why, c.gone)
		}
	}

	// Killed, not yet reaped: a zombie.
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var si unix.Siginfo
	if err := unix.Waitid(unix.P_PID, pid, &si, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	if gone, why := live.Gone(); !gone || !strings.Contains(why, "exited") {
		t.Errorf("killed, a zombie: Gone = %v (%s), want gone", gone, why)
	}
	// Reaped: no process has the pid.
	_ = cmd.Wait()
	if gone, why := live.Gone(); !gone || !strings.Contains(why, "no longer runs") {
		t.Errorf("killed and reaped: Gone = %v (%s), want gone", gone, why)
	}
}
