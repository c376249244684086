package main

import (
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/catalog"
)

// TestStateRecordFileStat: apply records a regular file target's size,
// times and inode in the state file, and a record written before they
// existed (an older thinback's) still works: the fingerprint decides, so
// an untouched target takes its incremental and one whose first block was
// written (as a mount writes) is refused with exit 5.
func TestStateRecordFileStat(t *testing.T) {
	dir := t.TempDir()
	img := make([]byte, 2<<20)
	rand.New(rand.NewSource(1)).Read(img)
	write := func(name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("a.img", img)
	copy(img[300000:], make([]byte, 70000))
	write("b.img", img)
	thinback(t, dir, "", "send", "--file", "a.img", "-o", "full.tbk").want(t, 0, "send full")
	thinback(t, dir, "", "send", "--file", "b.img", "--base-file", "a.img", "-o", "incr.tbk").want(t, 0, "send incr")

	state := filepath.Join(dir, "state.db")
	// stripped rewrites every record as an older thinback left it.
	stripped := func() {
		t.Helper()
		err := catalog.Update(state, nil, func(tx *catalog.Tx) error {
			ts, err := tx.Targets()
			if err != nil {
				return err
			}
			for _, tg := range ts {
				if tg.FileStat == nil {
					t.Errorf("target %s: no file stat recorded", tg.Key)
				}
				tg.FileStat = nil
				if err := tx.PutTarget(&tg); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	thinback(t, dir, "", "apply", "full.tbk", "--to", "t.img").want(t, 0, "apply full")
	stripped()
	thinback(t, dir, "", "apply", "incr.tbk", "--to", "t.img").want(t, 0, "the incremental, untouched, an old record")

	thinback(t, dir, "", "apply", "full.tbk", "--to", "t.img").want(t, 0, "apply full again")
	stripped()
	f, err := os.OpenFile(filepath.Join(dir, "t.img"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("mounted"), 1024); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	thinback(t, dir, "", "apply", "incr.tbk", "--to", "t.img").want(t, 5, "the incremental over a written superblock, an old record")
}
