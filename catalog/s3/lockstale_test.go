package s3

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
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
