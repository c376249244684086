package backup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/lvmthin"
)

// Backups of thick (ordinary) LVs, from classic copy-on-write snapshots:
// the chunks written since the base snapshot are listed in its exception
// table and read from the new snapshot.

// Default size of a backup snapshot's copy-on-write store: a share of the
// LV, with a floor, as --snapshot-size documents. The store must hold
// every chunk written to the LV until the next backup: once full, the
// kernel invalidates the snapshot and that backup compares every block.
const (
	defaultSnapshotPercent = 20
	minSnapshotSize        = 1 << 30
)

// snapshotFullWarn is the share of the base snapshot's store in use (in
// percent) above which a backup warns that it may overflow next time.
const snapshotFullWarn = 80

// SnapshotSizeUsage is --snapshot-size's help.
const SnapshotSizeUsage = "for a thick LV, the size of the classic snapshot's copy-on-write store: SIZE (with K, M, G or T, binary) " +
	"or N% of the LV; it must hold every chunk written until the next backup (default 20% of the LV, at least 1G)"

// parseSnapshotSize parses --snapshot-size for an LV of lvSize bytes: ""
// for the default, "N%" of the LV, or a size with an optional K/M/G/T
// suffix (powers of 1024; a bare number is bytes).
func parseSnapshotSize(s string, lvSize int64) (int64, error) {
	if s == "" {
		return max(lvSize*defaultSnapshotPercent/100, minSnapshotSize), nil
	}
	bad := func() (int64, error) {
		return 0, &UsageError{Msg: fmt.Sprintf("--snapshot-size %q: want a size such as 512M, 2G or 25%%", s)}
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		n, err := strconv.ParseFloat(p, 64)
		if err != nil || !(n > 0 && n <= 100) {
			return bad()
		}
		return max(int64(float64(lvSize)*n/100), 1), nil
	}
	mult := int64(1)
	if i := strings.IndexAny(s, "kKmMgGtT"); i >= 0 {
		if i != len(s)-1 && !strings.EqualFold(s[i+1:], "b") && !strings.EqualFold(s[i+1:], "ib") {
			return bad()
		}
		mult = 1 << (10 * (1 + strings.IndexByte("kmgt", byte(strings.ToLower(s[i : i+1])[0]))))
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return bad()
	}
	return n * mult, nil
}

// classicStoreSize rounds want up to whole extents and caps it at what a
// store for the whole origin needs (LVM would cap it too): the data, one
// 16-byte exception per chunk of 4 KiB at worst, and the header.
func classicStoreSize(want, originSize, extent int64) int64 {
	ceil := originSize + originSize/256 + 2*extent
	n := min(want, ceil)
	return (n + extent - 1) / extent * extent
}

// waitPastSecond waits until the clock has passed the whole second of t:
// LVM records a snapshot's creation in whole seconds, and a base and a
// new snapshot of the same second cannot be ordered.
func waitPastSecond(ctx context.Context, t time.Time) error {
	d := time.Until(t.Truncate(time.Second).Add(time.Second))
	if d <= 0 {
		return nil
	}
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ThickSource is an ordinary (thick) LV: a read-only classic snapshot is
// taken, with a copy-on-write store from the VG's free space, and the
// chunks written since the base snapshot are those its exception table
// lists, read from the new snapshot. When the base was invalidated, every
// block is compared with the backup's digests instead.
type ThickSource struct {
	lvSource
	size int64 // of the new snapshot's copy-on-write store
}

// Identify implements Source: the store's name is VG/LV.
func (t *ThickSource) Identify() catalog.Volume {
	return catalog.Volume{Name: t.origin.FullName().String(), UUID: t.origin.UUID, Kind: catalog.KindLVMThick, Source: t.origin.FullName().String(), BlockSize: archive.DefaultBlockSize}
}

// ChooseBase implements Source: the copy-on-write store of the new
// snapshot is sized now, in the VG, while the base's still exists; the
// base is the newest recorded snapshot still in the volume group.
func (t *ThickSource) ChooseBase(ctx context.Context, s catalog.Repository, key *archive.Key, v catalog.Volume) ([]string, error) {
	origin := t.origin
	want, err := parseSnapshotSize(t.o.SnapshotSize, origin.Size)
	if err != nil {
		return nil, err
	}
	vg, err := lvmthin.GetVG(ctx, origin.VG)
	if err != nil {
		return nil, err
	}
	t.size = classicStoreSize(want, origin.Size, vg.ExtentSize)
	if t.size > vg.Free {
		return nil, fmt.Errorf("%s: the snapshot's copy-on-write store needs %s but volume group %s has %s free: "+
			"give a smaller --snapshot-size (it must hold what is written to the LV until the next backup), or extend the VG (vgextend): %w",
			origin.FullName(), BytesHuman(t.size), vg.Name, BytesHuman(vg.Free), lvmthin.ErrNoSpace)
	}
	existing, err := lvmthin.Snapshots(ctx, origin.FullName())
	if err != nil {
		return nil, err
	}
	notes, err := t.chooseBase(s, key, v, existing, "the volume group")
	if err != nil {
		return nil, err
	}
	if t.base != nil {
		if err := waitPastSecond(ctx, t.base.Time); err != nil {
			return notes, err
		}
	}
	return notes, nil
}

// TakeSnapshot implements Source. LVM suspends the origin: every write
// that completed before is in the base's exception table.
func (t *ThickSource) TakeSnapshot(ctx context.Context) error {
	snap, err := lvmthin.CreateClassicSnapshot(ctx, t.origin.FullName(), t.lvName, lvmthin.ClassicSnapshotOptions{Size: t.size, ReadOnly: true})
	if err != nil {
		if snap == nil {
			// lvcreate may have made it and failed later (lvs, activation).
			if lv, lerr := lvmthin.Lookup(context.WithoutCancel(ctx), lvmthin.Name{VG: t.origin.VG, LV: t.lvName}); lerr == nil {
				err = removeUnrecorded(ctx, lv, err)
			}
		}
		return err
	}
	t.snap = snap
	return nil
}

// Discover implements Source: the base's exception table, or the
// backup's digests when the base was invalidated.
func (t *ThickSource) Discover(ctx context.Context, res *Result, newProgress func(int64) Progress) (_ *Delta, err error) {
	snap, base, baseRec := t.snap, t.base, t.baseRec
	res.Method = "full"
	if err := ctx.Err(); err != nil {
		return nil, err // interrupted while the hooks ran
	}
	closeDigests := func() {}
	var baseSize int64
	if base != nil {
		baseSize = baseRec.VolumeSize
	}
	d, err := lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap, Base: base, BaseSize: baseSize})
	var src archive.Source = d
	var ds *archive.DigestSource
	if base != nil && errors.Is(err, lvmthin.ErrBaseInvalid) {
		if d, ds, closeDigests, err = t.digests(ctx, res); err != nil {
			return nil, err
		}
		if ds != nil {
			src = ds
		} else {
			base = nil
			src = d
		}
	} else if err != nil {
		return nil, err
	}
	closeDelta := func() error {
		err := d.Close()
		closeDigests()
		return err
	}
	st := d.Stats()
	if st.BaseStatus != nil && st.BaseStatus.Usage() >= snapshotFullWarn {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the copy-on-write store of base snapshot %s was %.0f%% full (%s): "+
			"once full the kernel invalidates it and a backup must read the whole volume; give a larger --snapshot-size or back up more often",
			base.FullName(), st.BaseStatus.Usage(), BytesHuman(base.Size)))
	}

	var h *archive.Header
	if base != nil {
		h = ClassicHeader(snap, base, t.origin, d.Size())
		h.ParentSize = baseRec.VolumeSize
		if h.Parent.ID, err = record.ParseID(baseRec.ID); err != nil {
			err = fmt.Errorf("snapshot #%d of %s: %w", baseRec.Seq, t.v.Name, err)
		} else {
			err = BindParent(t.key, h, t.baseFile)
		}
		if err != nil {
			if cerr := closeDelta(); cerr != nil {
				err = fmt.Errorf("%w (and closing %s failed: %v)", err, snap.FullName(), cerr)
			}
			return nil, err
		}
		res.Kind, res.Parent, res.Method = "incremental", fmt.Sprintf("#%d", baseRec.Seq), "cow"
		if ds != nil {
			res.Method = "digests"
		}
	} else {
		h = ClassicHeader(snap, nil, t.origin, d.Size())
	}
	h.VolumeName, h.VolumeUUID, h.Tool = t.v.Name, t.origin.UUID, t.o.Tool
	var prog Progress = NoProgress{}
	if ds == nil {
		prog = newProgress(d.Stats().DataBytes)
	}
	return &Delta{
		Header: h, Source: src, Progress: prog, CountWrites: ds == nil,
		Record: catalog.Snapshot{LVName: snap.Name, LVUUID: snap.UUID},
		Close:  closeDelta, Name: snap.FullName().String(),
		Stored: func(rec catalog.Snapshot, res *Result) {
			res.LVSnapshot = snap.FullName().String()
			// Every extent of a classic delta is read, in whole blocks:
			// the file's data and zero blocks are what was read.
			res.BytesRead = rec.DataBytes + rec.ZeroBytes
			if ds != nil {
				res.BytesRead = ds.Stats().Read
			}
		},
	}, nil
}

// digests opens the new snapshot for a backup whose base was
// invalidated: every block is compared with the previous backup's
// digests (ds), or, when its chain cannot be read, sent as a full (ds
// nil). closeDigests closes what it opened besides d.
func (t *ThickSource) digests(ctx context.Context, res *Result) (d *lvmthin.Classic, ds *archive.DigestSource, closeDigests func(), err error) {
	snap, base, baseRec := t.snap, t.base, t.baseRec
	var closers []func()
	closeDigests = func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	// The base's table is incomplete: compare every block of the new
	// snapshot with the previous backup's digests instead.
	res.Fallback = fmt.Sprintf("base snapshot %s was invalidated (its %s copy-on-write store overflowed, or an I/O error)", base.FullName(), BytesHuman(base.Size))
	res.Notes = append(res.Notes, res.Fallback+": compared every block with the backup's digests instead of reading its exception table; "+
		"give a larger --snapshot-size or back up more often")
	prev, _, closeChain, cerr := chainDigests(t.s, t.key, baseRec, t.v.BlockSize)
	if cerr != nil && t.key != nil && IsKeyError(cerr) {
		return nil, nil, nil, baseKeyError(t.s, baseRec, cerr)
	}
	if cerr != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("cannot read the chain of backup #%d (%v): making a full; run thinback verify", baseRec.Seq, cerr))
	} else {
		closers = append(closers, closeChain)
	}
	if d, err = lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap}); err != nil {
		closeDigests()
		return nil, nil, nil, err
	}
	if prev == nil {
		return d, nil, closeDigests, nil
	}
	f, err := archive.OpenFile(d.Snap().DMPath)
	if err != nil {
		d.Close()
		closeDigests()
		return nil, nil, nil, fmt.Errorf("open snapshot %s: %w", snap.FullName(), err)
	}
	closers = append(closers, func() { f.Close() })
	if ds, err = archive.NewDigestSource(f, d.Size(), t.v.BlockSize, prev, archive.DigestSourceOptions{Key: t.key}); err != nil {
		d.Close()
		closeDigests()
		return nil, nil, nil, err
	}
	closers = append(closers, func() { ds.Close() })
	return d, ds, closeDigests, nil
}

// Rotate implements Source: removing the base also ends its
// copy-on-write cost for the origin.
func (t *ThickSource) Rotate(ctx context.Context) []string {
	return removeOlderSnapshots(ctx, t.origin, t.existing, t.snap)
}

// Release implements Source.
func (t *ThickSource) Release() {}

// BytesHuman formats n in binary units.
func BytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ClassicSnapshotSize is the size of a new classic snapshot's
// copy-on-write store of origin, from --snapshot-size (spec, "" for the
// default share of the LV), as backup sizes it: refused with
// lvmthin.ErrNoSpace when the volume group has not that much free.
func ClassicSnapshotSize(ctx context.Context, origin *lvmthin.LV, spec string) (int64, error) {
	want, err := parseSnapshotSize(spec, origin.Size)
	if err != nil {
		return 0, err
	}
	vg, err := lvmthin.GetVG(ctx, origin.VG)
	if err != nil {
		return 0, err
	}
	size := classicStoreSize(want, origin.Size, vg.ExtentSize)
	if size > vg.Free {
		return 0, fmt.Errorf("%s: the snapshot's copy-on-write store needs %s but volume group %s has %s free: "+
			"give a smaller --snapshot-size, or extend the VG (vgextend): %w",
			origin.FullName(), BytesHuman(size), vg.Name, BytesHuman(vg.Free), lvmthin.ErrNoSpace)
	}
	return size, nil
}
