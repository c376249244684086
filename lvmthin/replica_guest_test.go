package lvmthin

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

// TestKernelReplica: the receiving side of a replica in a real kernel: a
// tagged read-only replica snapshot of a thin target, found again by name
// and tag; the target compared with it through the pool's metadata
// (unchanged, then a 4 KiB write and a discard seen as changes); an open
// target refused a rollback; the rollback giving the snapshot's bytes
// back under the target's name (a new UUID), the snapshot untouched;
// removal and untagging of replica snapshots; a new thin target created
// in a pool.
func TestKernelReplica(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	pool := newPool(t, "tb-rep")
	tn := newThinLV(t, pool, "tgt", "64M")
	sh(t, "dd if=/dev/urandom of=/dev/tb-rep/tgt bs=1M count=3 seek=5 oflag=direct status=none")

	report := func() *Report {
		t.Helper()
		r, err := ListVG(ctx, pool.VG)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	target := lookup(t, tn)
	src1 := archive.NewID()
	name1 := ReplicaSnapshotName("tgt", report().LVs, time.Now())
	s1, err := CreateReplicaSnapshot(ctx, target, name1, src1)
	if err != nil {
		t.Fatal(err)
	}
	if !s1.IsThinSnapshot() || s1.Origin != "tgt" || s1.Attr[1] != 'r' || !s1.SkipActivation || s1.Active ||
		!slices.Contains(s1.Tags, ReplicaTag(src1)) {
		t.Fatalf("replica snapshot: %+v", s1)
	}
	if got, ok := ReplicaSource(s1); !ok || got != src1 {
		t.Fatalf("ReplicaSource = %v, %v; want %v", got, ok, src1)
	}
	// Neither an untagged snapshot of the same prefix nor a tagged one of
	// another name is a replica snapshot.
	sh(t, "lvcreate -q -s -n tgt.thinback.untagged tb-rep/tgt && lvcreate -q -s -n other --addtag "+ReplicaTag(src1)+" tb-rep/tgt")
	if _, err := CreateReplicaSnapshot(ctx, target, "other2", src1); !errors.Is(err, ErrName) {
		t.Errorf("replica snapshot with a foreign name: %v", err)
	}
	snaps, err := report().ReplicaSnapshots(tn)
	if err != nil || len(snaps) != 1 || snaps[0].UUID != s1.UUID {
		t.Fatalf("ReplicaSnapshots = %v, %v", snaps, err)
	}
	if name := ReplicaSnapshotName("tgt", report().LVs, s1.Time); name == name1 {
		t.Errorf("ReplicaSnapshotName gave the existing %s again", name)
	}
	t.Logf("lvs report with replica snapshots:\n%s", sh(t, "lvs --reportformat json --units b --nosuffix -o "+lvsFields+" tb-rep"))

	// Unchanged, then changed by a 4 KiB write inside the second 64 KiB
	// block of MiB 20 (unmapped before: a new mapping).
	mod, err := CompareReplica(ctx, target, s1, ReserveOptions{})
	if err != nil || mod.Changed || mod.Bytes != 0 || mod.MetadataBytes <= 0 || mod.MetadataSnapHeld <= 0 {
		t.Fatalf("compare right after the snapshot: %+v, %v", mod, err)
	}
	t.Logf("compare of a 64 MiB target: %d bytes of metadata read, metadata snapshot held %v", mod.MetadataBytes, mod.MetadataSnapHeld)
	if heldRoot(t, pool) != 0 {
		t.Fatal("CompareReplica left the metadata snapshot held")
	}
	sh(t, "dd if=/dev/urandom of=/dev/tb-rep/tgt bs=4k count=1 seek=5136 oflag=direct status=none")
	mod, err = CompareReplica(ctx, target, s1, ReserveOptions{})
	if err != nil || !mod.Changed || mod.Offset != 20<<20+64<<10 || mod.Length != 64<<10 || mod.Bytes != 64<<10 || mod.Ranges != 1 {
		t.Fatalf("compare after a 4 KiB write: %+v, %v", mod, err)
	}
	if merr := ModifiedError(target, s1, mod); !errors.Is(merr, ErrModified) {
		t.Errorf("ModifiedError: %v", merr)
	} else {
		t.Log(merr)
	}
	// The same bytes written again over mapped data still count: the
	// metadata cannot see equal data in a new block.
	sh(t, "dd if=/dev/tb-rep/tgt of=/dev/tb-rep/tgt bs=64k count=1 skip=80 seek=80 iflag=direct oflag=direct status=none")
	if mod, err = CompareReplica(ctx, target, s1, ReserveOptions{}); err != nil || mod.Ranges != 2 || mod.Bytes != 2*64<<10 || mod.Offset != 5<<20 {
		t.Fatalf("compare after rewriting equal bytes at 5 MiB: %+v, %v", mod, err)
	}

	// A rollback of an open target is refused, naming it.
	if err := Activate(ctx, s1.FullName()); err != nil {
		t.Fatal(err)
	}
	want := devSHA256(t, "/dev/tb-rep/"+name1, 64<<20)
	f, err := os.Open(target.DMPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := RollbackReplica(ctx, lookup(t, tn), s1); !errors.Is(err, ErrOpen) {
		f.Close()
		t.Fatalf("rollback of an open target: %v", err)
	} else {
		t.Log(err)
	}
	// LVM's own refusal, should the LV be opened between the check and
	// the removal.
	if _, err := run(ctx, nil, programs.lvremove, "-y", "--", tn.String()); !errors.Is(err, ErrOpen) {
		f.Close()
		t.Fatalf("lvremove of an open target: %v", err)
	} else {
		t.Log(err)
	}
	f.Close()
	rolled, err := RollbackReplica(ctx, lookup(t, tn), lookup(t, s1.FullName()))
	if err != nil {
		t.Fatal(err)
	}
	if rolled.Name != "tgt" || !rolled.IsThin() || !rolled.Active || rolled.Attr[1] != 'w' || rolled.SkipActivation ||
		rolled.UUID == target.UUID || rolled.Size != target.Size || len(rolled.Tags) != 0 {
		t.Fatalf("rolled-back target: %+v (old UUID %s)", rolled, target.UUID)
	}
	if got := devSHA256(t, "/dev/tb-rep/tgt", 64<<20); got != want {
		t.Fatalf("rolled-back target: sha256 %s, the snapshot's %s", got, want)
	}
	if s := lookup(t, s1.FullName()); s.UUID != s1.UUID || s.Attr[1] != 'r' || !slices.Contains(s.Tags, ReplicaTag(src1)) {
		t.Fatalf("replica snapshot after the rollback: %+v", s)
	}
	if _, err := Lookup(ctx, Name{VG: pool.VG, LV: "tgt.thinback-rollback"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the rollback's temporary LV: %v", err)
	}
	target = rolled
	s1 = lookup(t, s1.FullName())
	if mod, err = CompareReplica(ctx, target, s1, ReserveOptions{}); err != nil || mod.Changed {
		t.Fatalf("compare after the rollback: %+v, %v", mod, err)
	}
	// A discard is a change too.
	sh(t, "blkdiscard -o 5242880 -l 65536 /dev/tb-rep/tgt")
	if mod, err = CompareReplica(ctx, target, s1, ReserveOptions{}); err != nil || !mod.Changed || mod.Offset != 5<<20 || mod.Bytes != 64<<10 {
		t.Fatalf("compare after a discard: %+v, %v", mod, err)
	}
	if _, err := RollbackReplica(ctx, target, s1); err != nil {
		t.Fatal(err)
	}

	// A grown target differs by its size alone; the rollback gives the
	// snapshot's size back.
	sh(t, "lvextend -q -L +4M tb-rep/tgt")
	if mod, err = CompareReplica(ctx, lookup(t, tn), s1, ReserveOptions{}); err != nil || !mod.Changed || mod.Ranges != 0 ||
		mod.TargetSize != 68<<20 || mod.SnapshotSize != 64<<20 {
		t.Fatalf("compare after lvextend: %+v, %v", mod, err)
	}
	if target, err = RollbackReplica(ctx, lookup(t, tn), s1); err != nil || target.Size != 64<<20 {
		t.Fatalf("rollback of a grown target: %+v, %v", target, err)
	}

	// A metadata snapshot the pool holds already is refused as stale, and
	// released only when asked; a compare leaves none behind.
	sh(t, "dmsetup message tb--rep-pool-tpool 0 reserve_metadata_snap")
	if _, err := CompareReplica(ctx, target, s1, ReserveOptions{}); !errors.Is(err, ErrStaleMetadataSnap) {
		t.Fatalf("compare with a stale metadata snapshot held: %v", err)
	}
	if mod, err = CompareReplica(ctx, target, s1, ReserveOptions{ReleaseStale: true}); err != nil || mod.Changed {
		t.Fatalf("compare releasing the stale metadata snapshot: %+v, %v", mod, err)
	}
	if heldRoot(t, pool) != 0 {
		t.Fatal("a metadata snapshot is held after the compare")
	}

	// A second replica snapshot; both are found though the first one's
	// origin is gone; removal takes replica snapshots only.
	src2 := archive.NewID()
	s2, err := CreateReplicaSnapshot(ctx, target, ReplicaSnapshotName("tgt", report().LVs, time.Now()), src2)
	if err != nil {
		t.Fatal(err)
	}
	snaps, err = report().ReplicaSnapshots(tn)
	if err != nil || len(snaps) != 2 || snaps[0].UUID != s1.UUID || snaps[1].UUID != s2.UUID {
		t.Fatalf("ReplicaSnapshots after a rollback = %v, %v", snaps, err)
	}
	for _, lv := range []*LV{target, lookup(t, Name{pool.VG, "other"}), lookup(t, Name{pool.VG, "tgt.thinback.untagged"})} {
		if err := RemoveReplicaSnapshot(ctx, target, lv); !errors.Is(err, ErrNotSnapshot) {
			t.Errorf("RemoveReplicaSnapshot(%s): %v", lv.Name, err)
		}
	}
	if err := RemoveReplicaSnapshot(ctx, target, snaps[0]); err != nil {
		t.Fatal(err)
	}
	if snaps, err = report().ReplicaSnapshots(tn); err != nil || len(snaps) != 1 || snaps[0].UUID != s2.UUID {
		t.Fatalf("ReplicaSnapshots after removing the older = %v, %v", snaps, err)
	}

	// Promotion: untagged, the snapshots stay.
	unmarked, err := UnmarkReplica(ctx, tn)
	if err != nil || len(unmarked) != 1 {
		t.Fatalf("UnmarkReplica = %v, %v", unmarked, err)
	}
	if snaps, err = report().ReplicaSnapshots(tn); err != nil || len(snaps) != 0 {
		t.Fatalf("ReplicaSnapshots after UnmarkReplica = %v, %v", snaps, err)
	}
	if s := lookup(t, s2.FullName()); len(s.Tags) != 0 {
		t.Fatalf("promoted replica's snapshot still tagged: %+v", s)
	}

	// A new target in the pool, and the refusals.
	p, err := report().OnlyThinPool()
	if err != nil || p.Name != "pool" {
		t.Fatalf("OnlyThinPool = %v, %v", p, err)
	}
	nlv, err := CreateThin(ctx, pool, "new", 10<<20+1)
	if err != nil {
		t.Fatal(err)
	}
	if !nlv.IsThin() || nlv.IsThinSnapshot() || !nlv.Active || nlv.Attr[1] != 'w' || nlv.SkipActivation || nlv.Size != 12<<20 || nlv.Pool != "pool" {
		t.Fatalf("created target: %+v", nlv)
	}
	sh(t, "dd if=/dev/zero of=/dev/tb-rep/new bs=1M count=12 oflag=direct status=none")
	if _, err := CreateThin(ctx, pool, "new", 1<<20); !errors.Is(err, ErrExists) {
		t.Errorf("create an existing LV: %v", err)
	}
	if _, err := CreateThin(ctx, tn, "x", 1<<20); !errors.Is(err, ErrNotThin) {
		t.Errorf("create in a thin volume as the pool: %v", err)
	}
	if _, err := CreateThin(ctx, Name{pool.VG, "nopool"}, "x", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Errorf("create in a missing pool: %v", err)
	}
	// A second pool of this VG needs VG space; the VG is too small for a
	// 1 TiB one, and LVM's refusal comes through.
	_, err = run(ctx, nil, programs.lvcreate, "-L", "1T", "-T", pool.VG+"/pool2")
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("lvcreate of a pool larger than the VG: %v", err)
	}
	t.Log(err)
	sh(t, "lvcreate -q -L 8M -T tb-rep/pool2")
	if _, err := report().OnlyThinPool(); err == nil {
		t.Fatal("OnlyThinPool with two pools gave no error")
	} else {
		t.Log(err)
	}
	if _, err := CreateThin(ctx, Name{pool.VG, "pool2"}, "in2", 1<<20); err != nil {
		t.Fatal(err)
	}

	// A mounted target is refused a rollback, and left as it was.
	ns, err := CreateReplicaSnapshot(ctx, nlv, ReplicaSnapshotName("new", report().LVs, time.Now()), src2)
	if err != nil {
		t.Fatal(err)
	}
	sh(t, "mkfs.ext4 -q /dev/tb-rep/new && mkdir -p /mnt/new && mount /dev/tb-rep/new /mnt/new")
	mounted := lookup(t, nlv.FullName())
	_, err = RollbackReplica(ctx, mounted, ns)
	sh(t, "umount /mnt/new")
	if !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), "tb-rep/new") {
		t.Fatalf("rollback of a mounted target: %v", err)
	}
	if lv := lookup(t, nlv.FullName()); lv.UUID != nlv.UUID {
		t.Fatalf("a refused rollback replaced the target: %+v", lv)
	}
}
