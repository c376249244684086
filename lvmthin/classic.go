package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
)

// ErrNotThick: the LV is not an ordinary (thick) volume where one is
// required, e.g. as the origin of a classic snapshot.
var ErrNotThick = errors.New("lvmthin: not a thick volume")

// ClassicSnapshotOptions tune CreateClassicSnapshot.
type ClassicSnapshotOptions struct {
	// Size of the copy-on-write store in bytes (lvcreate -L); required.
	// Once the chunks written to the origin (or the snapshot) since the
	// snapshot fill it, the kernel invalidates the snapshot. LVM caps it
	// at what a store for the whole origin needs.
	Size int64
	// ChunkSize in bytes (lvcreate -c): a power of two from 4 KiB to
	// 512 KiB; 0 for LVM's default (4 KiB).
	ChunkSize int64
	// ReadOnly creates the snapshot read-only (-pr), so nothing writes to
	// it by mistake while it serves as a backup base.
	ReadOnly bool
}

// CreateClassicSnapshot creates a classic (copy-on-write) snapshot named
// name of the thick LV origin (`lvcreate -s -L SIZE -n NAME VG/ORIGIN`)
// and returns it as lvs reports it. LVM suspends the origin meanwhile,
// flushing it (and freezing a mounted file system): every write that
// completed before is in the origin's older snapshots' exception tables,
// every later one is not in the new snapshot. Classic snapshots are
// active whenever their origin is.
func CreateClassicSnapshot(ctx context.Context, origin Name, name string, opts ClassicSnapshotOptions) (*LV, error) {
	if err := checkLVName(name); err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w: %v", origin, ErrName, err)
	}
	if opts.Size <= 0 {
		return nil, fmt.Errorf("snapshot %s of %s: no size for its copy-on-write store", name, origin)
	}
	if c := opts.ChunkSize; c != 0 && (c < 4<<10 || c > 512<<10 || c&(c-1) != 0) {
		return nil, fmt.Errorf("snapshot %s of %s: chunk size %d: want a power of two from 4 KiB to 512 KiB", name, origin, c)
	}
	o, err := Lookup(ctx, origin)
	if err != nil {
		return nil, fmt.Errorf("snapshot of %s: %w", origin, err)
	}
	switch k := o.Kind(); {
	case k == KindThin || k == KindThinSnapshot:
		return nil, fmt.Errorf("snapshot of %s: it is a thin volume (lv_attr %s); thin volumes get thin snapshots (CreateSnapshot): %w",
			origin, o.Attr, ErrNotThick)
	case o.IsMerging():
		return nil, fmt.Errorf("snapshot of %s: a snapshot is merging into it (lv_attr %s); wait for the merge to finish (lvs -a %s): %w",
			origin, o.Attr, origin.VG, ErrSnapshotMerging)
	case k != KindThick:
		return nil, fmt.Errorf("snapshot of %s: it is a %s (lv_attr %s), not an ordinary volume: %w", origin, k, o.Attr, ErrNotThick)
	}
	args := []string{"-s", "-L", strconv.FormatInt(opts.Size, 10) + "b", "-n", name}
	if opts.ChunkSize != 0 {
		args = append(args, "-c", strconv.FormatInt(opts.ChunkSize>>10, 10)+"k")
	}
	if opts.ReadOnly {
		args = append(args, "-pr")
	}
	args = append(args, "--", origin.String())
	if _, err := run(ctx, nil, programs.lvcreate, args...); err != nil {
		return nil, fmt.Errorf("snapshot %s of %s: %w", name, origin, err)
	}
	return Lookup(ctx, Name{VG: origin.VG, LV: name})
}

// COWDevice returns the path of a classic snapshot's copy-on-write store,
// the hidden device-mapper layer "<vg>-<snap>-cow" (it exists while the
// snapshot is active; a merging snapshot's store is renamed after the
// origin).
func COWDevice(snap Name) string { return "/dev/mapper/" + DMName(snap.VG, snap.LV, "cow") }
