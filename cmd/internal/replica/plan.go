package replica

import (
	"errors"
	"fmt"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/restore"
)

// Local is a replication snapshot on the source's host.
type Local struct {
	ID   archive.ID
	Name string
	Time time.Time
}

// Plan is what a run sends.
type Plan struct {
	Mode Mode
	// Snap is the snapshot sent when it exists already (a resumed or
	// repeated transfer); nil: a new snapshot is taken.
	Snap *Local
	// Base is the incremental's base; nil for a full.
	Base *Local
	// From is where a resumed transfer starts.
	From int64
	// Rollback and Overwrite are Transfer's.
	Rollback, Overwrite bool
	// Notes say why the plan is not the obvious one.
	Notes []string
}

// ModifiedError refuses a target written to since its snapshot, in ZFS's
// words; it is restore.ErrModified.
type ModifiedError struct {
	Dest   string // the target and its host, as the user gave it
	Held   archive.Snapshot
	Change Change
}

func (e *ModifiedError) Error() string {
	held := ""
	if !e.Held.ID.IsZero() {
		held = " " + e.Held.Describe()
	}
	return fmt.Sprintf("destination %s has been modified since most recent snapshot%s (%s): run with --rollback to discard those changes, or replicate to another LV",
		e.Dest, held, e.Change.String())
}

// Is makes a ModifiedError restore.ErrModified.
func (e *ModifiedError) Is(target error) bool { return target == restore.ErrModified }

// ErrMissing is a target that does not exist, without --create.
var ErrMissing = errors.New("replica target does not exist")

// Choose decides what a run sends to a target holding h, from the source's
// replication snapshots local (oldest first). rollback is --rollback;
// resume says whether the source can send a resumed delta (from an
// offset): without it an interrupted transfer is sent again whole, which
// the receiver takes as the same apply run again.
//
//   - A transfer the target can continue, whose snapshot (and base) the
//     source still has: that transfer again (resumed from the offset the
//     target has made durable).
//   - A target modified since its snapshot: refused (a *ModifiedError)
//     unless rollback, when a thin target is rolled back to its snapshot
//     and one of another kind gets a full.
//   - The snapshot the target holds still on the source: an incremental
//     from it.
//   - Otherwise: a full.
func Choose(h Holding, local []Local, dest string, rollback, resume bool) (Plan, error) {
	find := func(id archive.ID) *Local {
		for i := len(local) - 1; i >= 0; i-- {
			if local[i].ID == id && !id.IsZero() {
				l := local[i]
				return &l
			}
		}
		return nil
	}
	var p Plan
	if h.Kind == KindMissing {
		return Plan{Mode: Full}, nil
	}
	if pa := h.Partial; pa != nil && h.Modified == nil {
		snap, base := find(pa.Snapshot.ID), find(pa.Parent)
		switch {
		case snap == nil:
			p.Notes = append(p.Notes, fmt.Sprintf("the interrupted transfer of %s cannot be continued: that snapshot is gone from the source", pa.Snapshot.Describe()))
		case !pa.Parent.IsZero() && base == nil:
			p.Notes = append(p.Notes, fmt.Sprintf("the interrupted transfer of %s cannot be continued: its base is gone from the source", pa.Snapshot.Describe()))
		case resume && pa.Done > 0:
			return Plan{Mode: Resumed, Snap: snap, Base: base, From: pa.Done}, nil
		default:
			mode := Full
			if base != nil {
				mode = Incremental
			}
			return Plan{Mode: mode, Snap: snap, Base: base,
				Notes: []string{fmt.Sprintf("the interrupted transfer of %s is sent again from its start", pa.Snapshot.Describe())}}, nil
		}
		// Partly written, and nothing can finish it: only a full, or a
		// thin target rolled back to its snapshot, defines it again.
		if h.Kind != KindThin || h.Snapshot.ID.IsZero() {
			return Plan{Mode: Full, Notes: p.Notes}, nil
		}
		if !rollback {
			return Plan{}, &ModifiedError{Dest: dest, Held: h.Snapshot, Change: Change{Reason: fmt.Sprintf("an interrupted transfer of %s wrote to it", pa.Snapshot.Describe())}}
		}
		p.Rollback = true
	}
	if h.Modified != nil {
		if !rollback {
			return Plan{}, &ModifiedError{Dest: dest, Held: h.Snapshot, Change: *h.Modified}
		}
		if h.Kind != KindThin || h.Snapshot.ID.IsZero() {
			return Plan{Mode: Full, Overwrite: true, Notes: append(p.Notes, "--rollback: the modified target is overwritten by a full")}, nil
		}
		p.Rollback = true
	}
	if base := find(h.Snapshot.ID); base != nil {
		p.Mode, p.Base = Incremental, base
		return p, nil
	}
	if !h.Snapshot.ID.IsZero() {
		p.Notes = append(p.Notes, fmt.Sprintf("the target holds %s, which is gone from the source: sending a full", h.Snapshot.Describe()))
	}
	// A full defines every byte: no rollback is needed first.
	p.Mode, p.Rollback, p.Overwrite = Full, false, p.Rollback
	return p, nil
}

// Rotation returns the replication snapshots to remove from local (oldest
// first) once the target holds held: every one but held, the keep older
// than it, and the snapshot of an interrupted transfer the target can
// continue (partial, zero when none). When held is not among local,
// nothing is removed: what the target holds is then unknown.
func Rotation(local []Local, held, partial archive.ID, keep int) []Local {
	at := -1
	for i, l := range local {
		if l.ID == held && !held.IsZero() {
			at = i
		}
	}
	if at < 0 {
		return nil
	}
	var remove []Local
	for i, l := range local {
		switch {
		case i == at, i < at && at-i <= keep, l.ID == partial && !partial.IsZero():
		default:
			remove = append(remove, l)
		}
	}
	return remove
}
