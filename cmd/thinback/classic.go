package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
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

const snapshotSizeUsage = "for a thick LV, the size of the classic snapshot's copy-on-write store: SIZE (with K, M, G or T, binary) " +
	"or N% of the LV; it must hold every chunk written until the next backup (default 20% of the LV, at least 1G)"

// parseSnapshotSize parses --snapshot-size for an LV of lvSize bytes: ""
// for the default, "N%" of the LV, or a size with an optional K/M/G/T
// suffix (powers of 1024; a bare number is bytes).
func parseSnapshotSize(s string, lvSize int64) (int64, error) {
	if s == "" {
		return max(lvSize*defaultSnapshotPercent/100, minSnapshotSize), nil
	}
	bad := func() (int64, error) {
		return 0, usageError{msg: fmt.Sprintf("backup: --snapshot-size %q: want a size such as 512M, 2G or 25%%", s)}
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

// classicHeader describes a send of the classic snapshot snap (against
// base, or a full) of origin, of a volume of size bytes.
func classicHeader(snap, base, origin *lvmthin.LV, size int64) *archive.Header {
	h := &archive.Header{
		BlockSize: archive.DefaultBlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.VG + "/" + snap.Origin, VolumeSize: size,
		Snapshot: lvSnapshot(snap), Tool: toolName(),
	}
	h.SetAttr(archive.AttrLVMVG, snap.VG)
	h.SetAttr(archive.AttrLVMKind, archive.LVMKindThick)
	h.SetAttr(archive.AttrLVMOrigin, snap.Origin)
	if origin != nil {
		h.VolumeUUID = origin.UUID
		h.SetAttr(archive.AttrLVMOriginUUID, origin.UUID)
	}
	h.SetAttr(archive.AttrLVMLV, snap.Name)
	h.SetAttr(archive.AttrLVMLVUUID, snap.UUID)
	h.SetAttr(archive.AttrLVMLVTime, snap.Time.UTC().Format(time.RFC3339))
	h.SetAttr(archive.AttrLVMChunkSize, strconv.FormatInt(snap.ChunkSize, 10))
	if base != nil {
		h.Parent, h.ParentSize = lvSnapshot(base), size
		h.SetAttr(archive.AttrLVMParentLV, base.Name)
		h.SetAttr(archive.AttrLVMParentUUID, base.UUID)
	}
	return h
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

func backupClassic(ctx context.Context, e *env, s catalog.Repository, name string, origin *lvmthin.LV, o backupOptions) (_ *backupResult, err error) {
	v, newVol, err := volumeFor(s, catalog.Volume{Name: name, UUID: origin.UUID, Kind: catalog.KindLVMThick, Source: origin.FullName().String(), BlockSize: archive.DefaultBlockSize})
	if err != nil {
		return nil, err
	}
	if v.UUID != origin.UUID {
		return nil, fmt.Errorf("the store's volume %s is the backup of LV uuid %s, but %s has uuid %s (was it recreated?): back it up under another name with --volume", name, v.UUID, origin.FullName(), origin.UUID)
	}
	res := &backupResult{Volume: name, Kind: "full", Method: "full"}

	// The copy-on-write store of the new snapshot is allocated now, in
	// the VG, while the base's still exists.
	want, err := parseSnapshotSize(o.snapshotSize, origin.Size)
	if err != nil {
		return nil, err
	}
	vg, err := lvmthin.GetVG(ctx, origin.VG)
	if err != nil {
		return nil, err
	}
	size := classicStoreSize(want, origin.Size, vg.ExtentSize)
	if size > vg.Free {
		return nil, fmt.Errorf("%s: the snapshot's copy-on-write store needs %s but volume group %s has %s free: "+
			"give a smaller --snapshot-size (it must hold what is written to the LV until the next backup), or extend the VG (vgextend): %w",
			origin.FullName(), bytesHuman(size), vg.Name, bytesHuman(vg.Free), lvmthin.ErrNoSpace)
	}

	existing, err := lvmthin.Snapshots(ctx, origin.FullName())
	if err != nil {
		return nil, err
	}
	base, baseRec, notes, err := newestBase(s, name, existing, "the volume group")
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)
	if base != nil {
		if err := waitPastSecond(ctx, base.Time); err != nil {
			return nil, err
		}
	}

	// Snapshot, between the hooks. LVM suspends the origin: every write
	// that completed before is in the base's exception table.
	lvName := snapshotName(origin, existing, time.Now())
	vars := map[string]string{"THINBACK_VOLUME": name, "THINBACK_SOURCE": origin.FullName().String(), "THINBACK_SNAPSHOT": origin.VG + "/" + lvName}
	if err := runHook(ctx, e, "pre", o.pre, vars); err != nil {
		return nil, err
	}
	snap, err := lvmthin.CreateClassicSnapshot(ctx, origin.FullName(), lvName, lvmthin.ClassicSnapshotOptions{Size: size, ReadOnly: true})
	if postErr := runHook(context.WithoutCancel(ctx), e, "post", o.post, vars); postErr != nil && err == nil {
		err = fmt.Errorf("%w (the snapshot %s/%s was taken)", postErr, origin.VG, lvName)
		if snap != nil {
			err = removeUnrecorded(ctx, snap, err)
		}
		return nil, err
	}
	if err != nil {
		if snap == nil {
			// lvcreate may have made it and failed later (lvs, activation).
			if lv, lerr := lvmthin.Lookup(context.WithoutCancel(ctx), lvmthin.Name{VG: origin.VG, LV: lvName}); lerr == nil {
				err = removeUnrecorded(ctx, lv, err)
			}
		}
		return nil, err
	}
	recorded := false
	defer func() {
		if !recorded && err != nil {
			// Not in the store: it must not become the next base.
			err = removeUnrecorded(ctx, snap, err)
		}
	}()

	if err := ctx.Err(); err != nil {
		return nil, err // interrupted while the hooks ran
	}
	var baseSize int64
	if base != nil {
		baseSize = baseRec.VolumeSize
	}
	d, err := lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap, Base: base, BaseSize: baseSize})
	var src archive.Source = d
	var ds *archive.DigestSource
	if base != nil && errors.Is(err, lvmthin.ErrBaseInvalid) {
		// The base's table is incomplete: compare every block of the new
		// snapshot with the previous backup's digests instead.
		res.Fallback = fmt.Sprintf("base snapshot %s was invalidated (its %s copy-on-write store overflowed, or an I/O error)", base.FullName(), bytesHuman(base.Size))
		res.Notes = append(res.Notes, res.Fallback+": compared every block with the backup's digests instead of reading its exception table; "+
			"give a larger --snapshot-size or back up more often")
		prev, closeChain, cerr := chainDigests(s, baseRec, v.BlockSize)
		if cerr != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("cannot read the chain of backup #%d (%v): making a full; run thinback verify", baseRec.Seq, cerr))
			base = nil
		} else {
			defer closeChain()
		}
		if d, err = lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap}); err != nil {
			return nil, err
		}
		if prev != nil {
			f, err := archive.OpenFile(d.Snap().DMPath)
			if err != nil {
				d.Close()
				return nil, fmt.Errorf("open snapshot %s: %w", snap.FullName(), err)
			}
			defer f.Close()
			if ds, err = archive.NewDigestSource(f, d.Size(), v.BlockSize, prev, archive.DigestSourceOptions{}); err != nil {
				d.Close()
				return nil, err
			}
			defer ds.Close()
			src = ds
		} else {
			src = d
		}
	} else if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil && err != nil {
			err = fmt.Errorf("%w (and closing %s failed: %v)", err, snap.FullName(), cerr)
		}
	}()
	st := d.Stats()
	if st.BaseStatus != nil && st.BaseStatus.Usage() >= snapshotFullWarn {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the copy-on-write store of base snapshot %s was %.0f%% full (%s): "+
			"once full the kernel invalidates it and a backup must read the whole volume; give a larger --snapshot-size or back up more often",
			base.FullName(), st.BaseStatus.Usage(), bytesHuman(base.Size)))
	}

	var h *archive.Header
	if base != nil {
		h = classicHeader(snap, base, origin, d.Size())
		if h.Parent.ID, err = record.ParseID(baseRec.ID); err != nil {
			return nil, fmt.Errorf("snapshot #%d of %s: %w", baseRec.Seq, name, err)
		}
		h.ParentSize = baseRec.VolumeSize
		res.Kind, res.Parent, res.Method = "incremental", fmt.Sprintf("#%d", baseRec.Seq), "cow"
		if ds != nil {
			res.Method = "digests"
		}
	} else {
		h = classicHeader(snap, nil, origin, d.Size())
	}
	h.VolumeName, h.VolumeUUID = name, origin.UUID
	var prog progress = noProgress{}
	total := d.Stats().DataBytes
	if ds == nil {
		prog = newProgress(e.stderr, o.quiet || o.json, "backed up", total)
	}
	rec, err := storeDelta(ctx, s, s.String(), h, src, o.level, prog,
		catalog.Snapshot{LVName: snap.Name, LVUUID: snap.UUID}, newVol)
	prog.Done()
	if err != nil {
		return nil, err
	}
	recorded = true
	if err := d.Close(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the backup is stored, but closing %s failed: %v", snap.FullName(), err))
	}
	res.Snapshot, res.Seq, res.File, res.LVSnapshot = rec.ID, rec.Seq, rec.File, snap.FullName().String()
	// Every extent of a classic delta is read, in whole blocks: the
	// file's data and zero blocks are what was read.
	res.DataBytes, res.ZeroBytes, res.StoredBytes, res.BytesRead = rec.DataBytes, rec.ZeroBytes, rec.FileSize, rec.DataBytes+rec.ZeroBytes
	if ds != nil {
		res.BytesRead = ds.Stats().Read
	}

	// Rotate: the new snapshot is durable in the store; removing the base
	// also ends its copy-on-write cost for the origin.
	res.Warnings = append(res.Warnings, removeOlderSnapshots(ctx, origin, existing, snap)...)
	return res, nil
}

// runSendClassic sends the classic snapshot snap, or what changed since
// the older classic snapshot base of the same origin.
func runSendClassic(ctx context.Context, e *env, o sendOptions, rep *lvmthin.Report, snap, base *lvmthin.LV) error {
	origin, err := originOf(rep, snap)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	d, err := lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap, Base: base})
	if err != nil {
		if errors.Is(err, lvmthin.ErrBaseInvalid) {
			err = fmt.Errorf("%w; its exception table no longer lists every changed chunk: send a full (no --base), or back up with thinback backup, which compares digests then", err)
		}
		return fmt.Errorf("send: %w", err)
	}
	defer d.Close()
	h := classicHeader(d.Snap(), d.Base(), origin, d.Size())
	prog := newProgress(e.stderr, o.quiet, "sent", d.Stats().DataBytes)
	st, err := sendTo(ctx, e, o.out, h, d, o.level, prog, true, lvSources(snap, base, origin))
	prog.Done()
	if err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if !o.quiet {
		ds := d.Stats()
		printable.Sayf(e.stderr, "%s (%d ranges from %s, %d+%d exceptions)", sendSummary(h, st), ds.Ranges, ds.Tool, ds.BaseExceptions, ds.SnapExceptions)
	}
	return nil
}
