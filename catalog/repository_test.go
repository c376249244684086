package catalog

import (
	"errors"
	"io"
	"os"
	"reflect"
	"testing"
)

// TestStoreOpenDelta: a recorded file opens for reading at offsets and
// front to back; a link planted in its place, and names outside volumes/,
// are refused without following them.
func TestStoreOpenDelta(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("hello, delta"))
	r, err := ts.OpenDelta(a.File)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := r.ReadAt(buf, 7); err != nil || string(buf) != "delta" {
		t.Errorf("ReadAt: %q, %v", buf, err)
	}
	if r.Name() != ts.Path(a.File) {
		t.Errorf("Name() = %s, want %s", r.Name(), ts.Path(a.File))
	}
	r.Close()
	st, err := ts.OpenStream(a.File)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(st)
	st.Close()
	if err != nil || string(all) != "hello, delta" {
		t.Errorf("OpenStream read %q, %v", all, err)
	}

	for _, bad := range []string{"", "catalog.db", "volumes/../catalog.db", "/etc/passwd", "volumes/v"} {
		if _, err := ts.OpenDelta(bad); err == nil {
			t.Errorf("OpenDelta(%q) succeeded", bad)
		}
	}
	outside := ts.Path("secret")
	if err := os.WriteFile(outside, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(outside) })
	saved := ts.read(a.File)
	if err := os.Remove(ts.Path(a.File)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, ts.Path(a.File)); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.OpenDelta(a.File); !errors.Is(err, ErrNotOwn) {
		t.Errorf("OpenDelta of a symbolic link: %v, want ErrNotOwn", err)
	}
	if err := os.Remove(ts.Path(a.File)); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ts.Path(a.File), saved, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestStoreSetRetentionRebuild: a policy is recorded on its volume; a
// rebuild replaces the snapshot records, keeps existing volume records
// with their policy and adds the missing ones.
func TestStoreSetRetentionRebuild(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("a"))
	b := ts.commit("v", a.ID, []byte("bb"))
	r := Retention{KeepLast: 3, KeepDaily: 7}
	if err := ts.SetRetention("v", r); err != nil {
		t.Fatal(err)
	}
	if err := ts.SetRetention("nope", r); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetRetention of an unknown volume: %v", err)
	}
	// What a rebuild finds: both files, and a volume w it has no record of.
	mustUpdate(t, ts, func(tx *Tx) error { return tx.ResetSnapshots() })
	w := *testVolume("w")
	c := ts.commitVolume(&w, []byte("ccc"))
	mustUpdate(t, ts, func(tx *Tx) error {
		if err := tx.DeleteSnapshot(c.ID); err != nil {
			return err
		}
		return tx.DeleteVolume("w")
	})
	if err := ts.Rebuild([]Volume{*testVolume("v"), w}, []Snapshot{a, b, c}); err != nil {
		t.Fatal(err)
	}
	mustView(t, ts, func(tx *Tx) error {
		v, err := tx.Volume("v")
		if err != nil {
			return err
		}
		if v.Retention != r {
			t.Errorf("volume v's policy after the rebuild is %v, want %v", v.Retention, r)
		}
		if _, err := tx.Volume("w"); err != nil {
			t.Errorf("volume w after the rebuild: %v", err)
		}
		return nil
	})
	if got := ids(ts.snapshots("v")); !reflect.DeepEqual(got, []string{a.ID, b.ID}) {
		t.Errorf("v's snapshots after the rebuild: %q", got)
	}
	if err := ts.Rebuild(nil, []Snapshot{{ID: newID(), Volume: "x", Seq: 1, Time: baseTime, File: "volumes/x/1.tbk"}}); err == nil {
		t.Error("Rebuild of a snapshot without its volume's record succeeded")
	}
}

// commitVolume commits data as the first snapshot of vol, recording vol.
func (ts *testStore) commitVolume(vol *Volume, data []byte) Snapshot {
	ts.t.Helper()
	f, err := ts.CreateTemp(vol.Name)
	if err != nil {
		ts.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		ts.t.Fatal(err)
	}
	snap := Snapshot{ID: newID(), Volume: vol.Name, Time: baseTime, VolumeSize: 1 << 30, FileDigest: digest(data)}
	if err := ts.CommitVolume(f, vol, &snap); err != nil {
		ts.t.Fatal(err)
	}
	return snap
}

// TestParseFile: the layout's names parse back into what they say, and
// nothing else does.
func TestParseFile(t *testing.T) {
	id := "3f2a91c0-1111-4222-8333-444455556666"
	name := FileName("vg0/vm1", 12, id, 0)
	if name != "volumes/vg0%2Fvm1/00000012-"+id+".tbk" {
		t.Fatalf("FileName = %s", name)
	}
	f, ok := ParseFile(FileName("vg0/vm1", 12, id, 3))
	if !ok || f.Volume != "vg0/vm1" || f.Seq != 12 || f.ID != id || f.Gen != 3 {
		t.Errorf("ParseFile = %+v, %v", f, ok)
	}
	for _, bad := range []string{
		"volumes/vg0%2Fvm1/12.tbk",
		"volumes/vg0%2fvm1/00000012-" + id + ".tbk", // not canonical
		"records/vg0%2Fvm1/00000012-" + id + ".tbk",
		"volumes/a/b/00000012-" + id + ".tbk",
		"volumes/v/00000012-" + id + ".tbk.2",
	} {
		if f, ok := ParseFile(bad); ok {
			t.Errorf("ParseFile(%q) = %+v", bad, f)
		}
	}
}

// TestCheckReplace: the exported check refuses what Replace refuses.
func TestCheckReplace(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("a"))
	b := ts.commit("v", a.ID, []byte("b"))
	c := ts.commit("v", b.ID, []byte("c"))
	mustView(t, ts, func(tx *Tx) error {
		rec := c
		rec.Parent = a.ID
		rec.Seq = 0
		old, removed, err := tx.CheckReplace(&rec, []string{b.ID})
		if err != nil || old.ID != c.ID || len(removed) != 1 || removed[0].ID != b.ID || rec.Seq != c.Seq {
			t.Errorf("CheckReplace(c from a, remove b) = %+v, %+v, %v", old, removed, err)
		}
		rec = b
		if _, _, err := tx.CheckReplace(&rec, []string{a.ID}); !errors.Is(err, ErrInUse) {
			t.Errorf("CheckReplace leaving b on a removed parent: %v, want ErrInUse", err)
		}
		rec = c
		rec.Parent = a.ID
		if _, _, err := tx.CheckReplace(&rec, nil); err != nil {
			t.Errorf("CheckReplace(c from a, b kept): %v", err)
		}
		rec.ID = "bad"
		if _, _, err := tx.CheckReplace(&rec, nil); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("CheckReplace of a bad record: %v, want ErrInvalidRecord", err)
		}
		if n := tx.NextSeq("v"); n != 4 {
			t.Errorf("NextSeq = %d, want 4", n)
		}
		return nil
	})
}

// TestStoreLocalFiles: a local store keeps its directory, its catalog
// and every delta file of a chain on this machine.
func TestStoreLocalFiles(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("a"))
	b := ts.commit("v", a.ID, []byte("bb"))
	got := ts.LocalFiles([]Snapshot{a, b})
	want := []LocalFile{
		{What: "store", Path: ts.Dir(), Dir: true},
		{What: "catalog", Path: ts.DBPath()},
		{What: "delta file", Path: ts.Path(a.File)},
		{What: "delta file", Path: ts.Path(b.File)},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("LocalFiles = %+v, want %+v", got, want)
	}
	for _, f := range got {
		if _, err := os.Stat(f.Path); err != nil {
			t.Errorf("%s %s: %v", f.What, f.Path, err)
		}
	}
}
