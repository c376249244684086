package backup

import (
	"context"
	"fmt"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/lvmthin"
)

// ThinSource is a thin LV: a read-only thin snapshot is taken, and the
// blocks changed since the base snapshot are found in the pool's
// metadata and read from the new snapshot.
type ThinSource struct {
	lvSource
	d *lvmthin.Delta
}

// Identify implements Source: the store's name is VG/LV.
func (t *ThinSource) Identify() catalog.Volume {
	return catalog.Volume{Name: t.origin.FullName().String(), UUID: t.origin.UUID, Kind: catalog.KindLVMThin, Source: t.origin.FullName().String(), BlockSize: ThinBlockSize(t.origin.ChunkSize)}
}

// ChooseBase implements Source: the newest recorded snapshot still on the
// pool.
func (t *ThinSource) ChooseBase(_ context.Context, s catalog.Repository, key *archive.Key, v catalog.Volume) ([]string, error) {
	existing, err := t.rep.Snapshots(t.origin.FullName())
	if err != nil {
		return nil, err
	}
	return t.chooseBase(s, key, v, existing, "the pool")
}

// TakeSnapshot implements Source: read-only, and created active, for the
// delta to read (no lvchange -ay).
func (t *ThinSource) TakeSnapshot(ctx context.Context) error {
	snap, err := lvmthin.CreateSnapshotOf(ctx, t.origin, t.lvName, lvmthin.SnapshotOptions{ReadOnly: true, Activate: true})
	if err != nil {
		return err
	}
	t.snap = snap
	return nil
}

// Discover implements Source: the pool's metadata says what changed.
func (t *ThinSource) Discover(ctx context.Context, res *Result, newProgress func(int64) Progress) (_ *Delta, err error) {
	snap, base := t.snap, t.base
	d, err := lvmthin.OpenDelta(ctx, lvmthin.DeltaOptions{Snap: snap, Base: base, ReleaseStale: t.o.ReleaseStale, Discovery: t.o.Discovery, Waiting: t.o.Waiting})
	if err != nil {
		return nil, err
	}
	t.d = d
	h := ThinHeader(snap, base, t.origin)
	h.VolumeName, h.VolumeUUID, h.Tool = t.v.Name, t.origin.UUID, t.o.Tool
	if base != nil {
		if h.Parent.ID, err = record.ParseID(t.baseRec.ID); err != nil {
			err = fmt.Errorf("snapshot #%d of %s: %w", t.baseRec.Seq, t.v.Name, err)
		} else {
			err = BindParent(t.key, h, t.baseFile)
		}
		if err != nil {
			if cerr := d.Close(); cerr != nil {
				err = fmt.Errorf("%w (and closing %s failed: %v)", err, snap.FullName(), cerr)
			}
			return nil, err
		}
		res.Kind, res.Parent = "incremental", fmt.Sprintf("#%d", t.baseRec.Seq)
	}
	return &Delta{
		Header: h, Source: d,
		Progress: newProgress(d.Stats().DataBytes), CountWrites: true,
		Record: catalog.Snapshot{LVName: snap.Name, LVUUID: snap.UUID, ThinID: int64(snap.ThinID)},
		Close:  d.Close, Name: snap.FullName().String(),
		Stored: func(_ catalog.Snapshot, res *Result) {
			ds := d.Stats()
			res.LVSnapshot, res.BytesRead = snap.FullName().String(), ds.DataBytes
			res.Discovery, res.MetadataBytes, res.MetadataSnapHeld = string(ds.Discovery), ds.MetadataBytes, ds.MetadataSnapHeld.Seconds()
		},
	}, nil
}

// Rotate implements Source: thinback's older snapshots are removed, and
// the new one is left inactive, as LVM leaves a new thin snapshot.
func (t *ThinSource) Rotate(ctx context.Context) []string {
	warnings := removeOlderSnapshots(ctx, t.origin, t.existing, t.snap)
	if derr := lvmthin.Deactivate(context.WithoutCancel(ctx), t.snap.FullName()); derr != nil {
		warnings = append(warnings, fmt.Sprintf("the backup is stored, but its snapshot %s could not be deactivated: %v", t.snap.FullName(), derr))
	}
	return warnings
}

// Release implements Source.
func (t *ThinSource) Release() {}
