package s3store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"golang.org/x/sys/unix"
)

// releaseTimeout bounds the release of a lock, which runs even when the
// command's context is done (an interrupted backup still releases).
const releaseTimeout = time.Minute

// volLock is a volume lock held by a Store, with what the Store learned
// about the volume's objects when it took it.
type volLock struct {
	s      *Store
	volume string
	l      *s3.Lock
	maxSeq uint64         // the highest seq of any object of the volume
	maxGen map[string]int // highest generation seen, by "<seq>-<id>"

	once sync.Once
	err  error
}

// LockVolume takes the volume's lock object (locks/<DirName(volume)>.lock,
// a conditional create holding this host, pid and time), which a goroutine
// renews while it is held; then it brings the cache of the volume's
// records up to date, and cleans up after interrupted writers of the
// volume: it aborts their multipart uploads and removes the files their
// journals name that no record references (Notify says what).
//
// A lock held elsewhere is a *LockedError (catalog.ErrLocked). A lock
// whose holder is a process of this host that provably no longer runs
// (same boot and pid namespace, and its pid gone or now another
// process's: a run killed with SIGKILL, or by the OOM killer) is broken
// at once, with a warning through Notify. A stale one (not renewed
// within the lock's time to live by the server's clock, or of an older
// thinback of this host whose pid runs no more) is also s3.ErrStaleLock
// and is broken only with Options.BreakStaleLocks. A server that does
// not honour conditional writes fails with s3.ErrNoConditional: nothing
// is written to it.
//
// unlock releases the lock. If the lock was lost while held (broken by
// someone else), writes fail from then on and unlock says so
// (s3.ErrNotHolder).
func (s *Store) LockVolume(volume string) (unlock func() error, err error) {
	vl, err := s.lockVolume(volume)
	if err != nil {
		return nil, err
	}
	if _, err := s.clean(vl); err != nil {
		s.notify("cleaning up volume %s after interrupted runs: %v", volume, err)
	}
	return vl.release, nil
}

// lockVolume takes the lock and syncs the volume, without cleaning up.
func (s *Store) lockVolume(volume string) (*volLock, error) {
	if err := catalog.ValidVolumeName(volume); err != nil {
		return nil, err
	}
	name := lockName(volume)
	s.mu.Lock()
	if _, ok := s.locks[volume]; ok {
		s.mu.Unlock()
		return nil, &LockedError{Volume: volume, Store: s.loc.String(), Object: name,
			Owner: s3.Owner{Host: s.host, PID: os.Getpid(), Since: time.Now().UTC(), Token: "this process"}}
	}
	s.mu.Unlock()
	l, err := s.s3.Lock(s.ctx, name, s.opts.LockTTL)
	var le *s3.LockedError
	if errors.As(err, &le) {
		e := s.lockedError(volume, le)
		if !e.Gone && !((e.Stale || e.Dead) && s.opts.BreakStaleLocks) {
			return nil, e
		}
		if l, err = s.breakLock(e); err != nil {
			return nil, err
		}
	}
	if err != nil {
		return nil, err
	}
	vl := &volLock{s: s, volume: volume, l: l, maxGen: map[string]int{}}
	s.mu.Lock()
	s.locks[volume] = vl
	s.mu.Unlock()
	if err := s.sync(volume); err != nil {
		return nil, errors.Join(err, vl.release())
	}
	return vl, nil
}

// lockedError is the error for the lock object of volume that le found
// held: stale (by the server's clock), Gone (its holder is a process of
// this host that provably no longer runs, see s3.Owner.Gone), or Dead (a
// lock of an older thinback, without the process's identity, whose pid
// runs no more here: probably, not provably, gone).
func (s *Store) lockedError(volume string, le *s3.LockedError) *LockedError {
	e := &LockedError{Volume: volume, Store: s.loc.String(), Object: le.Object, Owner: le.Owner, Stale: le.Stale, lock: le}
	e.Gone, e.Why = le.Owner.Gone()
	e.Dead = e.Gone || (le.Owner.Token != "" && le.Owner.BootID == "" && le.Owner.Host == s.host && le.Owner.PID > 0 &&
		le.Owner.PID != os.Getpid() && !processAlive(le.Owner.PID))
	return e
}

// breakLock removes the lock object e judged stale or gone, if it is
// still the object judged, and takes the lock. A gone holder's lock is
// broken by every run of this host that finds it: the cache's flock
// makes them do it one at a time, so the second finds the first's live
// lock instead of breaking it too.
func (s *Store) breakLock(e *LockedError) (*s3.Lock, error) {
	unlock, err := s.cacheLock()
	if err != nil {
		return nil, fmt.Errorf("%w; breaking it failed: %w", e, err)
	}
	defer unlock()
	owner, err := s.s3.BreakLockIf(s.ctx, e.Object, e.lock.ETag)
	if errors.Is(err, s3.ErrChanged) || errors.Is(err, s3.ErrNotFound) {
		// Renewed, released or taken meanwhile: judge it again.
		l, err := s.s3.Lock(s.ctx, e.Object, s.opts.LockTTL)
		var le *s3.LockedError
		if errors.As(err, &le) {
			return nil, s.lockedError(e.Volume, le)
		}
		return l, err
	}
	if err != nil {
		return nil, fmt.Errorf("%w; breaking it failed: %w", e, err)
	}
	what := "volume " + e.Volume
	if e.Volume == "" {
		what = "the key slots"
	}
	if e.Gone {
		s.notify("warning: broke the lock of %s held by %s: %s on this host, so the run that held it was killed", what, owner, e.Why)
	} else {
		s.notify("broke the stale lock of %s held by %s", what, owner)
	}
	l, err := s.s3.Lock(s.ctx, e.Object, s.opts.LockTTL)
	var le *s3.LockedError
	if errors.As(err, &le) {
		return nil, s.lockedError(e.Volume, le)
	}
	return l, err
}

// processAlive reports whether a process with this pid exists here
// (EPERM: it exists, and belongs to someone else).
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// release releases the lock once.
func (vl *volLock) release() error {
	vl.once.Do(func() {
		vl.s.mu.Lock()
		if vl.s.locks[vl.volume] == vl {
			delete(vl.s.locks, vl.volume)
		}
		vl.s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.WithoutCancel(vl.s.ctx), releaseTimeout)
		defer cancel()
		vl.err = vl.l.Release(ctx)
	})
	return vl.err
}

// held returns the lock this Store holds on volume, or ErrNotLocked; a
// lock that was lost is an error too (s3.ErrNotHolder): the volume may
// have another writer now.
func (s *Store) held(volume string) (*volLock, error) {
	s.mu.Lock()
	vl := s.locks[volume]
	s.mu.Unlock()
	if vl == nil {
		return nil, fmt.Errorf("store %s: write to volume %q: %w", s.loc, volume, ErrNotLocked)
	}
	if err := vl.l.Err(); err != nil {
		return nil, fmt.Errorf("store %s: volume %q: %w; nothing more is written", s.loc, volume, err)
	}
	return vl, nil
}

// writeContext is the Store's context, cancelled with the lock's error
// when the lock is lost: an upload stops as soon as its writer may no
// longer be the only one.
func (vl *volLock) writeContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(vl.s.ctx)
	stop := make(chan struct{})
	go func() {
		select {
		case <-vl.l.Lost():
			cancel(fmt.Errorf("the lock of volume %q was lost: %w", vl.volume, vl.l.Err()))
		case <-stop:
		case <-ctx.Done():
		}
	}()
	return ctx, func() { close(stop); cancel(nil) }
}

// clean removes what interrupted writers of a volume whose lock vl holds
// left: multipart uploads (none can be live: a writer holds the lock),
// and the files their journals name that no record references, then the
// journals. A file no journal names is never removed: if the volume's
// records were lost, its files wait for catalog rebuild. It also notes
// the highest seq and generations of the volume's objects, for the names
// of new files. It returns what it removed, and says it with Notify.
func (s *Store) clean(vl *volLock) ([]string, error) {
	var removed []string
	ups, err := s.s3.AbortUploads(s.ctx, volumePrefix(vl.volume), 0)
	for _, u := range ups {
		removed = append(removed, u.Name+" (unfinished upload)")
	}
	if err != nil {
		return removed, err
	}
	objects := map[string]int64{}
	if err := s.s3.List(s.ctx, volumePrefix(vl.volume), func(oi s3.ObjectInfo) error {
		objects[oi.Name] = oi.Size
		if f, _, ok := parsePiece(oi.Name); ok {
			vl.note(f)
		}
		return nil
	}); err != nil {
		return removed, err
	}
	refs, err := s.referenced(vl.volume)
	if err != nil {
		return removed, err
	}
	l, err := s.listRecords(recordPrefix(vl.volume))
	if err != nil {
		return removed, err
	}
	var firstErr error
	for _, j := range l.journals {
		data, _, err := s.s3.Get(s.ctx, j.Name, maxJournal)
		if errors.Is(err, s3.ErrNotFound) {
			continue
		}
		var jo journalObject
		if err == nil {
			jo, err = decodeJournal(j.Name, data)
			if err != nil {
				err = &DamagedError{Store: s.loc.String(), Object: j.Name, Err: err}
			}
		}
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		gone, err := s.removeUnreferenced(jo.Files, objects, refs)
		removed = append(removed, gone...)
		if err == nil {
			err = s.s3.Delete(s.ctx, j.Name)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	for _, r := range removed {
		s.notify("removed %s, left by an interrupted run", r)
	}
	return removed, firstErr
}

// note records a file name's seq and generation.
func (vl *volLock) note(f catalog.DeltaFile) {
	vl.maxSeq = max(vl.maxSeq, f.Seq)
	key := fmt.Sprintf("%d-%s", f.Seq, f.ID)
	if g, ok := vl.maxGen[key]; !ok || f.Gen > g {
		vl.maxGen[key] = f.Gen
	}
}

// referenced returns the files the cached records of volume name.
func (s *Store) referenced(volume string) (map[string]bool, error) {
	refs := map[string]bool{}
	err := s.View(func(tx *catalog.Tx) error {
		snaps, err := tx.Snapshots(volume)
		for _, sn := range snaps {
			refs[sn.File] = true
		}
		return err
	})
	return refs, err
}

// removeUnreferenced removes every piece (as listed in objects) of each
// of files that refs does not hold, the first piece, which bears the
// file's name, last.
func (s *Store) removeUnreferenced(files []string, objects map[string]int64, refs map[string]bool) ([]string, error) {
	var removed []string
	for _, f := range files {
		if refs[f] {
			continue
		}
		var names []string
		for name := range objects {
			if pf, _, ok := parsePiece(name); ok && pf.Path == f {
				names = append(names, name)
			}
		}
		sort.Sort(sort.Reverse(sort.StringSlice(names)))
		for _, name := range names {
			if err := s.s3.Delete(s.ctx, name); err != nil {
				return removed, err
			}
			delete(objects, name)
			removed = append(removed, name)
		}
	}
	return removed, nil
}
