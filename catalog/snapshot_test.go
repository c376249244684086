package catalog

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// putSnap records a snapshot with a plausible file name, without a store.
func putSnap(t *testing.T, tx *Tx, volume, parent string, tm time.Time) Snapshot {
	t.Helper()
	id := newID()
	s := Snapshot{ID: id, Volume: volume, Parent: parent, Time: tm, FileDigest: "00ff",
		File: fmt.Sprintf("volumes/%s/%s.tbk", DirName(volume), id)}
	if err := tx.PutSnapshot(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSeqAssignment(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	var a, b, c Snapshot
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		if err := tx.PutVolume(testVolume("w")); err != nil {
			return err
		}
		a = putSnap(t, tx, "v", "", baseTime)
		b = putSnap(t, tx, "v", a.ID, baseTime.Add(time.Hour))
		c = putSnap(t, tx, "v", b.ID, baseTime.Add(2*time.Hour))
		if w := putSnap(t, tx, "w", "", baseTime); w.Seq != 1 {
			t.Errorf("first seq of another volume = %d, want 1", w.Seq)
		}
		return nil
	})
	if a.Seq != 1 || b.Seq != 2 || c.Seq != 3 {
		t.Fatalf("seqs %d %d %d, want 1 2 3", a.Seq, b.Seq, c.Seq)
	}
	if a.Created.IsZero() {
		t.Error("Created not set")
	}
	mustUpdate(t, db, func(tx *Tx) error {
		// Updating keeps the seq; changing seq or volume is refused.
		upd := c
		upd.Seq, upd.Name = 0, "renamed"
		if err := tx.PutSnapshot(&upd); err != nil || upd.Seq != 3 {
			t.Errorf("update: seq %d, %v", upd.Seq, err)
		}
		upd.Seq = 7
		if err := tx.PutSnapshot(&upd); !errors.Is(err, ErrExist) {
			t.Errorf("changing seq: %v, want ErrExist", err)
		}
		moved := c
		moved.Volume = "w"
		if err := tx.PutSnapshot(&moved); !errors.Is(err, ErrExist) {
			t.Errorf("changing volume: %v, want ErrExist", err)
		}
		dup := Snapshot{ID: newID(), Volume: "v", Seq: 2, Time: baseTime, FileDigest: "00", File: "volumes/v/x.tbk"}
		if err := tx.PutSnapshot(&dup); !errors.Is(err, ErrExist) {
			t.Errorf("reusing seq 2: %v, want ErrExist", err)
		}
		orphan := Snapshot{ID: newID(), Volume: "nope", Time: baseTime, File: "volumes/nope/x.tbk"}
		if err := tx.PutSnapshot(&orphan); !errors.Is(err, ErrNotFound) {
			t.Errorf("snapshot of an unknown volume: %v, want ErrNotFound", err)
		}
		// Seqs never go backwards, even when the newest is deleted.
		if err := tx.DeleteSnapshot(c.ID); err != nil {
			return err
		}
		if d := putSnap(t, tx, "v", b.ID, baseTime.Add(3*time.Hour)); d.Seq != 4 {
			t.Errorf("seq after deleting the newest = %d, want 4", d.Seq)
		}
		if err := tx.DeleteSnapshot(c.ID); !errors.Is(err, ErrNotFound) {
			t.Errorf("deleting twice: %v", err)
		}
		return nil
	})
}

func TestSnapshotQueries(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	var a, b, c, d, e Snapshot
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		a = putSnap(t, tx, "v", "", baseTime)
		b = putSnap(t, tx, "v", a.ID, baseTime.Add(1*time.Hour))
		c = putSnap(t, tx, "v", b.ID, baseTime.Add(2*time.Hour))
		d = putSnap(t, tx, "v", "", baseTime.Add(3*time.Hour)) // a second full
		e = putSnap(t, tx, "v", d.ID, baseTime.Add(3*time.Hour))
		return nil
	})
	mustView(t, db, func(tx *Tx) error {
		all, err := tx.Snapshots("v")
		if err != nil {
			return err
		}
		if got, want := strings.Join(ids(all), ","), strings.Join(ids([]Snapshot{a, b, c, d, e}), ","); got != want {
			t.Errorf("Snapshots = %s, want %s", got, want)
		}
		if l, err := tx.Latest("v"); err != nil || l.ID != e.ID {
			t.Errorf("Latest = %s, %v, want %s", l.ID, err, e.ID)
		}
		if _, err := tx.Latest("none"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Latest of no volume: %v", err)
		}
		for _, tc := range []struct {
			name string
			id   string
			want []Snapshot
		}{{"c", c.ID, []Snapshot{a, b, c}}, {"a", a.ID, []Snapshot{a}}, {"e", e.ID, []Snapshot{d, e}}} {
			chain, err := tx.Chain(tc.id)
			if err != nil || strings.Join(ids(chain), ",") != strings.Join(ids(tc.want), ",") {
				t.Errorf("Chain(%s) = %v, %v", tc.name, ids(chain), err)
			}
		}
		for _, tc := range []struct {
			at   time.Time
			want string
		}{
			{baseTime.Add(-time.Second), ""},
			{baseTime, a.ID},
			{baseTime.Add(90 * time.Minute), b.ID},
			{baseTime.Add(2 * time.Hour), c.ID},
			{baseTime.Add(3 * time.Hour), e.ID}, // d and e share a time: the higher seq wins
			{baseTime.Add(100 * time.Hour), e.ID},
		} {
			s, err := tx.At("v", tc.at)
			if tc.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("At(%v) = %s, %v, want ErrNotFound", tc.at, s.ID, err)
				}
				continue
			}
			if err != nil || s.ID != tc.want {
				t.Errorf("At(%v) = %s, %v, want %s", tc.at, s.ID, err, tc.want)
			}
		}
		kids, err := tx.Children(a.ID)
		if err != nil || len(kids) != 1 || kids[0].ID != b.ID {
			t.Errorf("Children(a) = %v, %v", ids(kids), err)
		}
		got, err := tx.Snapshot(c.ID)
		if err != nil || got.Parent != b.ID || !got.Time.Equal(c.Time) || got.FileDigest != c.FileDigest {
			t.Errorf("Snapshot(c) = %+v, %v", got, err)
		}
		return nil
	})
}

func TestPutSnapshotValidation(t *testing.T) {
	path, _ := newTestFile(t)
	mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutVolume(testVolume("v")) })
	id := newID()
	good := Snapshot{ID: id, Volume: "v", Time: baseTime, File: "volumes/v/a.tbk", FileDigest: "ab"}
	for name, mutate := range map[string]func(*Snapshot){
		"empty id":       func(s *Snapshot) { s.ID = "" },
		"upper-case id":  func(s *Snapshot) { s.ID = "0F1E2D3C-4B5A-4978-8695-A4B3C2D1E0F0" },
		"braced id":      func(s *Snapshot) { s.ID = "{" + id[1:35] + "}" },
		"own parent":     func(s *Snapshot) { s.Parent = s.ID },
		"bad parent":     func(s *Snapshot) { s.Parent = "x" },
		"no time":        func(s *Snapshot) { s.Time = time.Time{} },
		"negative size":  func(s *Snapshot) { s.DataBytes = -1 },
		"digest not hex": func(s *Snapshot) { s.FileDigest = "xyz" },
		"digest upper":   func(s *Snapshot) { s.FileDigest = "AB" },
		"no file":        func(s *Snapshot) { s.File = "" },
		"absolute file":  func(s *Snapshot) { s.File = "/etc/passwd" },
		"escaping file":  func(s *Snapshot) { s.File = "volumes/../../etc/passwd" },
		"dot-dot file":   func(s *Snapshot) { s.File = "volumes/v/../../x" },
		"outside":        func(s *Snapshot) { s.File = "tmp/x.tbk" },
		"unclean":        func(s *Snapshot) { s.File = "volumes//v/x.tbk" },
		"no volume":      func(s *Snapshot) { s.Volume = "" },
		"huge name":      func(s *Snapshot) { s.Name = strings.Repeat("n", maxField+1) },
	} {
		s := good
		mutate(&s)
		err := fileDB(path).Update(func(tx *Tx) error { return tx.PutSnapshot(&s) })
		if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: %v, want ErrInvalidRecord", name, err)
		}
	}
	mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutSnapshot(&good) })
}

// putRaw stores a value under a key with bbolt directly, bypassing
// validation, as a damaged or hand-edited file would.
func putRaw(t *testing.T, path string, bucket []byte, key string, value []byte) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Update(func(btx *bolt.Tx) error {
		return btx.Bucket(bucket).Put([]byte(key), value)
	}); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptRecords(t *testing.T) {
	path, c := newTestFile(t)
	db := fileDB(path)
	var a Snapshot
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		a = putSnap(t, tx, "v", "", baseTime)
		return nil
	})
	// A snapshot record that is not JSON, one whose content contradicts
	// its key, a volume with an invalid block size, a target that is null.
	putRaw(t, path, bucketSnapshots, a.ID, []byte(`{"id": "`+a.ID+`", "volume": "v", "seq": 1, "time": `))
	bad := newID()
	putRaw(t, path, bucketSnapshots, bad, []byte(`{"id":"`+newID()+`","volume":"v","seq":9,"time":"2026-01-01T00:00:00Z","file":"volumes/v/x.tbk"}`))
	putRaw(t, path, bucketVolumes, "w", []byte(`{"name":"w","kind":"file","block_size":-4}`))
	putRaw(t, path, bucketTargets, "/dev/t", []byte(`null`))

	mustView(t, db, func(tx *Tx) error {
		_, err := tx.Snapshot(a.ID)
		var re *RecordError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &re) || re.Key != a.ID || !strings.Contains(err.Error(), a.ID) {
			t.Errorf("Snapshot of a corrupt record: %v", err)
		}
		if _, err := tx.Snapshot(bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Snapshot with a mismatched id: %v", err)
		}
		if _, err := tx.Snapshots("v"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Snapshots: %v", err)
		}
		if _, err := tx.Volume("w"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"w"`) {
			t.Errorf("Volume: %v", err)
		}
		if _, err := tx.Target("/dev/t"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Target: %v", err)
		}
		problems := tx.Check(CheckOptions{})
		named := map[string]bool{}
		for _, p := range problems {
			var ce *CheckError
			if errors.As(p, &ce) && errors.Is(p, ErrCorrupt) {
				named[ce.Snapshot+ce.Volume+ce.Target] = true
			}
		}
		for _, key := range []string{a.ID, bad, "w", "/dev/t"} {
			if !named[key] {
				t.Errorf("Check does not name corrupt record %q: %v", key, problems)
			}
		}
		return nil
	})
	// Corrupt records can be deleted; what is left is consistent.
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.DeleteSnapshot(a.ID); err != nil {
			return err
		}
		if err := tx.DeleteSnapshot(bad); err != nil {
			return err
		}
		if err := tx.DeleteTarget("/dev/t"); err != nil {
			return err
		}
		return nil
	})
	c.expect(ErrCorrupt) // the volume record is left damaged on purpose
	mustView(t, db, func(tx *Tx) error {
		if sb := tx.seqBucket("v"); sb != nil {
			if k, _ := sb.Cursor().First(); k != nil {
				t.Errorf("index entry %x left after deleting a corrupt record", k)
			}
		}
		return nil
	})
}

func TestResetSnapshots(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	var before []Snapshot
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		a := putSnap(t, tx, "v", "", baseTime)
		b := putSnap(t, tx, "v", a.ID, baseTime.Add(time.Hour))
		before = []Snapshot{a, b}
		return tx.PutTarget(&Target{Key: "/dev/x", Volume: "v", Snapshot: b.ID})
	})
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.ResetSnapshots(); err != nil {
			return err
		}
		if all, err := tx.AllSnapshots(); err != nil || len(all) != 0 {
			t.Errorf("after reset: %v, %v", all, err)
		}
		// Re-adding out of order, with explicit seqs, as a rebuild does.
		for _, i := range []int{1, 0} {
			s := before[i]
			if err := tx.PutSnapshot(&s); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, db, func(tx *Tx) error {
		all, err := tx.Snapshots("v")
		if err != nil || strings.Join(ids(all), ",") != strings.Join(ids(before), ",") {
			t.Errorf("after rebuild: %v, %v", ids(all), err)
		}
		if _, err := tx.Target("/dev/x"); err != nil {
			t.Errorf("target lost by reset: %v", err)
		}
		return nil
	})
}

// Records written by a newer thinback with fields this one does not know
// still read (the schema version is what refuses incompatible changes).
func TestForwardCompatibleRecords(t *testing.T) {
	path, _ := newTestFile(t)
	var s Snapshot
	mustUpdate(t, fileDB(path), func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("v")); err != nil {
			return err
		}
		s = putSnap(t, tx, "v", "", baseTime)
		return nil
	})
	putRaw(t, path, bucketVolumes, "v", []byte(`{"name":"v","kind":"lvm-classic","block_size":4096,"encryption":{"key_id":"k1"}}`))
	putRaw(t, path, bucketSnapshots, s.ID, []byte(`{"id":"`+s.ID+`","volume":"v","seq":1,"time":"2030-01-02T03:04:05Z",`+
		`"file":"`+s.File+`","file_digest":"00","replicated_to":["s3://x"],"future":{"a":1}}`))
	putRaw(t, path, bucketTargets, "/dev/x", []byte(`{"key":"/dev/x","path":"/dev/x","verified":true}`))
	mustView(t, fileDB(path), func(tx *Tx) error {
		v, err := tx.Volume("v")
		if err != nil || v.Kind != "lvm-classic" {
			t.Errorf("Volume = %+v, %v", v, err)
		}
		got, err := tx.Snapshot(s.ID)
		if err != nil || got.Seq != 1 || got.Time.Year() != 2030 {
			t.Errorf("Snapshot = %+v, %v", got, err)
		}
		if _, err := tx.Target("/dev/x"); err != nil {
			t.Errorf("Target: %v", err)
		}
		return nil
	})
}
