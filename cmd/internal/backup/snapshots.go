package backup

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/lvmthin"
)

// The snapshots thinback takes of an LV for its backups, thin or classic:
// how they are named, which one is the base of the next incremental, and
// which are removed once a backup is stored.

// snapshotPrefix starts the name of every snapshot thinback takes of the
// LV origin; rotation removes only LVs named so.
func snapshotPrefix(origin *lvmthin.LV) string { return origin.Name + ".thinback." }

// isOurSnapshot reports whether lv is a snapshot backup took of origin.
// A replica's snapshots are named alike on the receiving host
// (TARGET.thinback.<time>) but carry a replica tag: backing up a replica
// there must not rotate them away.
func isOurSnapshot(lv, origin *lvmthin.LV) bool {
	return lv.Origin == origin.Name && strings.HasPrefix(lv.Name, snapshotPrefix(origin)) && !lvmthin.HasReplicaTag(lv)
}

// NewestBase finds the base of the next incremental of volume name: the
// newest recorded snapshot whose LV is among existing (matched by UUID).
// It returns nil when there is none (a full), and notes saying why the
// newest backup's snapshot was not used; where names the place the
// snapshots live ("the pool", "the volume group"). The base's record must
// describe its file (baseFile): an incremental is made from the sizes
// the record gives, and one made from a record out of step with its file
// could never be restored. In an encrypted store (key not nil) the
// base's file must also be one the key wrote: one that is not
// (IsKeyError) fails the run, before any snapshot is taken. The Base
// returned is what the incremental must follow (BindParent).
func NewestBase(s catalog.Repository, key *archive.Key, name string, existing []*lvmthin.LV, where string) (*lvmthin.LV, catalog.Snapshot, *Base, []string, error) {
	byUUID := map[string]*lvmthin.LV{}
	for _, lv := range existing {
		byUUID[lv.UUID] = lv
	}
	var base *lvmthin.LV
	var baseRec catalog.Snapshot
	var notes []string
	err := s.View(func(tx *catalog.Tx) error {
		snaps, err := tx.Snapshots(name)
		if err != nil {
			return err
		}
		for i := len(snaps) - 1; i >= 0; i-- {
			if lv := byUUID[snaps[i].LVUUID]; lv != nil && snaps[i].LVUUID != "" {
				base, baseRec = lv, snaps[i]
				if i != len(snaps)-1 {
					notes = append(notes, fmt.Sprintf("the snapshot of the newest backup (#%d, %s) is gone from %s: sending from #%d", snaps[len(snaps)-1].Seq, snaps[len(snaps)-1].LVName, where, snaps[i].Seq))
				}
				return nil
			}
		}
		if len(snaps) > 0 {
			notes = append(notes, fmt.Sprintf("the snapshot of the newest backup (#%d, %s) is gone from %s: making a full", snaps[len(snaps)-1].Seq, snaps[len(snaps)-1].LVName, where))
		}
		return nil
	})
	var bf *Base
	if err == nil && base != nil {
		var ferr error
		if bf, ferr = baseFile(s, key, baseRec); ferr != nil {
			if key != nil && IsKeyError(ferr) {
				return nil, catalog.Snapshot{}, nil, notes, baseKeyError(s, baseRec, ferr)
			}
			notes = append(notes, fmt.Sprintf("backup #%d cannot be the base (%v): making a full; run thinback verify", baseRec.Seq, ferr))
			base, baseRec, bf = nil, catalog.Snapshot{}, nil
		}
	}
	return base, baseRec, bf, notes, err
}

// baseKeyError is the error of a backup whose base, snapshot rec of an
// encrypted store, is not a file the store's key wrote.
func baseKeyError(s catalog.Repository, rec catalog.Snapshot, err error) error {
	return fmt.Errorf("the base of this backup, snapshot #%d %s of %s, is not a file this store's key wrote: %w; "+
		"nothing was written. Someone with access to store %s put it there, or altered it: see thinback verify --store %s",
		rec.Seq, rec.ID, rec.Volume, err, s, s)
}

// removeOlderSnapshots removes thinback's snapshots of origin other than
// keep, once keep's backup is durable in the store: the next incremental
// needs only keep. Snapshots thinback did not make are never touched. It
// returns a warning for each one it could not remove. existing are this
// run's records, so no lvs is run again (RemoveSnapshotLV).
func removeOlderSnapshots(ctx context.Context, origin *lvmthin.LV, existing []*lvmthin.LV, keep *lvmthin.LV) []string {
	var warnings []string
	for _, lv := range existing {
		if isOurSnapshot(lv, origin) && lv.UUID != keep.UUID {
			if err := lvmthin.RemoveSnapshotLV(ctx, lv); err != nil {
				warnings = append(warnings, fmt.Sprintf("the backup is stored, but the old snapshot %s could not be removed (the next backup tries again; or lvremove it): %v", lv.FullName(), err))
			}
		}
	}
	return warnings
}

// removeUnrecorded removes a snapshot thinback took for a backup that
// failed (err): it is in no store, so it must not stay on the pool. A
// failed removal is added to err, with what to do.
func removeUnrecorded(ctx context.Context, snap *lvmthin.LV, err error) error {
	if rerr := lvmthin.RemoveSnapshotLV(context.WithoutCancel(ctx), snap); rerr != nil {
		return fmt.Errorf("%w\nand the snapshot %s, which is in no store, could not be removed: %v; remove it with lvremove %s",
			err, snap.FullName(), rerr, snap.FullName())
	}
	return err
}

// lvSource is what the thin and the thick source share: the LV backed
// up, the snapshots thinback took of it, the base and the new snapshot.
type lvSource struct {
	origin *lvmthin.LV
	rep    *lvmthin.Report // the run's one lvs report of the volume group
	o      LVOptions

	// Set by ChooseBase, NextSnapshot and TakeSnapshot.
	s        catalog.Repository
	key      *archive.Key // of an encrypted store
	v        catalog.Volume
	existing []*lvmthin.LV
	base     *lvmthin.LV
	baseRec  catalog.Snapshot
	baseFile *Base
	lvName   string
	snap     *lvmthin.LV
}

// CheckVolume implements Source: an LV recreated under the same name is
// another volume.
func (l *lvSource) CheckVolume(v catalog.Volume) ([]string, error) {
	if v.UUID != l.origin.UUID {
		return nil, fmt.Errorf("the store's volume %s is the backup of LV uuid %s, but %s has uuid %s (was it recreated?): back it up under another name with --volume", v.Name, v.UUID, l.origin.FullName(), l.origin.UUID)
	}
	return nil, nil
}

// chooseBase picks the newest recorded snapshot among existing.
func (l *lvSource) chooseBase(s catalog.Repository, key *archive.Key, v catalog.Volume, existing []*lvmthin.LV, where string) ([]string, error) {
	l.s, l.key, l.v, l.existing = s, key, v, existing
	var notes []string
	var err error
	l.base, l.baseRec, l.baseFile, notes, err = NewestBase(s, key, v.Name, existing, where)
	return notes, err
}

// NextSnapshot implements Source: LV.thinback.<UTC time>.
func (l *lvSource) NextSnapshot() string {
	if l.lvName == "" {
		l.lvName = lvmthin.SnapshotName(snapshotPrefix(l.origin), l.existing, time.Now())
	}
	return l.origin.VG + "/" + l.lvName
}

// Origin implements Source.
func (l *lvSource) Origin() string { return l.origin.FullName().String() }

// Live implements Source: an LV is read from a snapshot.
func (l *lvSource) Live() bool { return false }

// RemoveSnapshot implements Source.
func (l *lvSource) RemoveSnapshot(ctx context.Context, err error) error {
	if l.snap == nil {
		return err
	}
	return removeUnrecorded(ctx, l.snap, err)
}
