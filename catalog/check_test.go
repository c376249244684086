package catalog

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// putSnapRaw stores a snapshot record bypassing PutSnapshot (and its
// index), as a damaged catalog or a bug would.
func putSnapRaw(t *testing.T, path string, s Snapshot) {
	t.Helper()
	data, err := json.Marshal(&s)
	if err != nil {
		t.Fatal(err)
	}
	putRaw(t, path, bucketSnapshots, s.ID, data)
}

func rawSnap(volume, parent string, seq uint64) Snapshot {
	id := newID()
	return Snapshot{ID: id, Volume: volume, Parent: parent, Seq: seq, Time: baseTime, FileDigest: "00",
		File: fmt.Sprintf("volumes/%s/%s.tbk", DirName(volume), id)}
}

// TestCheckFindsEverything builds one catalog per kind of inconsistency and
// checks that Check reports exactly that, naming the snapshot concerned.
func TestCheckFindsEverything(t *testing.T) {
	for _, tc := range []struct {
		name  string
		build func(t *testing.T, path string, tx *Tx) (culprit string)
		want  []error
	}{
		{"missing parent", func(t *testing.T, _ string, tx *Tx) string {
			orphan := putSnap(t, tx, "v", newID(), baseTime)
			putSnap(t, tx, "v", orphan.ID, baseTime)
			return orphan.ID
		}, []error{ErrMissingParent, ErrBrokenChain}},
		{"parent in another volume", func(t *testing.T, _ string, tx *Tx) string {
			w := putSnap(t, tx, "w", "", baseTime)
			putSnap(t, tx, "v", "", baseTime) // keeps v's seq ahead of w's
			crossed := putSnap(t, tx, "v", w.ID, baseTime)
			return crossed.ID
		}, []error{ErrParentVolume}},
		{"parent not older", func(t *testing.T, _ string, tx *Tx) string {
			late := Snapshot{ID: newID(), Volume: "v", Seq: 5, Time: baseTime, FileDigest: "00", File: "volumes/v/late.tbk"}
			if err := tx.PutSnapshot(&late); err != nil {
				t.Fatal(err)
			}
			early := Snapshot{ID: newID(), Volume: "v", Parent: late.ID, Seq: 3, Time: baseTime, FileDigest: "00", File: "volumes/v/early.tbk"}
			if err := tx.PutSnapshot(&early); err != nil {
				t.Fatal(err)
			}
			return early.ID
		}, []error{ErrParentOrder}},
		{"cycle", func(t *testing.T, _ string, tx *Tx) string {
			p, q := newID(), newID()
			for i, s := range []Snapshot{
				{ID: p, Volume: "v", Parent: q, Time: baseTime, FileDigest: "00", File: "volumes/v/p.tbk"},
				{ID: q, Volume: "v", Parent: p, Time: baseTime, FileDigest: "00", File: "volumes/v/q.tbk"},
			} {
				s.Seq = uint64(i + 1)
				if err := tx.PutSnapshot(&s); err != nil {
					t.Fatal(err)
				}
			}
			putSnap(t, tx, "v", q, baseTime) // depends on the loop
			return p
		}, []error{ErrCycle, ErrParentOrder, ErrBrokenChain}},
		{"duplicate seq", func(t *testing.T, path string, tx *Tx) string {
			a := putSnap(t, tx, "v", "", baseTime)
			return a.ID
		}, []error{ErrDuplicateSeq, ErrIndex}},
		{"duplicate file", func(t *testing.T, _ string, tx *Tx) string {
			a := putSnap(t, tx, "v", "", baseTime)
			b := Snapshot{ID: newID(), Volume: "v", Time: baseTime, FileDigest: "00", File: a.File}
			if err := tx.PutSnapshot(&b); err != nil {
				t.Fatal(err)
			}
			return a.ID
		}, []error{ErrDuplicateFile}},
		{"no digest", func(t *testing.T, _ string, tx *Tx) string {
			a := Snapshot{ID: newID(), Volume: "v", Time: baseTime, File: "volumes/v/a.tbk"}
			if err := tx.PutSnapshot(&a); err != nil {
				t.Fatal(err)
			}
			return a.ID
		}, []error{ErrNoDigest}},
		{"unknown volume and stale index", func(t *testing.T, _ string, tx *Tx) string {
			a := putSnap(t, tx, "v", "", baseTime)
			// Deleting the volume record directly leaves its snapshots.
			if err := tx.btx.Bucket(bucketVolumes).Delete([]byte("v")); err != nil {
				t.Fatal(err)
			}
			// An index entry for a snapshot that does not exist.
			if err := tx.seqBucket("v").Put(seqKey(9), []byte(newID())); err != nil {
				t.Fatal(err)
			}
			return a.ID
		}, []error{ErrUnknownVolume, ErrIndex}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, c := newTestFile(t)
			var culprit string
			mustUpdate(t, fileDB(path), func(tx *Tx) error {
				for _, v := range []string{"v", "w"} {
					if err := tx.PutVolume(testVolume(v)); err != nil {
						return err
					}
				}
				culprit = tc.build(t, path, tx)
				return nil
			})
			if tc.name == "duplicate seq" {
				// A second record with seq 1, outside the index.
				putSnapRaw(t, path, rawSnap("v", "", 1))
			}
			mustView(t, fileDB(path), func(tx *Tx) error {
				problems := tx.Check(CheckOptions{})
				named := false
				for _, p := range problems {
					var ce *CheckError
					if errors.As(p, &ce) && ce.Snapshot == culprit && strings.Contains(p.Error(), culprit) {
						named = true
					}
				}
				if !named {
					t.Errorf("no problem names %s: %v", culprit, problems)
				}
				return nil
			})
			c.expect(tc.want...)
		})
	}
}

// TestChainErrors: Chain refuses what Check reports.
func TestChainErrors(t *testing.T) {
	path, c := newTestFile(t)
	mustUpdate(t, fileDB(path), func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		lost := putSnap(t, tx, "v", newID(), baseTime)
		if _, err := tx.Chain(lost.ID); !errors.Is(err, ErrBrokenChain) {
			t.Errorf("Chain over a missing parent: %v", err)
		}
		p, q := newID(), newID()
		for i, s := range []Snapshot{
			{ID: p, Volume: "v", Parent: q, Time: baseTime, FileDigest: "00", File: "volumes/v/p.tbk"},
			{ID: q, Volume: "v", Parent: p, Time: baseTime, FileDigest: "00", File: "volumes/v/q.tbk"},
		} {
			s.Seq = uint64(10 + i)
			if err := tx.PutSnapshot(&s); err != nil {
				return err
			}
		}
		if _, err := tx.Chain(p); !errors.Is(err, ErrCycle) {
			t.Errorf("Chain over a loop: %v", err)
		}
		return nil
	})
	c.expect(ErrMissingParent, ErrCycle, ErrParentOrder)
}

func TestCheckFiles(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("full"))
	b := ts.commit("v", a.ID, []byte("incremental one"))
	c := ts.commit("v", b.ID, []byte("incremental two"))
	d := ts.commit("v", c.ID, []byte("incremental three"))

	// By hand: delete one file, truncate another, replace one by a
	// directory.
	if err := os.Remove(ts.Path(b.File)); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ts.Path(c.File), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(ts.Path(d.File)); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(ts.Path(d.File), 0o700); err != nil {
		t.Fatal(err)
	}
	problems, err := ts.Check(CheckOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]error{b.ID: ErrFileMissing, c.ID: ErrFileSize, d.ID: ErrFileMissing}
	for _, p := range problems {
		var ce *CheckError
		if !errors.As(p, &ce) || !errors.Is(p, want[ce.Snapshot]) || !strings.Contains(p.Error(), ce.File) {
			t.Errorf("unexpected problem: %v", p)
			continue
		}
		if ce.File != map[string]string{b.ID: b.File, c.ID: c.File, d.ID: d.File}[ce.Snapshot] {
			t.Errorf("problem names file %q", ce.File)
		}
		delete(want, ce.Snapshot)
	}
	if len(want) != 0 {
		t.Errorf("not reported: %v (got %v)", want, problems)
	}
	if !strings.Contains(fmt.Sprint(problems), "3 bytes on disk, 15 recorded") {
		t.Errorf("size problem does not say the sizes: %v", problems)
	}
	ts.expect(ErrFileMissing, ErrFileSize, ErrFileMissing)
}

func TestCheckVerifyHook(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("full"))
	b := ts.commit("v", a.ID, []byte("incremental"))
	c := ts.commit("v", b.ID, []byte("tampered"))
	bad := errors.New("digest mismatch at record 3")

	var seen []string
	problems, err := ts.Check(CheckOptions{Verify: func(s Snapshot, path string) error {
		seen = append(seen, s.ID)
		if path != ts.Path(s.File) {
			t.Errorf("Verify got path %s for %s", path, s.File)
		}
		// Verify runs without the catalog held: writers are not blocked.
		if err := Update(ts.DBPath(), &Options{Timeout: -1}, func(*Tx) error { return nil }); err != nil {
			t.Errorf("catalog held during Verify: %v", err)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if digest(data) != s.FileDigest || s.ID == c.ID {
			return bad
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 {
		t.Errorf("Verify called for %v", seen)
	}
	if len(problems) != 1 || !errors.Is(problems[0], ErrFileDigest) || !errors.Is(problems[0], bad) ||
		!strings.Contains(problems[0].Error(), c.ID) {
		t.Errorf("problems = %v", problems)
	}

	// A snapshot pruned while the check ran is not reported.
	problems, err = ts.Check(CheckOptions{Verify: func(s Snapshot, _ string) error {
		if s.ID == c.ID {
			if err := ts.Remove("v", c.ID); err != nil {
				t.Error(err)
			}
			return bad
		}
		return nil
	}})
	if err != nil || len(problems) != 0 {
		t.Errorf("problems with a concurrent prune: %v, %v", problems, err)
	}
}

// Check must not stop at the first problem: a catalog with many damaged
// snapshots reports each of them.
func TestCheckReportsAll(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	parent := ""
	var snaps []Snapshot
	for i := range 10 {
		s := ts.commit("v", parent, []byte(fmt.Sprint("data ", i)))
		snaps = append(snaps, s)
		parent = s.ID
	}
	for _, s := range snaps[:5] {
		if err := os.Remove(ts.Path(s.File)); err != nil {
			t.Fatal(err)
		}
		ts.expect(ErrFileMissing)
	}
	start := time.Now()
	problems, err := ts.Check(CheckOptions{})
	if err != nil || len(problems) != 5 {
		t.Errorf("Check = %d problems (%v), %v, in %v", len(problems), problems, err, time.Since(start))
	}
}
