package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// lockDir holds one lock file per thin pool: a directory of thinback's
// own (see privateLockDir), not the world-writable /run/lock, where
// another user could plant a link for root to create a file through, or
// hold a pool's lock to stop the backups. /run is a tmpfs, so the files
// vanish at boot, when no process can hold them anyway. Tests move it.
var lockDir = "/run/thinback"

// releaseTimeout bounds the release of a metadata snapshot, which runs on a
// context of its own because the caller's may be cancelled already.
const releaseTimeout = 60 * time.Second

// ReserveOptions tune ReserveMetadataSnap.
type ReserveOptions struct {
	// ReleaseStale releases a metadata snapshot the pool already holds
	// (left by a killed run, or by another program) before reserving. Only
	// the user can know that no other program uses it, so this is an
	// explicit choice (thinback: --release-stale-metadata-snap).
	ReleaseStale bool
	// NoWait fails with ErrLocked instead of waiting when another process
	// holds the pool's lock.
	NoWait bool
	// Waiting, if set, is called once when the pool's lock is busy and
	// Reserve waits for it, with a line naming the holder (pid, command,
	// since when).
	Waiting func(msg string)
}

// MetadataSnap is a reserved metadata snapshot of a thin pool: a frozen,
// consistent copy of the pool's mappings that thin_delta -m and thin_dump -m
// read while the pool stays in use. It must be released as soon as
// possible: while held, the pool's metadata and data usage grow, and the
// hold survives crashes and reboots.
type MetadataSnap struct {
	pool     Name
	root     uint64
	lock     *os.File
	reserved time.Time
	ctx      context.Context
	finish   func() // ends the signal guard, if the snapshot has its own

	once    sync.Once
	held    time.Duration
	release error
}

// ReserveMetadataSnap reserves the pool's metadata snapshot
// (`dmsetup message <vg>-<pool>-tpool 0 reserve_metadata_snap`).
//
// It first takes the pool's lock (a flock under /run/thinback), so two
// thinback processes never both hold a snapshot of one pool, then checks
// the pool's status: a pool in failure, read-only or out-of-data-space mode
// is refused with ErrPoolFailed, ErrPoolReadOnly or ErrPoolOutOfSpace; a
// snapshot already held, which under the lock cannot be ours, is refused
// with ErrStaleMetadataSnap unless opts.ReleaseStale.
//
// The caller must call Release, best with defer right away; Release works
// even when ctx is cancelled. Between Reserve and Release, SIGINT and
// SIGTERM cancel the snapshot's Context instead of killing the process;
// Release then passes the signal on if ctx did not see it (see
// newGuardedContext), so a program without signal handling still ends,
// with the snapshot released.
func ReserveMetadataSnap(ctx context.Context, pool Name, opts ReserveOptions) (*MetadataSnap, error) {
	return reserveMetadataSnap(ctx, pool, opts, true)
}

// reserveMetadataSnap is ReserveMetadataSnap; with ownGuard false the
// caller already guards ctx against signals (newGuardedContext) and passes
// the guarded context, so that it can finish its own clean-up before a
// caught signal is sent again.
func reserveMetadataSnap(ctx context.Context, pool Name, opts ReserveOptions, ownGuard bool) (_ *MetadataSnap, err error) {
	lock, err := lockPoolWaiting(ctx, pool, opts.NoWait, opts.Waiting)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	st, err := GetPoolStatus(ctx, pool)
	if err != nil {
		return nil, err
	}
	if err := st.usable(pool); err != nil {
		return nil, err
	}
	if st.MetadataSnapHeld() {
		if !opts.ReleaseStale {
			return nil, staleError(pool, st.HeldRoot)
		}
		if err := releaseMessage(ctx, pool); err != nil {
			return nil, fmt.Errorf("release stale metadata snapshot of thin pool %s: %w", pool, err)
		}
	}

	// From here the snapshot may exist: catch termination signals before
	// sending the message, so none can kill us between reserve and release.
	m := &MetadataSnap{pool: pool, lock: lock, ctx: ctx, finish: func() {}}
	if ownGuard {
		m.ctx, m.finish = newGuardedContext(ctx)
	}
	m.reserved = time.Now()
	// Never interrupted: dmsetup killed after the ioctl would leave us
	// not knowing whether we hold a snapshot. It takes milliseconds, the
	// ioctl microseconds.
	if err := dmMessage(context.WithoutCancel(ctx), poolDMName(pool), "reserve_metadata_snap"); err != nil {
		defer m.finish()
		switch {
		case errors.Is(err, ErrMetadataSnapBusy):
			// Someone outside our lock (another tool) took it between
			// our status check and our message.
			return nil, fmt.Errorf("reserve metadata snapshot of thin pool %s: another program holds one: %w", pool, err)
		case errors.Is(err, errMessageRefused):
			if st, serr := GetPoolStatus(context.WithoutCancel(ctx), pool); serr == nil {
				if uerr := st.usable(pool); uerr != nil {
					return nil, uerr
				}
			}
		}
		return nil, fmt.Errorf("reserve metadata snapshot of thin pool %s: %w", pool, err)
	}
	st, err = GetPoolStatus(context.WithoutCancel(ctx), pool)
	if err == nil && !st.MetadataSnapHeld() {
		err = fmt.Errorf("%w: pool status shows no held metadata root after reserve_metadata_snap", ErrMetadata)
	}
	if err == nil {
		m.root = st.HeldRoot
		err = ctx.Err() // cancelled meanwhile: give it back at once
	}
	if err != nil {
		m.lock = nil // closed by the deferred clean-up above
		return nil, errors.Join(fmt.Errorf("reserve metadata snapshot of thin pool %s: %w", pool, err), m.Release())
	}
	return m, nil
}

// staleError explains a held metadata snapshot we did not take, and the
// ways out.
func staleError(pool Name, root uint64) error {
	return fmt.Errorf("thin pool %s holds a metadata snapshot (root block %d) that this run did not take, "+
		"probably left by a killed backup; if no other program is using it, release it "+
		"(thinback --release-stale-metadata-snap, or: dmsetup message %s 0 release_metadata_snap): %w",
		pool, root, poolDMName(pool), ErrStaleMetadataSnap)
}

// Context returns the context to run the work under the snapshot with: the
// one given to Reserve, also cancelled when SIGINT or SIGTERM arrives while
// the snapshot is held.
func (m *MetadataSnap) Context() context.Context { return m.ctx }

// Pool returns the pool the snapshot belongs to.
func (m *MetadataSnap) Pool() Name { return m.pool }

// Root returns the metadata block of the held snapshot, as the pool status
// reports it.
func (m *MetadataSnap) Root() uint64 { return m.root }

// Held returns how long the snapshot has been held (until Release once
// released).
func (m *MetadataSnap) Held() time.Duration {
	if m.held != 0 {
		return m.held
	}
	return time.Since(m.reserved)
}

// Release releases the metadata snapshot and the pool's lock. It sends
// the message on a fresh context with a timeout, so a cancelled caller
// context (a signal) does not stop it. It is safe to call more than once;
// later calls return the first result.
func (m *MetadataSnap) Release() error {
	m.once.Do(func() {
		m.release = m.releaseHeld()
		m.held = time.Since(m.reserved)
		if m.lock != nil {
			if cerr := m.lock.Close(); cerr != nil && m.release == nil {
				m.release = fmt.Errorf("unlock thin pool %s: %w", m.pool, cerr)
			}
		}
		m.finish()
	})
	return m.release
}

// releaseHeld sends release_metadata_snap, after checking that the held
// snapshot is still the one we reserved (m.root, when known): releasing
// someone else's would pull metadata from under their reader.
func (m *MetadataSnap) releaseHeld() error {
	// A fresh deadline, but the values (the command count) of the
	// reserving context.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(m.ctx), releaseTimeout)
	defer cancel()
	st, err := GetPoolStatus(ctx, m.pool)
	if err != nil {
		return fmt.Errorf("release metadata snapshot of thin pool %s: %w", m.pool, err)
	}
	if !st.MetadataSnapHeld() {
		if m.root == 0 {
			return nil // the reserve never happened
		}
		return fmt.Errorf("release metadata snapshot of thin pool %s: it was released by someone else", m.pool)
	}
	if m.root != 0 && st.HeldRoot != m.root {
		return fmt.Errorf("release metadata snapshot of thin pool %s: held root is %d, ours was %d; not releasing another's: %w",
			m.pool, st.HeldRoot, m.root, ErrStaleMetadataSnap)
	}
	if err := releaseMessage(ctx, m.pool); err != nil {
		return fmt.Errorf("release metadata snapshot of thin pool %s (release it by hand: dmsetup message %s 0 release_metadata_snap): %w",
			m.pool, poolDMName(m.pool), err)
	}
	return nil
}

func releaseMessage(ctx context.Context, pool Name) error {
	return dmMessage(ctx, poolDMName(pool), "release_metadata_snap")
}

// ReleaseStale releases a metadata snapshot held by the pool that no
// thinback process holds (under the pool's lock, so a running thinback's
// snapshot is never taken away: the call waits for it, unless NoWait). It
// reports whether there was one to release.
func ReleaseStale(ctx context.Context, pool Name, opts ReserveOptions) (released bool, err error) {
	lock, err := lockPoolWaiting(ctx, pool, opts.NoWait, opts.Waiting)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	st, err := GetPoolStatus(ctx, pool)
	if err != nil {
		return false, err
	}
	if !st.MetadataSnapHeld() {
		return false, nil
	}
	if err := releaseMessage(ctx, pool); err != nil {
		if errors.Is(err, errNoMetadataSnap) {
			return false, nil
		}
		return false, fmt.Errorf("release stale metadata snapshot of thin pool %s: %w", pool, err)
	}
	return true, nil
}

// lockPool takes the pool's exclusive lock, waiting (polling, so that ctx
// can interrupt it) unless noWait. The lock is an flock on a file named
// after the pool's dm name, in lockDir (checked by privateLockDir, and
// never reached through a link: see openLockFile): it dies with the
// process, so a killed thinback never leaves it taken, and the descriptor
// is close-on-exec, so no child keeps it. The holder writes who it is
// into the file; a process that finds the lock busy names it.
func lockPool(ctx context.Context, pool Name, noWait bool) (*os.File, error) {
	return lockPoolWaiting(ctx, pool, noWait, nil)
}

// lockPoolWaiting is lockPool that calls waiting, if set, once when it
// starts waiting, with a line naming the holder.
func lockPoolWaiting(ctx context.Context, pool Name, noWait bool, waiting func(string)) (*os.File, error) {
	if err := privateLockDir(lockDir); err != nil {
		return nil, fmt.Errorf("lock thin pool %s: %w", pool, err)
	}
	path := filepath.Join(lockDir, poolDMName(pool)+".lock")
	f, err := openLockFile(path)
	if err != nil {
		return nil, fmt.Errorf("lock thin pool %s: %w", pool, err)
	}
	delay := 10 * time.Millisecond
	for polls := 0; ; {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			if err := writeHolder(f); err != nil {
				f.Close()
				return nil, fmt.Errorf("lock thin pool %s: write %s: %w", pool, path, err)
			}
			return f, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock thin pool %s (%s): %w", pool, path, err)
		}
		if noWait {
			h, _ := readHolder(f)
			f.Close()
			return nil, fmt.Errorf("thin pool %s is in use by another thinback process, %s (lock %s); try again when it has finished: %w",
				pool, h, path, ErrLocked)
		}
		// The holder names itself just after it takes the lock: give it
		// a few polls to do so before saying who it is.
		if h, known := readHolder(f); waiting != nil && (known || polls >= 5) {
			waiting(fmt.Sprintf("thin pool %s is in use by another thinback process, %s (lock %s): waiting for it", pool, h, path))
			waiting = nil
		}
		polls++
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			h, _ := readHolder(f)
			f.Close()
			return nil, fmt.Errorf("waiting for the lock of thin pool %s (%s), held by %s: %w", pool, path, h, ctx.Err())
		case <-t.C:
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// newGuardedContext returns a context derived from ctx that SIGINT and
// SIGTERM cancel instead of killing the process, so that the deferred
// releases and deactivations of an operation run. finish ends the guard;
// if a signal was caught and ctx itself was not cancelled (the program does
// not handle signals), finish sends the signal again, so the program ends
// as it would have, only after cleaning up. Signals the process ignores (a
// background job's SIGINT) stay ignored.
func newGuardedContext(ctx context.Context) (guarded context.Context, finish func()) {
	gctx, cancel := context.WithCancel(ctx)
	g := &signalGuard{ch: make(chan os.Signal, 1), done: make(chan struct{}), exited: make(chan struct{})}
	var sigs []os.Signal
	for _, s := range []os.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if !signal.Ignored(s) {
			sigs = append(sigs, s)
		}
	}
	signal.Notify(g.ch, sigs...)
	go func() {
		defer close(g.exited)
		select {
		case g.sig = <-g.ch:
			cancel()
		case <-g.done:
		}
	}()
	var once sync.Once
	return gctx, func() {
		once.Do(func() {
			cancel()
			if sig, ok := g.stop().(syscall.Signal); ok && ctx.Err() == nil {
				raise(sig)
			}
		})
	}
}

// raise sends sig to the calling thread, so that it is handled before
// raise returns: a process-directed kill(2) would be delivered at some
// later point, and the program could go on (and exit with another status)
// in between. Without a handler of the program's own, Go's runtime then
// ends the process as the signal's default action would.
func raise(sig syscall.Signal) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	_ = syscall.Tgkill(os.Getpid(), syscall.Gettid(), sig)
}

type signalGuard struct {
	ch     chan os.Signal
	done   chan struct{}
	exited chan struct{}
	sig    os.Signal // written by the goroutine before exited is closed
}

// stop ends the guard and returns the signal it caught, if any.
func (g *signalGuard) stop() os.Signal {
	signal.Stop(g.ch)
	close(g.done)
	<-g.exited
	if g.sig == nil {
		select {
		case g.sig = <-g.ch:
		default:
		}
	}
	return g.sig
}
