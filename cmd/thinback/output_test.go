package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSyncStdout: fsync of a pipe or a character device is not an error
// (they cannot be synced); fsync of a regular file is checked, so a
// failure there is reported, not mistaken for "not syncable".
func TestSyncStdout(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if err := syncStdout(w); err != nil {
		t.Errorf("pipe: %v", err)
	}
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if err := syncStdout(null); err != nil {
		t.Errorf("%s: %v", os.DevNull, err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syncStdout(f); err != nil {
		t.Errorf("regular file: %v", err)
	}
	f.Close()
	// A file that fails to sync (here closed; an I/O error in the guest
	// would do the same) is an error: the old check took any
	// *os.PathError for a pipe.
	if err := syncStdout(f); err == nil {
		t.Error("a failed fsync of a regular file was ignored")
	}
}
