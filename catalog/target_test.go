package catalog

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The state file of `thinback apply` is a catalog of targets alone, with no
// store around it.
func TestStateFileTargets(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	snap, undo := newID(), newID()
	started := time.Date(2026, 11, 20, 3, 4, 5, 6, time.UTC)
	in := Target{
		Key: "/dev/vg1/vm1-restored", Path: "/dev/vg1/vm1-restored", Volume: "vg0/vm1", VolumeUUID: "lvm-uuid",
		Snapshot: "", Dev: 0xfd01, Ino: 1234, Device: "lv-uuid:abc",
		Fingerprint: &Fingerprint{Size: 8192, BlockSize: 4096, Samples: []Sample{{Offset: 4096, Digest: strings.Repeat("ab", 32)}}},
		FileStat:    &FileStat{Size: 8192, MtimeNs: 1795662245123456789, CtimeNs: 1795662245987654321, Dev: 0xfd01, Ino: 1234},
		InProgress: &Mark{Snapshot: snap, Files: []string{"full.tbk", "incr1.tbk"}, UndoSnapshot: undo, Started: started,
			WroteFrom: 4096, WroteTo: 65536, Stopped: "full.tbk is damaged", Done: 8192, VolumeSize: 8192},
	}
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutTarget(&in) })
	if in.Updated.IsZero() {
		t.Error("PutTarget did not set Updated")
	}
	mustView(t, db, func(tx *Tx) error {
		got, err := tx.Target(in.Key)
		if err != nil {
			return err
		}
		// Times come back without a monotonic reading; compare them apart.
		if !got.Updated.Equal(in.Updated) || !got.InProgress.Started.Equal(started) {
			t.Errorf("times: %v %v", got.Updated, got.InProgress.Started)
		}
		got.Updated, got.InProgress.Started = in.Updated, started
		if !reflect.DeepEqual(got, in) {
			t.Errorf("Target = %+v, want %+v", got, in)
		}
		return nil
	})
	// The apply finishes: the mark goes, the snapshot is recorded.
	done := in
	done.InProgress, done.Snapshot, done.SnapshotName, done.SnapshotTime, done.Updated = nil, snap, "vm1.thinback.x", started, time.Time{}
	other := Target{Key: "/srv/img.raw", Path: "img.raw"}
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutTarget(&done); err != nil {
			return err
		}
		return tx.PutTarget(&other)
	})
	mustView(t, db, func(tx *Tx) error {
		ts, err := tx.Targets()
		if err != nil {
			return err
		}
		if len(ts) != 2 || ts[0].Key != "/dev/vg1/vm1-restored" || ts[1].Key != "/srv/img.raw" ||
			ts[0].InProgress != nil || ts[0].Snapshot != snap {
			t.Errorf("Targets = %+v", ts)
		}
		return nil
	})
	mustUpdate(t, db, func(tx *Tx) error { return tx.DeleteTarget(other.Key) })
	if err := db.Update(func(tx *Tx) error { return tx.DeleteTarget(other.Key) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteTarget: %v, want ErrNotFound", err)
	}
	// Nothing but the state file was created.
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != filepath.Base(path) {
		t.Errorf("state directory holds %v", entries)
	}
}

func TestTargetValidation(t *testing.T) {
	path, _ := newTestFile(t)
	for name, tg := range map[string]Target{
		"empty key":          {},
		"bad snapshot":       {Key: "k", Snapshot: "nope"},
		"bad mark":           {Key: "k", InProgress: &Mark{}},
		"bad undo":           {Key: "k", InProgress: &Mark{Snapshot: newID(), UndoSnapshot: "x"}},
		"bad volume":         {Key: "k", Volume: "a\x00"},
		"control in files":   {Key: "k", InProgress: &Mark{Snapshot: newID(), Files: make([]string, maxField+1)}},
		"bad written range":  {Key: "k", InProgress: &Mark{Snapshot: newID(), WroteFrom: 10, WroteTo: 5}},
		"done past the size": {Key: "k", InProgress: &Mark{Snapshot: newID(), Done: 8192, VolumeSize: 4096}},
		"huge stop reason":   {Key: "k", InProgress: &Mark{Snapshot: newID(), Stopped: string(make([]byte, maxField+1))}},
		"bad sample block":   {Key: "k", Fingerprint: &Fingerprint{Size: 4096, BlockSize: 7}},
		"sample outside":     {Key: "k", Fingerprint: &Fingerprint{Size: 4096, BlockSize: 4096, Samples: []Sample{{Offset: 4096, Digest: strings.Repeat("0", 64)}}}},
		"bad digest":         {Key: "k", Fingerprint: &Fingerprint{Size: 4096, BlockSize: 4096, Samples: []Sample{{Offset: 0, Digest: "xyz"}}}},
		"too many samples":   {Key: "k", Fingerprint: &Fingerprint{Size: 1 << 30, BlockSize: 4096, Samples: make([]Sample, maxSamples+1)}},
		"volume not UTF-8":   {Key: "k", Volume: "a\xff"},
		"negative stat size": {Key: "k", FileStat: &FileStat{Size: -1}},
	} {
		err := fileDB(path).Update(func(tx *Tx) error { return tx.PutTarget(&tg) })
		if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: %v, want ErrInvalidRecord", name, err)
		}
	}
}

func TestCheckTargets(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	ts.putVolume("w")
	a := ts.commit("v", "", []byte("a"))
	w := ts.commit("w", "", []byte("w"))
	mustUpdate(t, ts, func(tx *Tx) error {
		for _, tg := range []Target{
			{Key: "ok", Volume: "v", Snapshot: a.ID},
			{Key: "never applied", Volume: "v"},
			{Key: "unknown volume", Volume: "elsewhere", Snapshot: newID()}, // a state file's normal case
			{Key: "pruned", Volume: "v", Snapshot: newID()},
			{Key: "crossed", Volume: "v", Snapshot: w.ID},
		} {
			if err := tx.PutTarget(&tg); err != nil {
				return err
			}
		}
		return nil
	})
	mustView(t, ts, func(tx *Tx) error {
		for _, p := range tx.Check(CheckOptions{}) {
			var ce *CheckError
			if !errors.As(p, &ce) {
				t.Errorf("not a CheckError: %v", p)
				continue
			}
			if (ce.Target == "pruned") != errors.Is(p, ErrUnknownSnapshot) ||
				(ce.Target == "crossed") != errors.Is(p, ErrTargetVolume) {
				t.Errorf("unexpected problem %v", p)
			}
		}
		return nil
	})
	ts.expect(ErrUnknownSnapshot, ErrTargetVolume)
}

// A target records the volume name its file's header gave, exactly, even
// one that no catalog volume may have: the apply that wrote the target
// must be able to record it.
func TestTargetVolumeNameKeptExact(t *testing.T) {
	path, _ := newTestFile(t)
	for _, name := range []string{"vm\x1b[2J", "a\u202eb", "a\u0085b"} {
		tg := Target{Key: "k", Path: "/x", Volume: name}
		mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutTarget(&tg) })
		mustView(t, fileDB(path), func(tx *Tx) error {
			got, err := tx.Target("k")
			if err == nil && got.Volume != name {
				t.Errorf("volume %+q read back as %+q", name, got.Volume)
			}
			return err
		})
	}
}
