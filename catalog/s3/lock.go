package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Owner is what a lock object holds: who took it and until when it is
// valid unless renewed. Token tells two holders apart even on one host
// with a reused pid. BootID, PIDNS and Start identify the process beyond
// its pid (see Gone); locks written before they existed lack them.
type Owner struct {
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Since   time.Time `json:"since"`
	Renewed time.Time `json:"renewed"`
	Expires time.Time `json:"expires"`
	Token   string    `json:"token"`

	BootID string `json:"boot_id,omitempty"` // the kernel's boot ID when the lock was taken
	PIDNS  string `json:"pid_ns,omitempty"`  // the pid namespace PID is numbered in
	Start  uint64 `json:"start,omitempty"`   // the process's start time, clock ticks after boot
}

func (o Owner) String() string {
	if o.Token == "" {
		return "an unknown holder (the lock object does not decode)"
	}
	return fmt.Sprintf("host %s pid %d since %s", o.Host, o.PID, o.Since.Format(time.RFC3339))
}

// maxLockSize bounds what is read of a lock object.
const maxLockSize = 64 << 10

// LockedError reports a lock object held by someone else. Stale means
// the object was last written (Modified, by the server's clock) longer
// ago than the lock's time to live: its holder stopped renewing it. What
// the holder wrote in it (its expiry) can make a lock stale sooner,
// never keep it from going stale: a lock object claiming to be valid
// until 2099, or one that does not decode, goes stale like any other.
type LockedError struct {
	Store  string
	Object string
	Owner  Owner
	Stale  bool

	ETag     string        // of the lock object judged
	Modified time.Time     // when it was last written, by the server's clock
	Age      time.Duration // how long ago that was, by the server's clock
	TTL      time.Duration // the time to live it was judged by
}

func (e *LockedError) Error() string {
	msg := fmt.Sprintf("store %s: %s is locked by %s", e.Store, e.Object, e.Owner)
	if e.Stale {
		return msg + "; " + e.StaleReason() + ", so its holder has probably died: break it once you are sure no thinback of that host still runs"
	}
	if !e.Modified.IsZero() {
		msg += fmt.Sprintf(", last renewed %s ago", e.Age.Round(time.Second))
	}
	return msg
}

// StaleReason says why a stale lock is: "it was last written 12m0s ago
// (2026-12-07T03:00:00Z, by the server's clock), longer than its time to
// live of 10m0s".
func (e *LockedError) StaleReason() string {
	return fmt.Sprintf("it was last written %s ago (%s, by the server's clock), longer than its time to live of %s",
		e.Age.Round(time.Second), e.Modified.UTC().Format(time.RFC3339), e.TTL)
}

// Is makes errors.Is match ErrLocked, and ErrStaleLock when stale.
func (e *LockedError) Is(target error) bool {
	return target == ErrLocked || (e.Stale && target == ErrStaleLock)
}

// dateSlack is the resolution of the HTTP dates Modified and Date are
// read from: a lock is judged stale only that much after its time to
// live, so rounding never makes a live lock look stale.
const dateSlack = time.Second

// judge returns the error for a lock object held by owner, of which info
// was read, for a taker whose locks live ttl: stale if the server's clock
// (info.Date, or this machine's if the server sent none) is more than
// the time to live past the object's last write. The time to live is
// ttl, or the shorter one the holder declared (Expires - Renewed, a
// difference of its own clock's readings, so no clock is compared with
// another).
func (s *Store) judge(name string, owner Owner, info ObjectInfo, ttl time.Duration) *LockedError {
	e := &LockedError{Store: s.loc.String(), Object: name, Owner: owner, ETag: info.ETag, Modified: info.Modified, TTL: ttl}
	if d := owner.Expires.Sub(owner.Renewed); owner.Token != "" && d > 0 && d < ttl {
		e.TTL = d
	}
	if info.Modified.IsZero() {
		// A server that gives no Last-Modified: only the holder's own
		// word is left.
		e.Stale = !owner.Expires.IsZero() && time.Now().After(owner.Expires)
		return e
	}
	now := info.Date
	if now.IsZero() {
		now = time.Now()
	}
	e.Age = max(now.Sub(info.Modified), 0) // the two dates are rounded differently
	e.Stale = e.Age > e.TTL+dateSlack
	return e
}

// Lock is a held lock object. While it is held a goroutine renews it
// every third of its time to live; if a renewal finds the lock no longer
// ours, or the lock expires before a renewal gets through, Lost is
// closed and Err says why: the holder must stop writing.
type Lock struct {
	s    *Store
	name string
	ttl  time.Duration

	mu    sync.Mutex
	owner Owner
	etag  string
	err   error // why the lock was lost

	lost    chan struct{}
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// Lock takes the lock object name with a conditional create, valid for
// ttl unless renewed. If another holder has it the error is a
// *LockedError (ErrLocked, and ErrStaleLock if it was not renewed within
// ttl by the server's clock, see LockedError): a stale lock is reported,
// never taken over; BreakLock removes it. A server that
// ignores conditional writes fails with ErrNoConditional.
func (s *Store) Lock(ctx context.Context, name string, ttl time.Duration) (*Lock, error) {
	if ttl <= 0 {
		return nil, s.op("lock", name, fmt.Errorf("time to live %v is not positive", ttl))
	}
	host, _ := os.Hostname()
	var tok [16]byte
	if _, err := rand.Read(tok[:]); err != nil {
		return nil, s.op("lock", name, err)
	}
	now := time.Now().UTC()
	me := Owner{Host: host, PID: os.Getpid(), Since: now, Renewed: now, Expires: now.Add(ttl), Token: hex.EncodeToString(tok[:])}
	identify(&me)
	data, err := json.Marshal(me)
	if err != nil {
		return nil, s.op("lock", name, err)
	}
	// A lock released between our create and our read of it gives us
	// another go; three rounds of that is a storm, not bad luck.
	for range 3 {
		info, err := s.Create(ctx, name, data)
		if err == nil {
			return s.held(ctx, name, ttl, me, info.ETag), nil
		}
		if !errors.Is(err, ErrExist) {
			return nil, err
		}
		owner, info, err := s.ReadLock(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil && owner.Token == "" && !errors.Is(err, errLockDecode) {
			return nil, err
		}
		if owner.Token == me.Token {
			// Our create went through but its answer was lost, and
			// minio-go's retry met our own object.
			return s.held(ctx, name, ttl, me, info.ETag), nil
		}
		return nil, s.judge(name, owner, info, ttl)
	}
	return nil, s.op("lock", name, errors.New("the lock object keeps appearing and vanishing"))
}

func (s *Store) held(ctx context.Context, name string, ttl time.Duration, me Owner, etag string) *Lock {
	l := &Lock{s: s, name: name, ttl: ttl, owner: me, etag: etag,
		lost: make(chan struct{}), stop: make(chan struct{})}
	l.wg.Add(1)
	go l.keep(context.WithoutCancel(ctx))
	return l
}

var errLockDecode = errors.New("lock object does not decode")

// ReadLock returns the owner written in a lock object; ErrNotFound if
// there is none. A lock object that does not decode gives an Owner with
// no Token and an error, so it still counts as held.
func (s *Store) ReadLock(ctx context.Context, name string) (Owner, ObjectInfo, error) {
	data, info, err := s.Get(ctx, name, maxLockSize)
	if err != nil {
		return Owner{}, info, err
	}
	var o Owner
	if err := json.Unmarshal(data, &o); err != nil || o.Token == "" {
		return Owner{}, info, &Error{Op: "read lock", Store: s.loc.String(), Object: name,
			Err: fmt.Errorf("%w: %v", errLockDecode, err)}
	}
	return o, info, nil
}

// BreakLock removes a lock object whoever holds it and returns the owner
// it named: the explicit, logged way out of a stale lock. Breaking the
// lock of a holder that is still alive lets two writers in: its next
// renewal notices (ErrNotHolder) and it stops, but not before.
func (s *Store) BreakLock(ctx context.Context, name string) (Owner, error) {
	owner, _, err := s.ReadLock(ctx, name)
	if err != nil && !errors.Is(err, errLockDecode) {
		return Owner{}, err
	}
	return owner, s.Delete(ctx, name)
}

// BreakLockIf is BreakLock of the lock object as it was judged: if the
// object's ETag is no longer etag (renewed, or broken and taken by
// another meanwhile) nothing is removed and the error matches
// ErrChanged.
func (s *Store) BreakLockIf(ctx context.Context, name, etag string) (Owner, error) {
	owner, info, err := s.ReadLock(ctx, name)
	if err != nil && !errors.Is(err, errLockDecode) {
		return Owner{}, err
	}
	if info.ETag != etag {
		return owner, &Error{Op: "break lock", Store: s.loc.String(), Object: name, Kind: ErrChanged,
			Err: errors.New("the lock object changed since it was judged: not breaking it")}
	}
	return owner, s.Delete(ctx, name)
}

// Name returns the lock object's name.
func (l *Lock) Name() string { return l.name }

// Owner returns what the lock object says now.
func (l *Lock) Owner() Owner {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.owner
}

// Lost is closed when the lock is no longer this holder's.
func (l *Lock) Lost() <-chan struct{} { return l.lost }

// Err returns why the lock was lost, or nil while it is held.
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

func (l *Lock) lose(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
		close(l.lost)
	}
}

// keep renews the lock until Release, every third of its time to live,
// retrying failed renewals at the next tick until the lock would expire.
func (l *Lock) keep(ctx context.Context) {
	defer l.wg.Done()
	t := time.NewTicker(max(l.ttl/3, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-l.lost:
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, max(l.ttl/3, time.Second))
		err := l.Renew(rctx)
		cancel()
		if err == nil || errors.Is(err, ErrNotHolder) {
			continue // lose has been called for ErrNotHolder
		}
		if time.Now().After(l.Owner().Expires) {
			l.lose(&Error{Op: "renew lock", Store: l.s.loc.String(), Object: l.name, Kind: ErrNotHolder,
				Err: fmt.Errorf("the lock expired before a renewal got through: %w", err)})
		}
	}
}

// Renew pushes the lock's expiry ttl from now. It checks first that the
// lock object is still ours, then replaces it only if unchanged since
// (If-Match), so a holder whose lock was broken and taken by another
// never overwrites the new holder's. Such a holder gets ErrNotHolder,
// and Lost is closed.
func (l *Lock) Renew(ctx context.Context) error {
	if err := l.Err(); err != nil {
		return err
	}
	cur, info, err := l.s.ReadLock(ctx, l.name)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, errLockDecode) {
		return err
	}
	me := l.Owner()
	if err != nil || cur.Token != me.Token {
		e := l.notHolder("renew lock", cur, err)
		l.lose(e)
		return e
	}
	now := time.Now().UTC()
	me.Renewed, me.Expires = now, now.Add(l.ttl)
	data, err := json.Marshal(me)
	if err != nil {
		return l.s.op("renew lock", l.name, err)
	}
	ni, err := l.s.Replace(ctx, l.name, info.ETag, data)
	if errors.Is(err, ErrChanged) || errors.Is(err, ErrNotFound) {
		e := l.notHolder("renew lock", Owner{}, err)
		l.lose(e)
		return e
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.owner, l.etag = me, ni.ETag
	l.mu.Unlock()
	return nil
}

func (l *Lock) notHolder(op string, cur Owner, cause error) error {
	what := "the lock object is gone"
	switch {
	case cur.Token != "":
		what = "the lock object now names " + cur.String()
	case cause != nil && errors.Is(cause, ErrChanged):
		what = "the lock object changed under us"
	case cause != nil && errors.Is(cause, errLockDecode):
		what = "the lock object no longer decodes"
	}
	return &Error{Op: op, Store: l.s.loc.String(), Object: l.name, Kind: ErrNotHolder,
		Err: fmt.Errorf("%s: it was broken", what)}
}

// Release stops the renewals and removes the lock object if it is still
// ours. If it is not (it was broken, maybe taken by another) nothing is
// removed and the error matches ErrNotHolder. Release twice is a no-op.
func (l *Lock) Release(ctx context.Context) error {
	first := false
	l.stopped.Do(func() { close(l.stop); first = true })
	l.wg.Wait()
	if !first {
		return nil
	}
	if err := l.Err(); err != nil {
		return err
	}
	cur, _, err := l.s.ReadLock(ctx, l.name)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, errLockDecode) {
		return err
	}
	if err != nil || cur.Token != l.Owner().Token {
		e := l.notHolder("release lock", cur, err)
		l.lose(e)
		return e
	}
	if err := l.s.Delete(ctx, l.name); err != nil {
		return err
	}
	l.lose(&Error{Op: "lock", Store: l.s.loc.String(), Object: l.name, Kind: ErrNotHolder, Err: errors.New("released")})
	return nil
}
