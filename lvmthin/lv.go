package lvmthin

import (
	"context"
	"fmt"
)

// SnapshotOptions tune CreateSnapshot.
type SnapshotOptions struct {
	// ReadOnly creates the snapshot with read-only permission (-pr), so
	// nothing can write to it by mistake while it serves as a backup base.
	ReadOnly bool
	// Activate creates the snapshot active (lvcreate -K, ignoring the
	// activation-skip flag LVM gives thin snapshots), which saves the
	// lvchange a reader of it would run next. The flag stays set, so the
	// snapshot is not activated at boot.
	Activate bool
}

// CreateSnapshot creates a thin snapshot named name of the thin volume
// origin (`lvcreate -s -n NAME VG/ORIGIN`) and returns it as lvs reports it.
// LVM gives new thin snapshots the activation-skip flag, so the snapshot is
// inactive until activated with Activate or EnsureActive.
func CreateSnapshot(ctx context.Context, origin Name, name string, opts SnapshotOptions) (*LV, error) {
	if err := checkLVName(name); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w: %v", origin, ErrName, err)
	}
	o, err := Lookup(ctx, origin)
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", origin, err)
	}
	return CreateSnapshotOf(ctx, o, name, opts)
}

// CreateSnapshotOf is CreateSnapshot of an origin the caller has just
// looked up (from a Report), which saves an lvs.
func CreateSnapshotOf(ctx context.Context, o *LV, name string, opts SnapshotOptions) (*LV, error) {
	origin := o.FullName()
	if err := checkLVName(name); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w: %v", origin, ErrName, err)
	}
	if !o.IsThin() {
		return nil, fmt.Errorf("snapshot of %s: it is not a thin volume (lv_attr %s); thinback snapshots thin volumes only: %w",
			origin, o.Attr, ErrNotThin)
	}
	args := []string{"-s", "-n", name}
	if opts.ReadOnly {
		args = append(args, "-pr")
	}
	if opts.Activate {
		args = append(args, "-ay", "-K")
	}
	args = append(args, "--", origin.String())
	if _, err := run(ctx, nil, programs.lvcreate, args...); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: %w", name, origin, err)
	}
	// The one lvs a new snapshot needs: its UUID, thin id and time exist
	// only now.
	return Lookup(ctx, Name{VG: origin.VG, LV: name})
}

// Activate activates an LV, ignoring the activation-skip flag
// (`lvchange -ay -K`), which thin snapshots carry. thinback only reads from
// what it activates.
func Activate(ctx context.Context, n Name) error {
	if _, err := run(ctx, nil, programs.lvchange, "-ay", "-K", "--", n.String()); err != nil {
		return fmt.Errorf("activate %s: %w", n, err)
	}
	return nil
}

// Deactivate deactivates an LV (`lvchange -an`).
func Deactivate(ctx context.Context, n Name) error {
	if _, err := run(ctx, nil, programs.lvchange, "-an", "--", n.String()); err != nil {
		return fmt.Errorf("deactivate %s: %w", n, err)
	}
	return nil
}

// RemoveSnapshot removes a thin or classic snapshot (`lvremove -y`). It
// refuses, with ErrNotSnapshot, an LV that is not a snapshot: thinback's
// rotation must never be able to remove an origin volume by a slip of a
// name.
func RemoveSnapshot(ctx context.Context, n Name) error {
	lv, err := Lookup(ctx, n)
	if err != nil {
		return fmt.Errorf("remove snapshot %s: %w", n, err)
	}
	return RemoveSnapshotLV(ctx, lv)
}

// RemoveSnapshotLV is RemoveSnapshot of an LV the caller has looked up in
// this run (from a Report), which saves an lvs. The checks are made on that
// record, and lvremove is told to remove the LV only if its UUID is still
// the record's (--select), so an LV renamed or recreated since under the
// same name is left alone.
func RemoveSnapshotLV(ctx context.Context, lv *LV) error {
	n := lv.FullName()
	if k := lv.Kind(); k != KindThinSnapshot && k != KindClassicSnapshot {
		return fmt.Errorf("remove snapshot %s: it is not a snapshot but a %s (lv_attr %s); refusing to remove it: %w",
			n, k, lv.Attr, ErrNotSnapshot)
	}
	if lv.IsMerging() {
		return fmt.Errorf("remove snapshot %s: it is merging into %s; LVM removes it when the merge is done: %w",
			n, lv.Origin, ErrSnapshotMerging)
	}
	if lv.UUID == "" {
		return fmt.Errorf("remove snapshot %s: the record has no UUID; refusing to remove it by name alone", n)
	}
	if _, err := run(ctx, nil, programs.lvremove, "-y", "--select", "lv_uuid="+lv.UUID, "--", n.String()); err != nil {
		return fmt.Errorf("remove snapshot %s: %w", n, err)
	}
	return nil
}

// Activation remembers whether EnsureActive activated an LV, so that
// Restore leaves it as it was found.
type Activation struct {
	name      Name
	activated bool
	done      bool
}

// EnsureActive activates the LV if it is inactive and returns an Activation
// whose Restore deactivates it again; an LV that was already active is left
// alone (someone else uses it).
func EnsureActive(ctx context.Context, n Name) (*Activation, error) {
	lv, err := Lookup(ctx, n)
	if err != nil {
		return nil, err
	}
	a := &Activation{name: n}
	if lv.Active {
		return a, nil
	}
	if err := Activate(ctx, n); err != nil {
		return nil, err
	}
	a.activated = true
	return a, nil
}

// Activated reports whether EnsureActive activated the LV (and Restore
// will deactivate it).
func (a *Activation) Activated() bool { return a.activated }

// Restore puts the LV back in the activation state EnsureActive found:
// it deactivates it if EnsureActive activated it. Calling it again does
// nothing.
func (a *Activation) Restore(ctx context.Context) error {
	if a == nil || a.done {
		return nil
	}
	a.done = true
	if !a.activated {
		return nil
	}
	return Deactivate(ctx, a.name)
}
