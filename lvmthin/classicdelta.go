package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/cow"
)

// ClassicOptions say what OpenClassic sends.
type ClassicOptions struct {
	// Snap is the classic snapshot to send (from Lookup).
	Snap *LV
	// Base is the older classic snapshot of the same origin, taken at the
	// previous backup, for an incremental; nil sends a full.
	Base *LV
	// BaseSize is the volume's size when Base was sent (the previous delta
	// file's volume size); 0 means Snap's. An origin extended since has no
	// exceptions for its new part, which is then sent whole.
	BaseSize int64
	// TempDir holds the extent list and, for very large exception tables,
	// sorted runs of chunk numbers ("" = os.TempDir()).
	TempDir string
}

// ClassicStats describe an opened classic delta. DiscoverStats' Tool is
// "cow" for an incremental (Ranges counts the runs of changed chunks the
// tables gave, ToolTime how long reading them took, BlockSize is Base's
// chunk size) and "full" for a full.
type ClassicStats struct {
	DiscoverStats
	// BaseExceptions and SnapExceptions count the exceptions of Base's and
	// Snap's tables; MetadataBytes what was read of both.
	BaseExceptions, SnapExceptions int64
	MetadataBytes                  int64
	// BaseStatus and SnapStatus are the snapshots' status before the
	// tables were read (BaseStatus is nil for a full). BaseStatus.Usage()
	// says how full Base's COW store was: a store near 100 % will soon
	// invalidate its snapshot, so the next one wants a larger size.
	BaseStatus, SnapStatus *SnapshotStatus
}

// Classic is an open delta of a classic snapshot: the extents that changed
// since the base (or the whole volume for a full), read from the snapshot.
// It implements archive.Source.
type Classic struct {
	snap, base *LV
	size       int64
	ext        *Extents
	dev        *deviceReader
	stats      ClassicStats
	closed     bool
}

var _ archive.Source = (*Classic)(nil)

// classicAfterRead, if set (by tests), runs after the exception tables
// were read and before the base is checked again.
var classicAfterRead func()

// OpenClassic prepares a send of the classic snapshot opts.Snap:
//  1. lists the volume group again and checks Snap, Base and their origin:
//     Snap and Base classic snapshots of the same origin, Base older (by
//     lv_time, whole seconds: snapshots of the same second are refused as
//     a pair), neither merging, invalid or inactive;
//  2. checks both snapshots' dmsetup status;
//  3. opens Snap's device read-only with O_DIRECT;
//  4. for an incremental, reads Snap's and Base's exception tables from
//     their -cow devices, with O_DIRECT, and takes the union of the chunks
//     they list: every chunk written to the origin since Base was taken
//     (those written after Snap too, which only makes the set larger),
//     to Base since, and to Snap since it was taken: everywhere Snap can
//     differ from what Base held when it was sent;
//  5. checks Base again (header and status): it must still be valid.
//
// Data is read only from Snap's own device, never from the origin, which
// keeps changing. A full reads the whole of Snap (its zero blocks become
// ZERO records in the send).
//
// If Base was invalidated (its COW store overflowed) before or while its
// table was read, the error is ErrBaseInvalid: Snap is still good, and a
// comparison with the previous backup's digests can stand in for the
// table. An invalid Snap is ErrSnapshotInvalid, a merging one
// ErrSnapshotMerging; a corrupt table matches ErrMetadata (and
// cow.ErrCorrupt).
func OpenClassic(ctx context.Context, opts ClassicOptions) (_ *Classic, err error) {
	if opts.Snap == nil {
		return nil, errors.New("open classic delta: no snapshot given")
	}
	n := opts.Snap.FullName()
	lvs, err := listVG(ctx, n.VG)
	if err != nil {
		return nil, fmt.Errorf("open delta of %s: %w", n, err)
	}
	find := func(name Name) *LV {
		for _, lv := range lvs {
			if lv.VG == name.VG && lv.Name == name.LV {
				return lv
			}
		}
		return nil
	}
	snap := find(n)
	if snap == nil {
		return nil, fmt.Errorf("open delta of %s: it no longer exists: %w", n, ErrNotFound)
	}
	var base, origin *LV
	if opts.Base != nil {
		if base = find(opts.Base.FullName()); base == nil {
			return nil, fmt.Errorf("open delta of %s: base %s no longer exists: %w", n, opts.Base.FullName(), ErrNotFound)
		}
	}
	if snap.Origin != "" {
		origin = find(Name{VG: snap.VG, LV: snap.Origin})
	}
	if err := checkClassicPair(snap, base, origin); err != nil {
		return nil, err
	}
	c := &Classic{snap: snap, base: base}
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	if c.stats.SnapStatus, err = GetSnapshotStatus(ctx, n); err != nil {
		return nil, fmt.Errorf("open delta of %s: %w", n, err)
	}
	if err := checkClassicStatus(n, c.stats.SnapStatus, false); err != nil {
		return nil, err
	}
	if base != nil {
		if c.stats.BaseStatus, err = GetSnapshotStatus(ctx, base.FullName()); err != nil {
			return nil, fmt.Errorf("open delta of %s: base: %w", n, err)
		}
		if err := checkClassicStatus(base.FullName(), c.stats.BaseStatus, true); err != nil {
			return nil, err
		}
	}
	if c.dev, err = openDevice(snap.DMPath); err != nil {
		return nil, fmt.Errorf("open snapshot %s: %w", n, err)
	}
	c.size = c.dev.Size()
	if snap.OriginSize != 0 && c.size != snap.OriginSize {
		return nil, fmt.Errorf("snapshot device %s has %d bytes, LVM says the origin of %s has %d",
			snap.DMPath, c.size, n, snap.OriginSize)
	}
	sp, err := newSpool(opts.TempDir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if sp != nil {
			sp.abort()
		}
	}()
	if base == nil {
		c.stats.Tool = "full"
		if err := sp.write(archive.Extent{Offset: 0, Length: c.size, Kind: archive.KindData}); err != nil {
			return nil, err
		}
	} else if err := c.readTables(ctx, sp, opts); err != nil {
		return nil, err
	}
	ranges, tool, toolTime, bs := c.stats.Ranges, c.stats.Tool, c.stats.ToolTime, c.stats.BlockSize
	if c.ext, err = sp.finish(); err != nil {
		return nil, err
	}
	sp = nil
	c.stats.DiscoverStats = c.ext.Stats()
	c.stats.Ranges, c.stats.Tool, c.stats.ToolTime, c.stats.BlockSize = ranges, tool, toolTime, bs
	return c, nil
}

// readTables writes the union of Snap's and Base's exception tables to sp,
// then checks that Base is still valid.
func (c *Classic) readTables(ctx context.Context, sp *spool, opts ClassicOptions) error {
	n, b := c.snap.FullName(), c.base.FullName()
	start := time.Now()
	c.stats.Tool = "cow"
	baseSize := opts.BaseSize
	if baseSize <= 0 || baseSize > c.size {
		baseSize = c.size
	}
	u := &extentUnion{limit: baseSize, out: sp.write}

	// Snap's own table first, into a spool of its own: it is usually
	// tiny (Snap is new), and Base's can then be merged with it on the fly.
	snapSp, err := newSpool(opts.TempDir)
	if err != nil {
		return err
	}
	defer snapSp.abort()
	st, err := c.readTable(n, cow.Options{OriginSize: c.size, TempDir: opts.TempDir}, func(e archive.Extent) error {
		return snapSp.write(e)
	})
	if err != nil {
		if errors.Is(err, cow.ErrInvalidated) {
			return fmt.Errorf("open delta of %s: %w: %w", n, ErrSnapshotInvalid, err)
		}
		return fmt.Errorf("open delta of %s: %w", n, err)
	}
	c.stats.SnapExceptions, c.stats.MetadataBytes, c.stats.Ranges = st.Exceptions, st.MetadataBytes, st.Runs
	snapExt, err := snapSp.finish()
	if err != nil {
		return err
	}
	defer snapExt.Close()
	u.other = snapExt

	st, err = c.readTable(b, cow.Options{OriginSize: c.size, TempDir: opts.TempDir}, u.add)
	if err != nil {
		if errors.Is(err, cow.ErrInvalidated) {
			return fmt.Errorf("open delta of %s: base %w: %w", n, ErrBaseInvalid, err)
		}
		return fmt.Errorf("open delta of %s: base: %w", n, err)
	}
	c.stats.BaseExceptions = st.Exceptions
	c.stats.MetadataBytes += st.MetadataBytes
	c.stats.Ranges += st.Runs
	c.stats.BlockSize = st.Header.ChunkSize()
	if cs := c.base.ChunkSize; cs != 0 && cs != st.Header.ChunkSize() {
		return fmt.Errorf("open delta of %s: %w: the COW store of base %s has chunks of %d bytes, LVM says %d",
			n, ErrMetadata, b, st.Header.ChunkSize(), cs)
	}
	if err := u.finish(c.size); err != nil {
		return err
	}
	c.stats.ToolTime = time.Since(start)

	if classicAfterRead != nil {
		classicAfterRead()
	}
	// Invalidated while we read? Then the table may lack chunks written
	// before Snap was taken, and cannot be trusted.
	bs, err := GetSnapshotStatus(ctx, b)
	if err != nil {
		return fmt.Errorf("open delta of %s: base: %w", n, err)
	}
	if err := checkClassicStatus(b, bs, true); err != nil {
		return err
	}
	dev, err := openDevice(COWDevice(b))
	if err != nil {
		return fmt.Errorf("open delta of %s: base: %w", n, err)
	}
	defer dev.Close()
	if _, err := cow.ReadHeader(dev, dev.Path(), dev.Size()); err != nil {
		if errors.Is(err, cow.ErrInvalidated) {
			return fmt.Errorf("open delta of %s: base %w: %w", n, ErrBaseInvalid, err)
		}
		return fmt.Errorf("open delta of %s: base: %w", n, classicTableError(err))
	}
	return nil
}

// readTable reads the exception table of snapshot s's COW store and calls
// fn with the changed byte ranges of the origin, ascending (clipped to the
// volume: the last chunk may pass its end).
func (c *Classic) readTable(s Name, opts cow.Options, fn func(archive.Extent) error) (cow.Stats, error) {
	dev, err := openDevice(COWDevice(s))
	if err != nil {
		return cow.Stats{}, fmt.Errorf("COW store of %s: %w", s, err)
	}
	defer dev.Close()
	opts.Name, opts.Size = dev.Path(), dev.Size()
	// The header first, for the chunk size the runs are counted in.
	h, err := cow.ReadHeader(dev, opts.Name, opts.Size)
	if err != nil {
		return cow.Stats{Header: h}, classicTableError(err)
	}
	chunk := h.ChunkSize()
	st, err := cow.Read(dev, opts, func(r cow.Run) error {
		off := int64(r.First) * chunk
		end := min(off+int64(r.Count)*chunk, c.size)
		return fn(archive.Extent{Offset: off, Length: end - off, Kind: archive.KindData})
	})
	if err == nil && st.Header != h {
		err = fmt.Errorf("%s: %w: the header changed while the table was read (%+v, then %+v)", opts.Name, ErrMetadata, h, st.Header)
	}
	return st, classicTableError(err)
}

// classicTableError makes errors about a COW store's contents match
// ErrMetadata too (an invalidated store is the caller's to name).
func classicTableError(err error) error {
	if err == nil || errors.Is(err, cow.ErrInvalidated) {
		return err
	}
	var ce *cow.Error
	if errors.As(err, &ce) {
		return metadataError{err}
	}
	return err
}

// extentUnion merges two ascending extent lists (the extents given to
// add, and those of other) into ascending, disjoint, merged DATA extents
// for out, all below limit; finish adds [limit, size) whole.
type extentUnion struct {
	limit   int64
	other   *Extents
	peek    *archive.Extent // other's next extent, read ahead
	pending archive.Extent
	out     func(archive.Extent) error
}

func (u *extentUnion) add(e archive.Extent) error {
	for {
		o, err := u.peekOther()
		if err != nil {
			return err
		}
		if o == nil || o.Offset > e.Offset {
			break
		}
		u.peek = nil
		if err := u.push(*o); err != nil {
			return err
		}
	}
	return u.push(e)
}

func (u *extentUnion) peekOther() (*archive.Extent, error) {
	if u.peek != nil || u.other == nil {
		return u.peek, nil
	}
	e, err := u.other.Next()
	if errors.Is(err, io.EOF) {
		u.other = nil
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	u.peek = &e
	return u.peek, nil
}

// push takes extents in ascending order of offset, overlapping or not.
func (u *extentUnion) push(e archive.Extent) error {
	end := min(e.End(), u.limit)
	if e.Offset >= end {
		return nil
	}
	if u.pending.Length > 0 && e.Offset <= u.pending.End() {
		u.pending.Length = max(u.pending.End(), end) - u.pending.Offset
		return nil
	}
	if err := u.flush(); err != nil {
		return err
	}
	u.pending = archive.Extent{Offset: e.Offset, Length: end - e.Offset, Kind: archive.KindData}
	return nil
}

func (u *extentUnion) flush() error {
	if u.pending.Length == 0 {
		return nil
	}
	err := u.out(u.pending)
	u.pending = archive.Extent{}
	return err
}

// finish drains other and adds the part of the volume past limit.
func (u *extentUnion) finish(size int64) error {
	for {
		o, err := u.peekOther()
		if err != nil {
			return err
		}
		if o == nil {
			break
		}
		u.peek = nil
		if err := u.push(*o); err != nil {
			return err
		}
	}
	if u.limit < size {
		grown := archive.Extent{Offset: u.limit, Length: size - u.limit, Kind: archive.KindData}
		u.limit = size
		if err := u.push(grown); err != nil {
			return err
		}
	}
	return u.flush()
}

// checkClassicPair checks what OpenClassic can check from lvs alone.
func checkClassicPair(snap, base, origin *LV) error {
	n := snap.FullName()
	if k := snap.Kind(); k != KindClassicSnapshot {
		hint := "snapshot it first (lvcreate -s -L SIZE -n NAME " + n.String() + ") and send the snapshot"
		switch k {
		case KindThinSnapshot:
			hint = "it is a thin snapshot: send it with OpenDelta"
		case KindThin:
			hint = "it is a thin volume: take a thin snapshot of it"
		}
		return fmt.Errorf("%s is not a classic snapshot but a %s (lv_attr %s); thinback reads only snapshots, never a live volume: %s: %w",
			n, k, snap.Attr, hint, ErrNotSnapshot)
	}
	if err := checkClassicUsable(snap, origin, false); err != nil {
		return err
	}
	if snap.DMPath == "" {
		return fmt.Errorf("%s: incomplete volume information (dm path %q); use Lookup", n, snap.DMPath)
	}
	if base == nil {
		return nil
	}
	b := base.FullName()
	switch {
	case !base.IsClassicSnapshot():
		return fmt.Errorf("base %s is not a classic snapshot but a %s (lv_attr %s): %w", b, base.Kind(), base.Attr, ErrBadBase)
	case base.UUID == snap.UUID || b == n:
		return fmt.Errorf("base %s is the snapshot itself: %w", b, ErrBadBase)
	case base.VG != snap.VG || base.Origin != snap.Origin:
		return fmt.Errorf("base %s is a snapshot of %s/%s, but %s is a snapshot of %s/%s; give a base of the same volume: %w",
			b, base.VG, base.Origin, n, snap.VG, snap.Origin, ErrBadBase)
	case base.Time.After(snap.Time):
		return fmt.Errorf("base %s (created %s) is newer than %s (created %s); give the older snapshot as the base: %w",
			b, base.Time.Format(time.RFC3339), n, snap.Time.Format(time.RFC3339), ErrBadBase)
	case base.Time.Equal(snap.Time):
		// LVM keeps whole seconds and nothing else orders classic
		// snapshots; guessing wrong would send the wrong chunks.
		return fmt.Errorf("base %s and %s were created in the same second (%s), so LVM cannot tell which is older; "+
			"take the new snapshot again a second later: %w", b, n, snap.Time.Format(time.RFC3339), ErrBadBase)
	}
	return checkClassicUsable(base, origin, true)
}

// checkClassicUsable refuses a classic snapshot that is merging, invalid
// or inactive, by lv_attr.
func checkClassicUsable(s, origin *LV, isBase bool) error {
	n := s.FullName()
	what := "snapshot"
	invalid := ErrSnapshotInvalid
	if isBase {
		what, invalid = "base snapshot", ErrBaseInvalid
	}
	switch {
	case s.IsMerging() || origin != nil && origin.IsMerging():
		return fmt.Errorf("%s %s: a snapshot is merging into %s/%s (lv_attr %s); a merging origin has nothing consistent to send: "+
			"wait for the merge to end (lvs -a %s): %w", what, n, s.VG, s.Origin, originAttr(s, origin), s.VG, ErrSnapshotMerging)
	case s.MergeFailed() || origin != nil && origin.MergeFailed():
		return fmt.Errorf("%s %s: a snapshot merge into %s/%s failed (lv_attr %s); repair it first: %w",
			what, n, s.VG, s.Origin, originAttr(s, origin), ErrSnapshotMerging)
	case s.IsInvalidSnapshot():
		return fmt.Errorf("%s %s is invalid (lv_attr %s): the kernel dropped it when its copy-on-write space filled up "+
			"(or on an I/O error); it needed more than its %d bytes: %w", what, n, s.Attr, s.Size, invalid)
	case !s.Active:
		return fmt.Errorf("%s %s is not active (lv_attr %s); classic snapshots are active with their origin: "+
			"lvchange -ay %s/%s: %w", what, n, s.Attr, s.VG, s.Origin, ErrInactive)
	}
	return nil
}

func originAttr(s, origin *LV) string {
	if origin != nil {
		return origin.Attr
	}
	return s.Attr
}

// checkClassicStatus refuses what a snapshot's dmsetup status says is not
// usable.
func checkClassicStatus(n Name, st *SnapshotStatus, isBase bool) error {
	what := "snapshot"
	invalid := ErrSnapshotInvalid
	if isBase {
		what, invalid = "base snapshot", ErrBaseInvalid
	}
	switch {
	case st.Merging || st.State == SnapshotMergeFailed:
		return fmt.Errorf("%s %s: dmsetup status %q: it is merging into its origin: %w", what, n, st.RawStatusWords, ErrSnapshotMerging)
	case st.State == SnapshotInvalid || st.State == SnapshotOverflow:
		return fmt.Errorf("%s %s is invalid (dmsetup status %s): its copy-on-write space filled up (or an I/O error): %w",
			what, n, st.State, invalid)
	case st.State != SnapshotValid:
		return fmt.Errorf("%s %s: dmsetup status %q: %w: not a persistent snapshot store", what, n, st.RawStatusWords, ErrMetadata)
	}
	return nil
}

// Next returns the next extent, in ascending order, and io.EOF after the
// last.
func (c *Classic) Next() (archive.Extent, error) {
	if c.closed {
		return archive.Extent{}, errDeltaClosed
	}
	return c.ext.Next()
}

// ReadAt reads the snapshot's data, with O_DIRECT. It is safe for
// concurrent use.
func (c *Classic) ReadAt(p []byte, off int64) (int, error) {
	if c.closed {
		return 0, errDeltaClosed
	}
	n, err := c.dev.ReadAt(p, off)
	return n, snapshotReadError(c.snap, err)
}

// Snap returns the snapshot being sent.
func (c *Classic) Snap() *LV { return c.snap }

// Base returns the base of an incremental, nil for a full.
func (c *Classic) Base() *LV { return c.base }

// Size returns the size of the volume: the snapshot device's.
func (c *Classic) Size() int64 { return c.size }

// Stats describe the delta.
func (c *Classic) Stats() ClassicStats { return c.stats }

// Close closes the device and the extent list. It is safe to call more
// than once.
func (c *Classic) Close() error {
	if c.closed {
		return nil
	}
	c.closed = true
	var errs []error
	if c.dev != nil {
		errs = append(errs, c.dev.Close())
	}
	if c.ext != nil {
		errs = append(errs, c.ext.Close())
	}
	return errors.Join(errs...)
}
