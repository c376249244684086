package catalog

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// Each crash test kills a child process with SIGKILL at one point of an
// operation, then does what the next run of thinback does (CleanTemp,
// RemoveOrphans) and checks that the store is consistent, that every
// recorded file exists, and that the operation either happened or did not.
// The final Check of the test store fails the test on any inconsistency.

// recover does the next run's cleanup and returns what it removed.
func (ts *testStore) recover() (temps, orphans []string) {
	ts.t.Helper()
	temps, err := ts.CleanTemp()
	if err != nil {
		ts.t.Fatal(err)
	}
	orphans, err = ts.RemoveOrphans()
	if err != nil {
		ts.t.Fatal(err)
	}
	return temps, orphans
}

func TestCrashCommit(t *testing.T) {
	for _, tc := range []struct {
		point           string
		recorded        bool
		temps, orphans  int
		orphanBeforeFix bool
	}{
		{point: "commit:synced", temps: 1},
		{point: "commit:renamed", orphans: 1, orphanBeforeFix: true},
		{point: "commit:dirsynced", orphans: 1, orphanBeforeFix: true},
		{point: "commit:recorded", recorded: true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			ts := newTestStore(t)
			ts.putVolume("vg0/vm1")
			full := ts.commit("vg0/vm1", "", []byte("full"))
			snap := Snapshot{ID: newID(), Volume: "vg0/vm1", Parent: full.ID, ParentSize: full.VolumeSize, VolumeSize: full.VolumeSize, Time: baseTime, FileDigest: digest([]byte("incr"))}
			runKilled(t, "commit", ts.Dir(), tc.point, childSpec{Snap: snap, Data: []byte("incr")})

			if tc.orphanBeforeFix {
				problems, err := ts.Check(CheckOptions{})
				if err != nil || len(problems) != 1 || !errors.Is(problems[0], ErrOrphan) {
					t.Errorf("before cleanup: %v, %v, want one orphan", problems, err)
				}
			}
			temps, orphans := ts.recover()
			if len(temps) != tc.temps || len(orphans) != tc.orphans {
				t.Errorf("cleanup removed temps %v, orphans %v", temps, orphans)
			}
			snaps := ts.snapshots("vg0/vm1")
			if got := len(snaps) == 2; got != tc.recorded {
				t.Fatalf("recorded = %v, want %v", got, tc.recorded)
			}
			if tc.recorded && string(ts.read(snaps[1].File)) != "incr" {
				t.Error("recorded file has the wrong contents")
			}
			// The next run succeeds.
			latest := snaps[len(snaps)-1]
			next := ts.commit("vg0/vm1", latest.ID, []byte("next"))
			if next.Seq <= latest.Seq {
				t.Errorf("next seq %d after %d", next.Seq, latest.Seq)
			}
		})
	}
}

func TestCrashReplace(t *testing.T) {
	for _, tc := range []struct {
		point    string
		replaced bool
		temps    int
		orphans  int
	}{
		{point: "replace:synced", temps: 1},
		{point: "replace:renamed", orphans: 1},
		{point: "replace:dirsynced", orphans: 1},
		{point: "replace:recorded", replaced: true, orphans: 2},
		{point: "remove:file#2", replaced: true, orphans: 1}, // one old file removed, one left
	} {
		t.Run(tc.point, func(t *testing.T) {
			ts := newTestStore(t)
			ts.putVolume("v")
			a := ts.commit("v", "", []byte("A"))
			b := ts.commit("v", a.ID, []byte("B"))
			c := ts.commit("v", b.ID, []byte("C"))
			merged := c
			merged.Parent = a.ID
			runKilled(t, "replace", ts.Dir(), tc.point, childSpec{Snap: merged, Data: []byte("B+C"), Remove: []string{b.ID}})

			temps, orphans := ts.recover()
			if len(temps) != tc.temps || len(orphans) != tc.orphans {
				t.Errorf("cleanup removed temps %v, orphans %v", temps, orphans)
			}
			snaps := ts.snapshots("v")
			want, contents := []string{a.ID, b.ID, c.ID}, "C"
			if tc.replaced {
				want, contents = []string{a.ID, c.ID}, "B+C"
			}
			if strings.Join(ids(snaps), ",") != strings.Join(want, ",") {
				t.Fatalf("snapshots %v, want %v", ids(snaps), want)
			}
			last := snaps[len(snaps)-1]
			if string(ts.read(last.File)) != contents {
				t.Errorf("%s holds %q, want %q", last.File, ts.read(last.File), contents)
			}
			mustView(t, ts, func(tx *Tx) error {
				chain, err := tx.Chain(c.ID)
				if err != nil || chain[0].ID != a.ID {
					t.Errorf("chain of C: %v, %v", ids(chain), err)
				}
				return nil
			})
			// The prune can be run again (or the next backup made).
			ts.commit("v", c.ID, []byte("D"))
		})
	}
}

func TestCrashRemove(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("A"))
	b := ts.commit("v", a.ID, []byte("B"))
	runKilled(t, "remove", ts.Dir(), "remove:recorded", childSpec{Snap: b})
	if _, err := os.Stat(ts.Path(b.File)); err != nil {
		t.Fatalf("killed before removing the file, but it is gone: %v", err)
	}
	_, orphans := ts.recover()
	if len(orphans) != 1 || orphans[0] != b.File {
		t.Errorf("orphans %v, want [%s]", orphans, b.File)
	}
	if got := ids(ts.snapshots("v")); len(got) != 1 || got[0] != a.ID {
		t.Errorf("snapshots %v", got)
	}
}
