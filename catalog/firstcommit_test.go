package catalog

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// noVolume checks that a failed first commit left no trace: no volume
// record, no directory in volumes/, nothing in tmp/ or locks/.
func (ts *testStore) noVolume(name string) {
	ts.t.Helper()
	mustView(ts.t, ts, func(tx *Tx) error {
		if _, err := tx.Volume(name); !errors.Is(err, ErrNotFound) {
			ts.t.Errorf("volume %s: %v, want it not recorded", name, err)
		}
		return nil
	})
	for _, sub := range []string{"volumes", "tmp", "locks"} {
		entries, err := os.ReadDir(filepath.Join(ts.Dir(), sub))
		if err != nil {
			ts.t.Fatal(err)
		}
		for _, e := range entries {
			ts.t.Errorf("%s/ holds %s", sub, e.Name())
		}
	}
}

// CommitVolume records a new volume with its first snapshot, in one
// transaction; Commit alone still wants the volume recorded first.
func TestCommitVolumeFirst(t *testing.T) {
	ts := newTestStore(t)
	snap := Snapshot{ID: newID(), Volume: "v", Time: baseTime, VolumeSize: 1 << 20, FileDigest: "00"}
	if err := ts.Commit(ts.temp("v", []byte("full")), &snap); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Commit of a volume not recorded: %v, want ErrNotFound", err)
	}
	ts.noVolume("v")
	vol := testVolume("v")
	if err := ts.CommitVolume(ts.temp("v", []byte("full")), vol, &snap); err != nil {
		t.Fatal(err)
	}
	if vol.Created.IsZero() || snap.Seq != 1 {
		t.Errorf("after CommitVolume: volume %+v, snapshot seq %d", vol, snap.Seq)
	}
	// An existing volume record is kept as it is.
	other := testVolume("v")
	other.BlockSize = 4096
	next := Snapshot{ID: newID(), Volume: "v", Parent: snap.ID, ParentSize: snap.VolumeSize, VolumeSize: snap.VolumeSize,
		Time: baseTime, FileDigest: "00"}
	if err := ts.CommitVolume(ts.temp("v", []byte("incr")), other, &next); err != nil {
		t.Fatal(err)
	}
	mustView(t, ts, func(tx *Tx) error {
		v, err := tx.Volume("v")
		if err == nil && v.BlockSize != vol.BlockSize {
			t.Errorf("volume record replaced: block size %d, want %d", v.BlockSize, vol.BlockSize)
		}
		return err
	})
	// A volume record that does not match the snapshot is refused.
	if err := ts.CommitVolume(ts.temp("w", []byte("x")), testVolume("v"),
		&Snapshot{ID: newID(), Volume: "w", Time: baseTime, FileDigest: "00"}); err == nil {
		t.Error("CommitVolume with another volume's record succeeded")
	}
}

// A first commit whose recording transaction fails after the file was
// installed removes the file and the volume directory it made, and
// records no volume.
func TestCommitVolumeFailsLate(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("w")
	snap := Snapshot{ID: newID(), Volume: "v", Time: baseTime, FileDigest: "00"}
	// Between the rename and the recording transaction, another writer
	// records a snapshot with the same ID: the transaction fails.
	hook = func(p string) {
		if p == "commit:dirsynced" {
			clash := Snapshot{ID: snap.ID, Volume: "w", Time: baseTime, FileDigest: "00", File: "volumes/w/clash.tbk"}
			mustUpdate(t, ts, func(tx *Tx) error { return tx.PutSnapshot(&clash) })
		}
	}
	defer func() { hook = nil }()
	err := ts.CommitVolume(ts.temp("v", []byte("full")), testVolume("v"), &snap)
	if !errors.Is(err, ErrExist) {
		t.Fatalf("CommitVolume: %v, want ErrExist", err)
	}
	hook = nil
	ts.noVolume("v")
	mustUpdate(t, ts, func(tx *Tx) error { return tx.DeleteSnapshot(snap.ID) })
}

// A first backup into a full store: the temp file was written, the
// commit cannot record it; nothing of the volume remains, and once there
// is space the same commit works.
func TestCommitVolumeNoSpace(t *testing.T) {
	mnt := mountTiny(t)
	filler := filepath.Join(mnt, "filler")
	ts := openTestStore(t, filepath.Join(mnt, "store"))
	ready := ts.temp("v", make([]byte, 64<<10))
	fill(t, filler)
	snap := Snapshot{ID: newID(), Volume: "v", Time: baseTime, FileDigest: "00"}
	err := ts.CommitVolume(ready, testVolume("v"), &snap)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("CommitVolume on a full disk: %v, want ErrNoSpace", err)
	}
	t.Logf("CommitVolume on a full disk: %v", err)
	ts.noVolume("v")
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := ts.CommitVolume(ts.temp("v", []byte("full")), testVolume("v"), &snap); err != nil {
		t.Fatal(err)
	}
}

// The write seam: a first delta whose writing fails leaves no volume; one
// that succeeds brings its volume with it.
func TestWriteVolumeDelta(t *testing.T) {
	ts := newTestStore(t)
	boom := errors.New("the source went away")
	id := newID()
	_, err := ts.WriteVolumeDelta(*testVolume("v"), id, func(w io.Writer) (Snapshot, error) {
		if _, err := io.WriteString(w, "half a file"); err != nil {
			return Snapshot{}, err
		}
		return Snapshot{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("WriteVolumeDelta: %v, want %v", err, boom)
	}
	ts.noVolume("v")
	snap, err := ts.WriteVolumeDelta(*testVolume("v"), id, func(w io.Writer) (Snapshot, error) {
		_, err := io.WriteString(w, "full")
		return Snapshot{ID: id, Volume: "v", Time: baseTime, FileDigest: "00"}, err
	})
	if err != nil || snap.Seq != 1 {
		t.Fatalf("WriteVolumeDelta: %+v, %v", snap, err)
	}
	mustView(t, ts, func(tx *Tx) error { _, err := tx.Volume("v"); return err })
}
