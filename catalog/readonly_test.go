package catalog

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// treeState describes every file and directory under dir: what a store
// on read-only media must keep exactly.
func treeState(t *testing.T, dir string) map[string]string {
	t.Helper()
	state := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		desc := fmt.Sprintf("%v %d %v", fi.Mode(), fi.Size(), fi.ModTime().UnixNano())
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %x", sha256.Sum256(data))
		}
		state[p] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return state
}

// TestOpenReadOnly: a store opened read-only reads records and files as
// the store does, refuses every write with ErrReadOnly, and changes
// nothing in the store, not even the catalog file's times.
func TestOpenReadOnly(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	a := ts.commit("v", "", []byte("full"))
	b := ts.commit("v", a.ID, []byte("incremental"))
	before := treeState(t, ts.Dir())

	r, err := OpenReadOnly(ts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if r.String() != ts.Dir() {
		t.Errorf("String() = %s, want %s", r.String(), ts.Dir())
	}
	var chain []Snapshot
	if err := r.View(func(tx *Tx) (err error) { chain, err = tx.Chain(b.ID); return err }); err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || chain[0].ID != a.ID || chain[1].ID != b.ID {
		t.Fatalf("chain %+v", chain)
	}
	f, err := r.OpenDelta(b.File)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	f.Close()
	if err != nil || string(got) != "incremental" {
		t.Errorf("OpenDelta read %q, %v", got, err)
	}
	if files, err := r.Files(); err != nil || len(files) != 2 {
		t.Errorf("Files: %+v, %v", files, err)
	}
	if problems, err := r.Check(CheckOptions{}); err != nil || len(problems) != 0 {
		t.Errorf("Check: %v, %v", problems, err)
	}
	if !reflect.DeepEqual(r.LocalFiles(chain), ts.LocalFiles(chain)) {
		t.Errorf("LocalFiles differ from the store's")
	}

	writes := map[string]error{}
	_, writes["WriteDelta"] = r.WriteDelta("v", b.ID, func(io.Writer) (Snapshot, error) { return Snapshot{}, nil })
	_, writes["WriteVolumeDelta"] = r.WriteVolumeDelta(*testVolume("w"), b.ID, func(io.Writer) (Snapshot, error) { return Snapshot{}, nil })
	_, writes["ReplaceDelta"] = r.ReplaceDelta("v", b.ID, []string{a.ID}, func(io.Writer) (Snapshot, error) { return Snapshot{}, nil })
	_, writes["LockVolume"] = r.LockVolume("v")
	writes["Remove"] = r.Remove("v", b.ID)
	writes["SetRetention"] = r.SetRetention("v", Retention{KeepLast: 1})
	writes["Rebuild"] = r.Rebuild(nil, nil)
	_, writes["CleanTemp"] = r.CleanTemp()
	_, writes["RemoveOrphans"] = r.RemoveOrphans()
	for what, err := range writes {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only store: %v, want ErrReadOnly", what, err)
		}
	}
	if err := r.View(func(tx *Tx) error { return tx.PutVolume(testVolume("w")) }); !errors.Is(err, ErrReadOnly) {
		t.Errorf("PutVolume in View: %v, want ErrReadOnly", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if after := treeState(t, ts.Dir()); !reflect.DeepEqual(before, after) {
		t.Errorf("the store changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestReadOnlyLock: a read-only store holds the catalog's lock (shared)
// only while a View runs, so a writer is never held up between them.
func TestReadOnlyLock(t *testing.T) {
	ts := newTestStore(t)
	ts.putVolume("v")
	r, err := OpenReadOnly(ts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	noWait := &Options{Timeout: -1}
	if err := r.View(func(tx *Tx) error {
		if err := Update(ts.DBPath(), noWait, func(*Tx) error { return nil }); !errors.Is(err, ErrBusy) {
			t.Errorf("a write during a View: %v, want ErrBusy", err)
		}
		// Other readers share the lock.
		return View(ts.DBPath(), noWait, func(*Tx) error { return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if err := Update(ts.DBPath(), noWait, func(tx *Tx) error { return tx.PutVolume(testVolume("w")) }); err != nil {
		t.Errorf("a write between Views: %v", err)
	}
	if err := r.View(func(tx *Tx) error { _, err := tx.Volume("w"); return err }); err != nil {
		t.Errorf("the next View does not see the write: %v", err)
	}
}

// TestOpenReadOnlyNotStore: a directory without a catalog, or with
// something else than a file in its place, is not a store, and nothing is
// created in it.
func TestOpenReadOnlyNotStore(t *testing.T) {
	dir := t.TempDir()
	if _, err := OpenReadOnly(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenReadOnly of an empty directory: %v, want ErrNotExist", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("OpenReadOnly created %v", entries)
	}
	if err := os.Mkdir(filepath.Join(dir, "catalog.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReadOnly(dir); err == nil {
		t.Errorf("OpenReadOnly with a directory as catalog.db succeeded")
	}
}
