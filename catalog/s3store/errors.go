package s3store

import (
	"errors"
	"fmt"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// Errors of a store on object storage, besides catalog's and s3's own
// sentinels (which its errors wrap where they fit). Compare with
// errors.Is.
var (
	// ErrNotStore: the address holds no thinback store (no
	// thinback-store.json under its prefix). See NotStoreError.
	ErrNotStore = errors.New("not a thinback store")

	// ErrFormat: a store, record or volume object of a newer format than
	// this thinback reads.
	ErrFormat = errors.New("store object format not supported")

	// ErrNotLocked: a write to a volume whose lock this Store does not
	// hold. Every write holds it (see LockVolume): without it, two
	// writers of one volume could race.
	ErrNotLocked = errors.New("volume is not locked by this process")
)

// NotStoreError names an address without a store.
type NotStoreError struct {
	Store string
}

func (e *NotStoreError) Error() string {
	return fmt.Sprintf("%s is not a thinback store (no %s under it): create it with thinback init, or by a first backup or receive",
		e.Store, storeObjectName)
}

// Is makes errors.Is(err, ErrNotStore) true.
func (e *NotStoreError) Is(target error) bool { return target == ErrNotStore }

// LockedError reports a volume whose lock object someone else holds. It
// matches catalog.ErrLocked, as a local store's lock does, and
// s3.ErrStaleLock when the holder is gone: its lock was not renewed
// within its time to live (by the server's clock), or it is a process of
// this host that no longer runs. A stale lock is released only on
// request (Options.BreakStaleLocks); that of a process of this host that
// provably no longer runs (Gone) is broken by LockVolume itself.
type LockedError struct {
	Volume string // "" for the lock of the key slots (LockKeySlots)
	Store  string
	Object string
	Owner  s3.Owner
	Stale  bool
	Dead   bool   // the holder is a process of this host that no longer runs
	Gone   bool   // ... provably so (see s3.Owner.Gone)
	Why    string // why it is Gone

	lock *s3.LockedError // what the lock object said, when it was read
}

func (e *LockedError) Error() string {
	msg := fmt.Sprintf("volume %q of store %s is locked by %s (lock object %s)", e.Volume, e.Store, e.Owner, e.Object)
	breakIt := ": if no thinback of that host still works on the volume, break it (thinback --break-stale-lock)"
	if e.Volume == "" {
		msg = fmt.Sprintf("the key slots of store %s are being changed by %s (lock object %s)", e.Store, e.Owner, e.Object)
		breakIt = ": if no thinback of that host still changes them, break it (thinback --break-stale-lock)"
	}
	switch {
	case e.Gone:
		msg += "; " + e.Why + ": the lock is stale, left by a run that was killed"
	case e.Dead:
		msg += "; that process no longer runs: the lock is stale, left by a run that was killed" + breakIt
	case e.Stale && e.lock != nil:
		msg += "; " + e.lock.StaleReason() + ": it is stale, its holder has probably died" + breakIt
	case e.Stale:
		msg += "; it is stale, its holder has probably died" + breakIt
	case e.lock != nil && !e.lock.Modified.IsZero():
		msg += fmt.Sprintf(", last renewed %s ago", e.lock.Age.Round(time.Second))
	}
	return msg
}

// Is makes errors.Is match catalog.ErrLocked and s3.ErrLocked, and
// s3.ErrStaleLock when the lock is stale.
func (e *LockedError) Is(target error) bool {
	return target == catalog.ErrLocked || target == s3.ErrLocked || ((e.Stale || e.Dead) && target == s3.ErrStaleLock)
}

// CacheDirError reports a cache directory (the base, or a store's own)
// that is not the running user's, or that group or others may write to.
// Whoever can write to it can change what this machine believes the
// store holds, so it is refused, as ssh refuses such a key directory. It
// matches catalog.ErrNotOwn.
type CacheDirError struct {
	Store   string
	Path    string
	Problem string // "is owned by uid 1000, ...", "is writable by group or others (mode 0775)"
	Fix     string // "chmod 0700 DIR", ...
}

func (e *CacheDirError) Error() string {
	return fmt.Sprintf("cache of store %s: %s %s: refusing to use it; %s, or use another cache directory (thinback --cache DIR)",
		e.Store, e.Path, e.Problem, e.Fix)
}

// Is makes errors.Is(err, catalog.ErrNotOwn) true.
func (e *CacheDirError) Is(target error) bool { return target == catalog.ErrNotOwn }

// DamagedError reports a record, volume or journal object that does not
// decode or does not check. The store goes on without it; verify lists it
// and catalog rebuild recreates records from the delta files.
type DamagedError struct {
	Store  string
	Object string
	Err    error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("store %s: %s is damaged: %v", e.Store, e.Object, e.Err)
}

// Is makes errors.Is(err, catalog.ErrCorrupt) true.
func (e *DamagedError) Is(target error) bool { return target == catalog.ErrCorrupt }

// Unwrap returns what is wrong with it.
func (e *DamagedError) Unwrap() error { return e.Err }
