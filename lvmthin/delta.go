package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
)

// ErrBadBase: the base given for an incremental is not an older thin
// snapshot of the same origin in the same pool.
var ErrBadBase = errors.New("lvmthin: unusable base snapshot")

// DeltaOptions say what OpenDelta sends.
type DeltaOptions struct {
	// Snap is the thin snapshot to send (from Lookup). It must be a thin
	// snapshot: thinback never reads a live volume.
	Snap *LV
	// Base is the older thin snapshot of the same origin for an
	// incremental; nil sends a full.
	Base *LV
	// ReleaseStale releases a stale metadata snapshot of the pool first
	// (see ReserveOptions.ReleaseStale).
	ReleaseStale bool
	// NoWait fails with ErrLocked instead of waiting for another thinback
	// working on the same pool.
	NoWait bool
	// Waiting is told when the pool's lock is busy and OpenDelta waits
	// for it (see ReserveOptions.Waiting).
	Waiting func(msg string)
	// TempDir holds the extent list ("" = os.TempDir()).
	TempDir string
	// Discovery says how the metadata is read ("" = DiscoverNative).
	Discovery Discovery
}

// DeltaStats describe an opened delta.
type DeltaStats struct {
	DiscoverStats
	// MetadataSnapHeld is how long the pool's metadata snapshot was held
	// (reserve to release); it is released before OpenDelta returns.
	MetadataSnapHeld time.Duration
	// Activated reports that OpenDelta activated the snapshot (Close
	// deactivates it again).
	Activated bool
}

// Delta is an open delta of a thin snapshot: the extents that changed since
// the base (or all of them for a full) and the snapshot device to read their
// data from. It implements archive.Source.
type Delta struct {
	snap, base *LV
	ext        *Extents
	dev        *deviceReader
	act        *Activation
	ctx        context.Context // OpenDelta's, without its cancellation: for Close's deactivation
	stats      DeltaStats
	closed     bool
}

var _ archive.Source = (*Delta)(nil)

// OpenDelta prepares a send of opts.Snap:
//  1. checks the volumes: Snap must be a thin snapshot; Base, if any, a thin
//     snapshot of the same origin in the same pool, and older than Snap (by
//     lv_time, or by the metadata's creation time when lv_time ties);
//  2. activates Snap if it is inactive (lvchange -ay -K); Snap.Active, as
//     the caller's lookup found it, is trusted, so an active Snap costs no
//     command;
//  3. under the pool's lock, reserves the pool's metadata snapshot, reads
//     the changes (incremental) or the mappings (full) from it, natively
//     or with thin_delta or thin_dump (opts.Discovery), spools the extents
//     and releases the metadata snapshot, whatever happens (errors, panics,
//     SIGINT, SIGTERM);
//  4. opens Snap's device read-only with O_DIRECT.
//
// So the metadata snapshot is released before any data is read, and data
// is only ever read from the newer snapshot's own device: never from the
// origin, which keeps changing, nor from the pool's data device, whose
// blocks the kernel may overwrite in place. Close undoes step 2.
func OpenDelta(ctx context.Context, opts DeltaOptions) (_ *Delta, err error) {
	snap, base := opts.Snap, opts.Base
	if snap == nil {
		return nil, errors.New("open delta: no snapshot given")
	}
	tie, err := checkDeltaPair(snap, base)
	if err != nil {
		return nil, err
	}
	// Guard the whole opening against SIGINT/SIGTERM, not only the
	// metadata snapshot: a signal then also lets the deactivation below
	// run before it takes effect. (Registered first, so it ends last.)
	ctx, finish := newGuardedContext(ctx)
	defer finish()
	d := &Delta{snap: snap, base: base, ctx: context.WithoutCancel(ctx)}
	defer func() {
		if err != nil {
			_ = d.Close()
		}
	}()
	if snap.Active {
		// Active when the caller looked it up moments ago (backup creates
		// it active): no lvs and no lvchange. Opening its device below
		// fails clearly if someone deactivated it since.
		d.act = &Activation{name: snap.FullName()}
	} else if d.act, err = EnsureActive(ctx, snap.FullName()); err != nil {
		return nil, fmt.Errorf("open delta of %s: %w", snap.FullName(), err)
	}
	d.stats.Activated = d.act.Activated()
	if err := d.discover(ctx, opts, tie); err != nil {
		return nil, err
	}
	if d.dev, err = openDevice(snap.DMPath); err != nil {
		return nil, fmt.Errorf("open snapshot %s: %w", snap.FullName(), err)
	}
	if d.dev.Size() < snap.Size {
		return nil, fmt.Errorf("snapshot device %s has %d bytes, LVM says %s has %d",
			snap.DMPath, d.dev.Size(), snap.FullName(), snap.Size)
	}
	return d, nil
}

// discover runs the metadata part of OpenDelta under a metadata snapshot
// that is released when it returns.
func (d *Delta) discover(ctx context.Context, opts DeltaOptions, tie bool) (err error) {
	snap, base := d.snap, d.base
	pool := snap.PoolName()
	ms, err := reserveMetadataSnap(ctx, pool, ReserveOptions{ReleaseStale: opts.ReleaseStale, NoWait: opts.NoWait, Waiting: opts.Waiting}, false)
	if err != nil {
		return fmt.Errorf("open delta of %s: %w", snap.FullName(), err)
	}
	defer func() {
		rerr := ms.Release()
		d.stats.MetadataSnapHeld = ms.Held()
		if rerr != nil {
			if d.ext != nil {
				d.ext.Close()
				d.ext = nil
			}
			err = errors.Join(err, rerr)
		}
	}()
	mctx := ms.Context()
	do := DiscoverOptions{
		Discovery:    opts.Discovery.orDefault(),
		Metadata:     MetadataDevice(pool),
		MetadataSnap: true,
		HeldRoot:     ms.Root(),
		Snap:         ThinDevice{ID: snap.ThinID, Size: snap.Size},
		BlockSize:    snap.ChunkSize,
		TempDir:      opts.TempDir,
	}
	if base != nil {
		do.Base = &ThinDevice{ID: base.ThinID, Size: base.Size}
	}
	if do.Discovery == DiscoverNative {
		err = d.discoverNative(mctx, do, tie)
	} else {
		err = d.discoverTools(mctx, do, tie)
	}
	if err != nil {
		return fmt.Errorf("open delta of %s: %w", snap.FullName(), err)
	}
	d.stats.DiscoverStats = d.ext.Stats()
	return nil
}

// discoverNative reads the metadata snapshot once, for the creation
// times (if tie) and the extents.
func (d *Delta) discoverNative(ctx context.Context, do DiscoverOptions, tie bool) error {
	m, err := openMetadata(do.Metadata, true, do.HeldRoot)
	if err != nil {
		return err
	}
	defer m.Close()
	if tie {
		det, err := deviceDetailsIn(m, d.base.ThinID, d.snap.ThinID)
		if err != nil {
			return err
		}
		if err := d.checkOrder(det); err != nil {
			return err
		}
	}
	d.ext, err = discoverIn(ctx, m, do)
	return err
}

func (d *Delta) discoverTools(ctx context.Context, do DiscoverOptions, tie bool) error {
	if tie {
		det, err := ReadDeviceDetails(ctx, do.Metadata, true, d.base.ThinID, d.snap.ThinID)
		if err != nil {
			return err
		}
		if err := d.checkOrder(det); err != nil {
			return err
		}
	}
	var err error
	d.ext, err = Discover(ctx, do)
	return err
}

// checkOrder checks by the pool's creation times that the base is older
// than the snapshot, when LVM's times tie.
func (d *Delta) checkOrder(det map[uint32]DeviceDetails) error {
	base, snap := d.base, d.snap
	if det[base.ThinID].CreationTime >= det[snap.ThinID].CreationTime {
		return fmt.Errorf("base %s (thin device %d, created at pool time %d) is not older than %s (thin device %d, pool time %d); "+
			"give the older snapshot as the base: %w", base.FullName(), base.ThinID, det[base.ThinID].CreationTime,
			snap.FullName(), snap.ThinID, det[snap.ThinID].CreationTime, ErrBadBase)
	}
	return nil
}

// checkDeltaPair checks what OpenDelta can check from lvs alone. tie
// reports that the creation times are equal (LVM keeps whole seconds), so
// the metadata must decide which snapshot is older.
func checkDeltaPair(snap, base *LV) (tie bool, err error) {
	n := snap.FullName()
	if !snap.IsThinSnapshot() {
		what := "not a thin volume"
		if snap.IsThin() {
			what = "a thin volume, not a snapshot"
		}
		return false, fmt.Errorf("%s is %s (lv_attr %s); thinback reads only thin snapshots, never a live volume: "+
			"snapshot it first (lvcreate -s -n NAME %s) and send the snapshot: %w", n, what, snap.Attr, n, ErrNotThin)
	}
	if snap.ThinID == 0 || snap.ChunkSize <= 0 || snap.DMPath == "" {
		return false, fmt.Errorf("%s: incomplete volume information (thin id %d, pool chunk size %d, dm path %q); use Lookup",
			n, snap.ThinID, snap.ChunkSize, snap.DMPath)
	}
	if base == nil {
		return false, nil
	}
	b := base.FullName()
	switch {
	case !base.IsThinSnapshot():
		return false, fmt.Errorf("base %s is not a thin snapshot (lv_attr %s): %w", b, base.Attr, ErrBadBase)
	case base.UUID == snap.UUID || base.ThinID == snap.ThinID:
		return false, fmt.Errorf("base %s is the snapshot itself: %w", b, ErrBadBase)
	case base.VG != snap.VG || base.Pool != snap.Pool:
		return false, fmt.Errorf("base %s is in thin pool %s, snapshot %s in %s; an incremental needs both in one pool: %w",
			b, base.PoolName(), n, snap.PoolName(), ErrBadBase)
	case base.Origin != snap.Origin:
		return false, fmt.Errorf("base %s is a snapshot of %s, but %s is a snapshot of %s; give a base of the same volume: %w",
			b, base.Origin, n, snap.Origin, ErrBadBase)
	case base.Time.After(snap.Time):
		return false, fmt.Errorf("base %s (created %s) is newer than %s (created %s); give the older snapshot as the base: %w",
			b, base.Time.Format(time.RFC3339), n, snap.Time.Format(time.RFC3339), ErrBadBase)
	}
	return base.Time.Equal(snap.Time), nil
}

// Next returns the next extent, in ascending order, and io.EOF after the
// last.
func (d *Delta) Next() (archive.Extent, error) {
	if d.closed {
		return archive.Extent{}, errDeltaClosed
	}
	return d.ext.Next()
}

// ReadAt reads the snapshot's data. It is safe for concurrent use.
func (d *Delta) ReadAt(p []byte, off int64) (int, error) {
	if d.closed {
		return 0, errDeltaClosed
	}
	n, err := d.dev.ReadAt(p, off)
	return n, snapshotReadError(d.snap, err)
}

// snapshotReadError names the snapshot, and the volume it is of, in a
// failed read of its device (whose own error names only the device-mapper
// node); io.EOF passes through as is.
func snapshotReadError(snap *LV, err error) error {
	if err == nil || err == io.EOF {
		return err
	}
	if snap.Origin == "" {
		return fmt.Errorf("snapshot %s/%s: %w", snap.VG, snap.Name, err)
	}
	return fmt.Errorf("snapshot %s/%s of %s/%s: %w", snap.VG, snap.Name, snap.VG, snap.Origin, err)
}

var errDeltaClosed = errors.New("lvmthin: delta closed")

// Snap returns the snapshot being sent.
func (d *Delta) Snap() *LV { return d.snap }

// Base returns the base of an incremental, nil for a full.
func (d *Delta) Base() *LV { return d.base }

// Size returns the size of the volume the delta describes.
func (d *Delta) Size() int64 { return d.snap.Size }

// Stats describe the delta's discovery.
func (d *Delta) Stats() DeltaStats { return d.stats }

// Close closes the device and the extent list and deactivates the snapshot
// if OpenDelta activated it. It is safe to call more than once.
func (d *Delta) Close() error {
	if d.closed {
		return nil
	}
	d.closed = true
	var errs []error
	if d.dev != nil {
		errs = append(errs, d.dev.Close())
	}
	if d.ext != nil {
		errs = append(errs, d.ext.Close())
	}
	if d.act != nil {
		ctx := d.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		ctx, cancel := context.WithTimeout(ctx, releaseTimeout)
		defer cancel()
		errs = append(errs, d.act.Restore(ctx))
	}
	return errors.Join(errs...)
}
