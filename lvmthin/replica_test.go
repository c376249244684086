package lvmthin

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

func replicaReport(t *testing.T) *Report {
	t.Helper()
	lvs, err := parseReport(readFixture(t, "lvs-replica.json"))
	if err != nil {
		t.Fatal(err)
	}
	return &Report{VG: "tb-rep", LVs: lvs}
}

// TestReplicaSnapshots: from a real lvs report, only the thin LV named
// TARGET.thinback.* that carries a source tag is a replica snapshot; its
// tag gives the source snapshot's ID back.
func TestReplicaSnapshots(t *testing.T) {
	r := replicaReport(t)
	snaps, err := r.ReplicaSnapshots(Name{"tb-rep", "tgt"})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 1 || snaps[0].Name != "tgt.thinback.20261207T211629Z" {
		t.Fatalf("replica snapshots %v", snaps)
	}
	s := snaps[0]
	if s.Attr[1] != 'r' || !s.SkipActivation || s.Open || len(s.Tags) != 1 {
		t.Errorf("replica snapshot %+v", s)
	}
	src, ok := ReplicaSource(s)
	want, _ := archive.ParseID("3fcb6eb9-14f8-4d9c-8066-5a7bf7b4d4a4")
	if !ok || src != want {
		t.Errorf("ReplicaSource = %v, %v; want %v", src, ok, want)
	}
	if ReplicaTag(want) != s.Tags[0] {
		t.Errorf("ReplicaTag = %s, the LV has %s", ReplicaTag(want), s.Tags[0])
	}
	if _, err := r.ReplicaSnapshots(Name{"tb-rep", "pool"}); !errors.Is(err, ErrNotThin) {
		t.Errorf("replica snapshots of a pool: %v", err)
	}
	if _, err := r.ReplicaSnapshots(Name{"tb-rep", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("replica snapshots of a missing LV: %v", err)
	}
	tgt, _ := r.Lookup(Name{"tb-rep", "tgt"})
	if !tgt.Active || tgt.Open || len(tgt.Tags) != 0 {
		t.Errorf("target %+v", tgt)
	}
	p, err := r.OnlyThinPool()
	if err != nil || p.Name != "pool" {
		t.Errorf("OnlyThinPool = %v, %v", p, err)
	}
	if _, err := (&Report{VG: "x"}).OnlyThinPool(); !errors.Is(err, ErrNotFound) {
		t.Errorf("OnlyThinPool of a VG without pools: %v", err)
	}
}

// TestReplicaSource: a tag thinback did not write, or two of them, make
// no replica snapshot.
func TestReplicaSource(t *testing.T) {
	id := archive.ID{0: 0xab, 15: 0x01}
	good := ReplicaTag(id)
	if good != "thinback_src_ab000000000000000000000000000001" {
		t.Fatalf("ReplicaTag = %s", good)
	}
	for _, tc := range []struct {
		tags []string
		ok   bool
	}{
		{[]string{good}, true},
		{[]string{"other", good, "x"}, true},
		{nil, false},
		{[]string{"thinback_src_"}, false},
		{[]string{strings.ToUpper(good[:13]) + good[13:]}, false},
		{[]string{good[:13] + strings.ToUpper(good[13:])}, false},
		{[]string{good + "0"}, false},
		{[]string{good[:len(good)-1]}, false},
		{[]string{good[:len(good)-1] + "g"}, false},
		{[]string{good, ReplicaTag(archive.ID{1})}, false},
	} {
		got, ok := ReplicaSource(&LV{Tags: tc.tags})
		if ok != tc.ok || (ok && got != id) {
			t.Errorf("ReplicaSource(%q) = %v, %v", tc.tags, got, ok)
		}
	}
}

// TestReplicaSnapshotName: backup's naming, with a counter within one
// second.
func TestReplicaSnapshotName(t *testing.T) {
	now := time.Date(2026, 12, 7, 21, 16, 29, 0, time.FixedZone("x", 3600))
	if got := ReplicaSnapshotName("vm", nil, now); got != "vm.thinback.20261207T201629Z" {
		t.Fatalf("name %s", got)
	}
	existing := []*LV{{Name: "vm.thinback.20261207T201629Z"}, {Name: "vm.thinback.20261207T201629Z.1"}}
	if got := ReplicaSnapshotName("vm", existing, now); got != "vm.thinback.20261207T201629Z.2" {
		t.Fatalf("name %s", got)
	}
}

// TestModifiedError: the refusal names the target, the snapshot, the
// first changed range and what to do, and matches ErrModified.
func TestModifiedError(t *testing.T) {
	tgt := &LV{VG: "vg", Name: "tgt"}
	snap := &LV{VG: "vg", Name: "tgt.thinback.20261207T211629Z"}
	err := ModifiedError(tgt, snap, &Modification{Changed: true, Offset: 21037056, Length: 65536, Bytes: 131072, Ranges: 2})
	if !errors.Is(err, ErrModified) {
		t.Fatal(err)
	}
	for _, want := range []string{"vg/tgt", "destination has been modified since most recent snapshot vg/tgt.thinback.20261207T211629Z",
		"131072 bytes changed in 2 ranges", "first at byte 21037056 (65536 bytes)", "--rollback"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	err = ModifiedError(tgt, snap, &Modification{Changed: true, TargetSize: 2 << 20, SnapshotSize: 1 << 20})
	if !strings.Contains(err.Error(), "its size is 2097152 bytes, the snapshot's 1048576") {
		t.Errorf("size change: %v", err)
	}
}
