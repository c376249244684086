package lvmthin

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/thinmeta"
)

// The receiving side of a replica: a thin target LV that a replication
// keeps equal to a source volume's snapshots, and the read-only thin
// snapshots of it (LV.thinback.<time>) taken after each complete apply.
// Each replica snapshot carries an LV tag naming the source snapshot it
// holds (thinback_src_<32 hex digits>, the source snapshot's thinback
// ID), so the receiver knows what it holds from LVM alone, without a state
// file, and the tag travels with the LV in LVM's metadata.
//
// A replica snapshot is found by its name (the target's name, then
// ".thinback.") and its tag, in the target's pool, not by its origin:
// after a rollback (RollbackReplica) the target is a new thin snapshot of
// the replica snapshot, whose own origin LVM then no longer names.

// replicaTagPrefix starts the LV tag that names the source snapshot a
// replica snapshot holds. LVM's tags may hold A-Z a-z 0-9 _ + . - / = ! :
// # & (and must not start with a hyphen); the hex ID needs none but the
// letters and digits.
const replicaTagPrefix = "thinback_src_"

// ReplicaTag returns the LV tag recording that a replica snapshot holds
// the source snapshot src.
func ReplicaTag(src archive.ID) string { return replicaTagPrefix + hex.EncodeToString(src[:]) }

// HasReplicaTag reports whether lv carries a replica tag, valid or not:
// it is a replica's snapshot, which only replicate rotates (backup's
// rotation of the LV's own snapshots must leave it alone).
func HasReplicaTag(lv *LV) bool {
	for _, t := range lv.Tags {
		if strings.HasPrefix(t, replicaTagPrefix) {
			return true
		}
	}
	return false
}

// ReplicaSource returns the source snapshot a replica snapshot holds, from
// its tag; ok is false if it has no such tag, or more than one (which
// thinback never makes: such an LV is not trusted as a replica).
func ReplicaSource(lv *LV) (src archive.ID, ok bool) {
	n := 0
	for _, t := range lv.Tags {
		rest, found := strings.CutPrefix(t, replicaTagPrefix)
		if !found {
			continue
		}
		var id archive.ID
		if len(rest) != 2*len(id) {
			return archive.ID{}, false
		}
		if _, err := hex.Decode(id[:], []byte(rest)); err != nil || strings.ToLower(rest) != rest {
			return archive.ID{}, false
		}
		src = id
		n++
	}
	if n != 1 {
		return archive.ID{}, false
	}
	return src, true
}

// ReplicaPrefix starts the name of every replica snapshot of the target
// LV named target.
func ReplicaPrefix(target string) string { return target + ".thinback." }

// ReplicaSnapshotName names a new replica snapshot of target taken at now:
// TARGET.thinback.<UTC time>, as backup names its snapshots (SnapshotName).
// existing are the volume group's LVs (Report.LVs).
func ReplicaSnapshotName(target string, existing []*LV, now time.Time) string {
	return SnapshotName(ReplicaPrefix(target), existing, now)
}

// SnapshotName names a new snapshot taken at now: prefix and the UTC time
// (20060102T150405Z), with a counter when one of existing already has that
// name (two within one second). Every snapshot thinback takes is named so.
func SnapshotName(prefix string, existing []*LV, now time.Time) string {
	stamp := now.UTC().Format("20060102T150405Z")
	name := prefix + stamp
	for i := 1; slices.ContainsFunc(existing, func(lv *LV) bool { return lv.Name == name }); i++ {
		name = prefix + stamp + "." + strconv.Itoa(i)
	}
	return name
}

// isReplicaSnapshotOf reports whether lv is a replica snapshot of target:
// a thin LV of target's pool named TARGET.thinback.* and tagged with the
// source snapshot it holds.
func isReplicaSnapshotOf(lv, target *LV) bool {
	if lv.VG != target.VG || lv.Name == target.Name || !lv.IsThin() || lv.Pool != target.Pool ||
		!strings.HasPrefix(lv.Name, ReplicaPrefix(target.Name)) {
		return false
	}
	_, ok := ReplicaSource(lv)
	return ok
}

// ReplicaSnapshots returns the replica snapshots of the thin target LV
// named target in the report, oldest first (by creation time, then thin
// id, which LVM allocates in increasing order), so the last one is what
// the target holds. It fails with ErrNotFound if the target does not
// exist and ErrNotThin if it is not a thin volume.
func (r *Report) ReplicaSnapshots(target Name) ([]*LV, error) {
	t, err := r.Lookup(target)
	if err != nil {
		return nil, err
	}
	if !t.IsThin() {
		return nil, fmt.Errorf("replica target %s is not a thin volume (lv_attr %s): %w", target, t.Attr, ErrNotThin)
	}
	var snaps []*LV
	for _, lv := range r.LVs {
		if isReplicaSnapshotOf(lv, t) {
			snaps = append(snaps, lv)
		}
	}
	sort.SliceStable(snaps, func(i, j int) bool {
		if !snaps[i].Time.Equal(snaps[j].Time) {
			return snaps[i].Time.Before(snaps[j].Time)
		}
		return snaps[i].ThinID < snaps[j].ThinID
	})
	return snaps, nil
}

// CreateReplicaSnapshot takes the replica snapshot of the thin target LV
// once it holds the source snapshot src: a read-only thin snapshot named
// name (ReplicaSnapshotName), with LVM's activation-skip flag (so it is
// not activated at boot, as backup's snapshots are not), tagged with
// ReplicaTag(src), in one lvcreate. It returns the new LV.
func CreateReplicaSnapshot(ctx context.Context, target *LV, name string, src archive.ID) (*LV, error) {
	n := target.FullName()
	if err := checkLVName(name); err != nil {
		return nil, fmt.Errorf("replica snapshot of %s: %w: %v", n, ErrName, err)
	}
	if !strings.HasPrefix(name, ReplicaPrefix(target.Name)) {
		return nil, fmt.Errorf("replica snapshot of %s: name %q does not start with %q: %w", n, name, ReplicaPrefix(target.Name), ErrName)
	}
	if src.IsZero() {
		return nil, fmt.Errorf("replica snapshot of %s: no source snapshot id", n)
	}
	if !target.IsThin() {
		return nil, fmt.Errorf("replica snapshot of %s: it is not a thin volume (lv_attr %s): %w", n, target.Attr, ErrNotThin)
	}
	if _, err := run(ctx, nil, programs.lvcreate, "-s", "-n", name, "-pr", "-ky", "--addtag", ReplicaTag(src),
		"--", n.String()); err != nil {
		return nil, fmt.Errorf("replica snapshot %s of %s: %w", name, n, err)
	}
	return Lookup(ctx, Name{VG: n.VG, LV: name})
}

// RemoveReplicaSnapshot removes a replica snapshot of target (lvremove,
// only while its UUID is still the record's). It refuses anything that
// is not one (ErrNotSnapshot): rotation must never remove the target or
// an LV thinback did not make.
func RemoveReplicaSnapshot(ctx context.Context, target, snap *LV) error {
	n := snap.FullName()
	if !isReplicaSnapshotOf(snap, target) {
		return fmt.Errorf("remove replica snapshot %s: it is not a replica snapshot of %s (a thin LV of pool %s named %s* with a %s tag); refusing to remove it: %w",
			n, target.FullName(), target.Pool, ReplicaPrefix(target.Name), replicaTagPrefix, ErrNotSnapshot)
	}
	if snap.UUID == "" {
		return fmt.Errorf("remove replica snapshot %s: the record has no UUID; refusing to remove it by name alone", n)
	}
	if _, err := run(ctx, nil, programs.lvremove, "-y", "--select", "lv_uuid="+snap.UUID, "--", n.String()); err != nil {
		return fmt.Errorf("remove replica snapshot %s: %w", n, err)
	}
	return nil
}

// Modification says whether a replica target differs from a replica
// snapshot, as the pool's metadata tells.
type Modification struct {
	// Changed: the target's mappings differ from the snapshot's, or its
	// size does.
	Changed bool
	// Offset and Length (bytes) are the first changed range, clipped to
	// the target's size; 0, 0 when only the size differs.
	Offset, Length int64
	// Bytes is how many bytes of the target are mapped differently
	// (written, or discarded, since the snapshot), in whole pool blocks.
	Bytes int64
	// Ranges counts the changed ranges.
	Ranges int64
	// TargetSize and SnapshotSize are the two LVs' sizes.
	TargetSize, SnapshotSize int64
	// MetadataBytes is how much of the pool's metadata the diff read,
	// and MetadataSnapHeld how long the metadata snapshot was held: the
	// cost of the check.
	MetadataBytes    int64
	MetadataSnapHeld time.Duration
}

// CompareReplica compares the thin target LV with its replica snapshot
// snap through the pool's metadata: under the pool's lock it reserves the
// metadata snapshot, diffs the two thin devices natively (passing over
// every subtree they share, so it costs what changed) and releases the
// metadata snapshot, whatever happens (as OpenDelta does; opts as for
// ReserveMetadataSnap). The pool must be active (the target active).
//
// Unchanged means identical mappings: every block of the target is the
// snapshot's own block, or unmapped in both. A block written since the
// snapshot, even with the bytes it held, counts as changed, as does a
// discarded one; the metadata cannot tell equal data in different blocks.
// That errs on the safe side: a replica that says unchanged is.
func CompareReplica(ctx context.Context, target, snap *LV, opts ReserveOptions) (_ *Modification, err error) {
	tn, sn := target.FullName(), snap.FullName()
	if !target.IsThin() || !snap.IsThin() || target.Pool != snap.Pool || target.VG != snap.VG || target.ThinID == snap.ThinID {
		return nil, fmt.Errorf("compare %s with %s: want two thin volumes of one pool (pools %q and %q, thin ids %d and %d): %w",
			tn, sn, target.Pool, snap.Pool, target.ThinID, snap.ThinID, ErrNotThin)
	}
	pool := target.PoolName()
	ms, err := ReserveMetadataSnap(ctx, pool, opts)
	if err != nil {
		return nil, fmt.Errorf("compare %s with %s: %w", tn, sn, err)
	}
	var mod *Modification
	defer func() {
		rerr := ms.Release()
		if mod != nil {
			mod.MetadataSnapHeld = ms.Held()
		}
		if rerr != nil {
			err = errors.Join(err, rerr)
		}
	}()
	m, err := openMetadata(MetadataDevice(pool), true, ms.Root())
	if err != nil {
		return nil, fmt.Errorf("compare %s with %s: %w", tn, sn, err)
	}
	defer m.Close()
	unit := int64(m.Superblock().DataBlockSectors) * 512
	if unit <= 0 {
		return nil, fmt.Errorf("compare %s with %s: %w: metadata %s has data block size 0", tn, sn, ErrMetadata, m.Path())
	}
	size := max(target.Size, snap.Size)
	mod = &Modification{TargetSize: target.Size, SnapshotSize: snap.Size, Changed: target.Size != snap.Size}
	first := true
	err = m.Diff(ms.Context(), uint64(snap.ThinID), uint64(target.ThinID),
		thinmeta.DiffOptions{SameFrom: math.MaxUint64, End: uint64((size + unit - 1) / unit)},
		func(r thinmeta.Range) error {
			if r.Kind == thinmeta.Same {
				return nil
			}
			off, end := int64(r.Begin)*unit, min(int64(r.End())*unit, size)
			if off >= end {
				return nil
			}
			mod.Changed = true
			mod.Ranges++
			mod.Bytes += end - off
			if first {
				first = false
				mod.Offset, mod.Length = off, min(end, target.Size)-off
				if mod.Length < 0 {
					mod.Length = 0
				}
			}
			return nil
		})
	if err != nil {
		return nil, fmt.Errorf("compare %s (thin device %d) with %s (thin device %d) in %s: %w",
			tn, target.ThinID, sn, snap.ThinID, m.Path(), wrapNative(err))
	}
	mod.MetadataBytes = m.Stats().BytesRead
	return mod, nil
}

// ModifiedError is the error of a replica target found changed by
// CompareReplica: it names the target, the snapshot and the first
// changed range, and says what to do. It matches ErrModified.
func ModifiedError(target, snap *LV, mod *Modification) error {
	where := fmt.Sprintf("%d bytes changed in %d ranges, the first at byte %d (%d bytes)", mod.Bytes, mod.Ranges, mod.Offset, mod.Length)
	if mod.Ranges == 0 {
		where = fmt.Sprintf("its size is %d bytes, the snapshot's %d", mod.TargetSize, mod.SnapshotSize)
	}
	return fmt.Errorf("%s: %w %s (%s); roll it back to the snapshot (--rollback) to overwrite those changes, or promote it",
		target.FullName(), ErrModified, snap.FullName(), where)
}

// RollbackReplica puts the thin target LV back to its replica snapshot
// snap (ZFS's recv -F) and returns the new target. The target must not be
// open (ErrOpen names it). It keeps the target's name but not its LV
// UUID: it creates a writable, active thin snapshot of snap under a
// temporary name (TARGET.thinback-rollback), removes the old target, and
// renames the new one to the target's name. The replica snapshot stays
// as it was, read-only, and still holds what it held, so the next
// incremental applies to the rolled-back target.
//
// Merging the snapshot into the target (lvconvert --merge) would keep the
// UUID, but it consumes the snapshot, which the replica needs as proof of
// what it holds, and merges only at the target's next activation when the
// target is active; a new snapshot of the snapshot changes nothing of it
// and takes effect at once.
//
// If the removal of the old target fails, the temporary LV is removed
// again and the target is untouched. If the rename fails after the old
// target is gone, the error says so: the data is in
// TARGET.thinback-rollback (lvrename it to the target's name).
func RollbackReplica(ctx context.Context, target, snap *LV) (*LV, error) {
	tn := target.FullName()
	if !isReplicaSnapshotOf(snap, target) {
		return nil, fmt.Errorf("roll back %s to %s: it is not a replica snapshot of %s: %w", tn, snap.FullName(), tn, ErrNotSnapshot)
	}
	if target.UUID == "" {
		return nil, fmt.Errorf("roll back %s: the record has no UUID; refusing to remove it by name alone", tn)
	}
	if target.Open {
		return nil, fmt.Errorf("roll back %s: it is open (mounted, or in use by a process or a device); unmount it or stop what uses it, then try again: %w",
			tn, ErrOpen)
	}
	tmp := Name{VG: tn.VG, LV: target.Name + ".thinback-rollback"}
	if err := checkLVName(tmp.LV); err != nil {
		return nil, fmt.Errorf("roll back %s: %w: %v", tn, ErrName, err)
	}
	if _, err := run(ctx, nil, programs.lvcreate, "-s", "-n", tmp.LV, "-prw", "-kn", "-ay", "--", snap.FullName().String()); err != nil {
		return nil, fmt.Errorf("roll back %s to %s: %w", tn, snap.FullName(), err)
	}
	// From here the old target goes; a cancelled caller must not stop
	// the three steps half-way.
	ctx = context.WithoutCancel(ctx)
	if _, err := run(ctx, nil, programs.lvremove, "-y", "--select", "lv_uuid="+target.UUID, "--", tn.String()); err != nil {
		if _, rerr := run(ctx, nil, programs.lvremove, "-y", "--", tmp.String()); rerr != nil {
			err = errors.Join(err, fmt.Errorf("remove %s again (lvremove it): %w", tmp, rerr))
		}
		if errors.Is(err, ErrOpen) {
			return nil, fmt.Errorf("roll back %s: it is open; unmount it or stop what uses it, then try again: %w", tn, err)
		}
		return nil, fmt.Errorf("roll back %s to %s: remove the modified target: %w", tn, snap.FullName(), err)
	}
	if _, err := run(ctx, nil, programs.lvrename, "--", tmp.VG, tmp.LV, tn.LV); err != nil {
		return nil, fmt.Errorf("roll back %s to %s: the modified target is removed and its replacement is %s, which could not be renamed (lvrename %s %s %s): %w",
			tn, snap.FullName(), tmp, tmp.VG, tmp.LV, tn.LV, err)
	}
	return Lookup(ctx, tn)
}

// CreateThin creates a thin volume name of size bytes in the thin pool
// pool (`lvcreate -V SIZE -T VG/POOL -n NAME`), active and writable, for
// a replica target that does not exist yet, and returns it. The size is
// rounded up to the volume group's extent size, as LVM would; LV.Size is
// the size it got. A pool that does not exist is ErrNotFound, an LV that
// is not a thin pool ErrNotThin, an existing name ErrExists; LVM's other
// refusals come with its message.
func CreateThin(ctx context.Context, pool Name, name string, size int64) (*LV, error) {
	n := Name{VG: pool.VG, LV: name}
	if err := checkLVName(name); err != nil {
		return nil, fmt.Errorf("create %s: %w: %v", n, ErrName, err)
	}
	if size <= 0 {
		return nil, fmt.Errorf("create %s: size %d bytes", n, size)
	}
	r, err := ListVG(ctx, pool.VG)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", n, err)
	}
	p, err := r.Lookup(pool)
	if err != nil {
		return nil, fmt.Errorf("create %s: thin pool %s: %w", n, pool, err)
	}
	if !p.IsThinPool() {
		return nil, fmt.Errorf("create %s: %s is not a thin pool but a %s (lv_attr %s): %w", n, pool, p.Kind(), p.Attr, ErrNotThin)
	}
	if _, err := r.Lookup(n); err == nil {
		return nil, fmt.Errorf("create %s: %w", n, ErrExists)
	}
	vg, err := GetVG(ctx, pool.VG)
	if err != nil {
		return nil, fmt.Errorf("create %s: %w", n, err)
	}
	if size > math.MaxInt64-vg.ExtentSize {
		return nil, fmt.Errorf("create %s: size %d bytes is too large", n, size)
	}
	rounded := (size + vg.ExtentSize - 1) / vg.ExtentSize * vg.ExtentSize
	if _, err := run(ctx, nil, programs.lvcreate, "-V", strconv.FormatInt(rounded, 10)+"b", "-T", pool.String(),
		"-n", name, "-ay", "-prw", "-kn"); err != nil {
		return nil, fmt.Errorf("create %s of %d bytes in thin pool %s: %w", n, rounded, pool, err)
	}
	return Lookup(ctx, n)
}

// OnlyThinPool returns the volume group's thin pool when it has exactly
// one (for a replica target created without a pool named); none, or
// more than one, is an error that names them and asks for a pool.
func (r *Report) OnlyThinPool() (*LV, error) {
	var pools []*LV
	var names []string
	for _, lv := range r.LVs {
		if lv.IsThinPool() {
			pools = append(pools, lv)
			names = append(names, lv.Name)
		}
	}
	switch len(pools) {
	case 1:
		return pools[0], nil
	case 0:
		return nil, fmt.Errorf("volume group %s has no thin pool (create one: lvcreate -L SIZE -T %s/POOL): %w", r.VG, r.VG, ErrNotFound)
	}
	return nil, fmt.Errorf("volume group %s has %d thin pools (%s); name the one to use", r.VG, len(pools), strings.Join(names, ", "))
}

// UnmarkReplica removes the source tags of the replica snapshots of the
// target named target (lvchange --deltag), for a failover: the target
// then is an ordinary thin LV that holds no source snapshot, so no later
// replication treats it as a replica and writes to it. The snapshots
// themselves stay, under their names, as ordinary read-only snapshots of
// what the replica held (lvremove them when no longer wanted). It returns
// the snapshots it unmarked.
func UnmarkReplica(ctx context.Context, target Name) ([]*LV, error) {
	r, err := ListVG(ctx, target.VG)
	if err != nil {
		return nil, fmt.Errorf("promote %s: %w", target, err)
	}
	snaps, err := r.ReplicaSnapshots(target)
	if err != nil {
		return nil, fmt.Errorf("promote %s: %w", target, err)
	}
	for i, s := range snaps {
		args := []string{}
		for _, t := range s.Tags {
			if strings.HasPrefix(t, replicaTagPrefix) {
				args = append(args, "--deltag", t)
			}
		}
		args = append(args, "--select", "lv_uuid="+s.UUID, "--", s.FullName().String())
		if _, err := run(ctx, nil, programs.lvchange, args...); err != nil {
			return snaps[:i], fmt.Errorf("promote %s: untag replica snapshot %s: %w", target, s.FullName(), err)
		}
	}
	return snaps, nil
}
