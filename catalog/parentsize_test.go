package catalog

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// An incremental whose parent size is not its parent's volume size would
// restore with stale bytes beyond what it covers: Commit refuses it, naming
// both sizes, and records nothing.
func TestCommitRefusesParentSize(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	full := ts.commit("v", "", []byte("full"))
	for _, size := range []int64{0, full.VolumeSize / 2, full.VolumeSize + 4096} {
		f := ts.temp("v", []byte("incr"))
		snap := Snapshot{ID: newID(), Volume: "v", Parent: full.ID, ParentSize: size, VolumeSize: full.VolumeSize,
			Time: baseTime, FileDigest: "00"}
		err := ts.Commit(f, &snap)
		if !errors.Is(err, ErrParentSize) || !strings.Contains(err.Error(), strconv.FormatInt(size, 10)) ||
			!strings.Contains(err.Error(), strconv.FormatInt(full.VolumeSize, 10)) {
			t.Fatalf("Commit with parent size %d: %v, want ErrParentSize naming %d and %d", size, err, size, full.VolumeSize)
		}
	}
	if got := ts.snapshots("v"); len(got) != 1 {
		t.Errorf("recorded %d snapshots, want only the full", len(got))
	}
	if names := dirFiles(t, ts.Path("tmp")); len(names) != 0 {
		t.Errorf("tmp/ holds %v", names)
	}
	// The right size is accepted; so is a grown or shrunk volume.
	f := ts.temp("v", []byte("incr"))
	ok := Snapshot{ID: newID(), Volume: "v", Parent: full.ID, ParentSize: full.VolumeSize, VolumeSize: 2 * full.VolumeSize,
		Time: baseTime, FileDigest: "00"}
	if err := ts.Commit(f, &ok); err != nil {
		t.Fatal(err)
	}
	// Replace checks it too: B merged into C is an incremental of A.
	c := ts.commit2("v", ok.ID, ok.VolumeSize)
	merged := c
	merged.Parent, merged.ParentSize = full.ID, 12345
	if err := ts.Replace(ts.temp("v", []byte("B+C")), &merged, ok.ID); !errors.Is(err, ErrParentSize) {
		t.Fatalf("Replace with a wrong parent size: %v, want ErrParentSize", err)
	}
	merged.ParentSize = full.VolumeSize
	if err := ts.Replace(ts.temp("v", []byte("B+C")), &merged, ok.ID); err != nil {
		t.Fatal(err)
	}
}

// commit2 commits an incremental of parent at the given volume size.
func (ts *testStore) commit2(volume, parent string, size int64) Snapshot {
	ts.t.Helper()
	var p Snapshot
	mustView(ts.t, ts, func(tx *Tx) (err error) { p, err = tx.Snapshot(parent); return err })
	snap := Snapshot{ID: newID(), Volume: volume, Parent: parent, ParentSize: p.VolumeSize, VolumeSize: size,
		Time: baseTime, FileDigest: "00"}
	if err := ts.Commit(ts.temp(volume, []byte("x")), &snap); err != nil {
		ts.t.Fatal(err)
	}
	return snap
}

// A catalog that holds such a record (written directly, as a bug or an
// older thinback could) is reported damaged, naming both sizes; a record
// without a parent size (an older thinback's) is not.
func TestCheckParentSize(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	full := ts.commit("v", "", []byte("full"))
	bad := Snapshot{ID: newID(), Volume: "v", Parent: full.ID, ParentSize: 4096, VolumeSize: full.VolumeSize,
		Time: baseTime, FileDigest: "00", File: "volumes/v/bad.tbk"}
	old := Snapshot{ID: newID(), Volume: "v", Parent: full.ID, VolumeSize: full.VolumeSize,
		Time: baseTime, FileDigest: "00", File: "volumes/v/old.tbk"}
	mustUpdate(t, ts, func(tx *Tx) error {
		if err := tx.PutSnapshot(&bad); err != nil {
			return err
		}
		return tx.PutSnapshot(&old)
	})
	mustView(t, ts, func(tx *Tx) error {
		var found []error
		for _, p := range tx.Check(CheckOptions{}) {
			var ce *CheckError
			if errors.As(p, &ce) && ce.Problem == ErrParentSize {
				found = append(found, p)
				if ce.Snapshot != bad.ID || !strings.Contains(p.Error(), "4096") ||
					!strings.Contains(p.Error(), strconv.FormatInt(full.VolumeSize, 10)) {
					t.Errorf("problem %v does not name %s and both sizes", p, bad.ID)
				}
			}
		}
		if len(found) != 1 {
			t.Errorf("Check found %d parent size problems, want 1: %v", len(found), found)
		}
		return nil
	})
	ts.expect(ErrParentSize, ErrFileMissing, ErrFileMissing)
}

func TestFullHasNoParentSize(t *testing.T) {
	s := Snapshot{ID: newID(), Volume: "v", ParentSize: 1, Time: baseTime}
	if err := s.validateFields(); err == nil {
		t.Error("a full with a parent size validated")
	}
	s.ParentSize, s.Parent = -1, newID()
	if err := s.validateFields(); err == nil {
		t.Error("a negative parent size validated")
	}
}
