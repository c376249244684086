package restore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
)

// syncRecorder is a snapback file that, at each fsync, records what the
// snapback file and the target hold: a crash during that fsync can leave
// the disk with any of the bytes written since the one before.
type syncRecorder struct {
	*os.File
	target string
	points []crashPoint
}

type crashPoint struct{ file, target []byte }

func (s *syncRecorder) Sync() error {
	f, err := os.ReadFile(s.Name())
	if err != nil {
		return err
	}
	tg, err := os.ReadFile(s.target)
	if err != nil {
		return err
	}
	s.points = append(s.points, crashPoint{f, tg})
	return s.File.Sync()
}

// TestSnapbackTornByCrash: each range's first snapback record overwrites
// the END record that the previous checkpoint made durable; a power cut
// before the file's new size is committed leaves the old size with that
// END gone. At every checkpoint of a real apply, for every length the
// file can be left at between the two checkpoints, with the new bytes
// (and, shorter than an END, the old END's bytes after them: a torn
// page), and the target as it was then, the state says the apply was
// interrupted and both the torn snapback file undoes it and the same apply
// run again with it finishes it (and the file it continues then undoes
// it).
func TestSnapbackTornByCrash(t *testing.T) { snapbackTornByCrash(t, nil) }

// snapbackTornByCrash is TestSnapbackTornByCrash with files encrypted
// under key, if set.
func snapbackTornByCrash(t *testing.T, key *archive.Key) {
	verifyFirstLimit(t, 0) // exercise the record-by-record path as well
	w := newWorld(t)
	w.key = key
	v1 := w.image(w.random(96 * 4096))
	v2 := w.image(w.mutate(v1.data, 12))
	full, incr := w.delta(v1, nil), w.delta(v2, v1)
	target := filepath.Join(w.dir, "target")
	st := stateStore{}
	if _, err := st.apply(t, target, []string{full}, Options{Key: key}); err != nil {
		t.Fatal(err)
	}
	undo := filepath.Join(w.dir, "undo.tbk")
	rec := &syncRecorder{File: newSnapback(t, undo), target: target}
	var began State
	opts := Options{Snapback: rec, Key: key}
	opts.Begin = func(s State) error {
		began = s
		st[targetKey(t, target)] = s
		return nil
	}
	if _, err := st.apply(t, target, []string{incr}, opts); err != nil {
		t.Fatal(err)
	}
	if began.InProgress == nil {
		t.Fatal("Begin was not called")
	}
	// The first fsync is before Begin; the last is Close's, after the
	// target's.
	if len(rec.points) < 4 {
		t.Fatalf("only %d fsyncs of the snapback file: the test needs several ranges", len(rec.points))
	}
	tried := 0
	for k := 1; k < len(rec.points); k++ {
		prev, cur := rec.points[k-1], rec.points[k]
		p := int64(len(prev.file)) - archive.EndRecordLen // the durable END
		if bytes.Equal(cur.file[:len(prev.file)], prev.file) {
			continue // nothing overwritten: no tear possible
		}
		var torn [][]byte
		for n := p + 1; n < int64(len(cur.file)); n++ {
			// The new size not committed, or part of it (every length
			// near the END, a sample beyond).
			if n < p+3*archive.EndRecordLen || n%509 == 0 {
				torn = append(torn, cur.file[:n])
			}
		}
		for n := p + 1; n < int64(len(prev.file)); n++ {
			torn = append(torn, append(bytes.Clone(cur.file[:n]), prev.file[n:]...)) // a torn page
		}
		for i, file := range torn {
			name := fmt.Sprintf("point %d, %d bytes, variant %d", k, len(file), i)
			tried++
			// Undo from the interrupted state.
			runCrashCase(t, name, w, file, cur.target, began, func(t *testing.T, st stateStore, tg, sb string) {
				if _, err := st.apply(t, tg, []string{sb}, Options{Key: key}); err != nil {
					t.Fatalf("applying the torn snapback file: %v", err)
				}
				mustEqual(t, tg, v1.data)
			})
			if i%7 != 0 {
				continue // the rest is slower: a sample
			}
			// Run the apply again, continuing the file.
			runCrashCase(t, name, w, file, cur.target, began, func(t *testing.T, st stateStore, tg, sb string) {
				if _, err := st.apply(t, tg, []string{incr}, Options{Snapback: openRW(t, sb), ResumeSnapback: true, Key: key}); err != nil {
					t.Fatalf("running the apply again with the torn snapback file: %v", err)
				}
				mustEqual(t, tg, v2.data)
				if _, err := st.apply(t, tg, []string{sb}, Options{Key: key}); err != nil {
					t.Fatalf("applying the continued snapback file: %v", err)
				}
				mustEqual(t, tg, v1.data)
			})
		}
	}
	if tried == 0 {
		t.Fatal("no checkpoint overwrote an END")
	}

	// A torn file is read only as the snapback file of the interrupted
	// apply the state records, and only if it covers what that apply
	// recorded writing.
	last := rec.points[1] // the first range's checkpoint: not all of the volume
	torn := last.file[:len(last.file)-1]
	other := began
	m := *began.InProgress
	m.Undo = archive.DeriveID("test", "another apply's undo")
	other.InProgress = &m
	wrote := began
	m2 := *began.InProgress
	m2.WroteFrom, m2.WroteTo = 0, int64(len(v1.data))
	wrote.InProgress = &m2
	for name, state := range map[string]State{"another apply's": other, "past what it covers": wrote, "not interrupted": {}} {
		runCrashCase(t, name, w, torn, last.target, state, func(t *testing.T, st stateStore, tg, sb string) {
			before, err := os.ReadFile(tg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = st.apply(t, tg, []string{sb}, Options{Force: true, Key: key})
			if !errors.Is(err, archive.ErrTruncated) {
				t.Fatalf("a torn snapback file, state %s: %v, want ErrTruncated", name, err)
			}
			mustEqual(t, tg, before)
			// Nor is it continued, or cut.
			if _, err := st.apply(t, tg, []string{incr}, Options{Snapback: openRW(t, sb), ResumeSnapback: true, Key: key}); err == nil {
				t.Fatalf("a torn snapback file, state %s: continued", name)
			}
			mustEqual(t, tg, before)
			mustEqual(t, sb, torn)
		})
	}
}

func runCrashCase(t *testing.T, name string, w *world, file, target []byte, began State, check func(*testing.T, stateStore, string, string)) {
	t.Helper()
	t.Run("", func(t *testing.T) {
		dir := t.TempDir()
		tg, sb := filepath.Join(dir, "target"), filepath.Join(dir, "undo.tbk")
		if err := os.WriteFile(tg, target, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sb, file, 0o600); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s", name)
		check(t, stateStore{targetKey(t, tg): began}, tg, sb)
	})
}

// targetKey is the key of the target at path in a stateStore.
func targetKey(t testing.TB, path string) string {
	t.Helper()
	tg, err := OpenTarget(path, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	id, err := tg.Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id.Key
}
