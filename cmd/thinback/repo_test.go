package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// restore --to one of the store's own files (the catalog, a delta file
// of the chain, a file inside the store) is refused with exit 6 naming
// it, and the file is left as it was: the store says which files it
// keeps on this machine (Repository.LocalFiles).
func TestRestoreOntoStoreFiles(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("data"), 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	thinback(t, dir, "", "backup", "--file", img, "--store", store, "--quiet").want(t, 0, "backup")
	files, err := filepath.Glob(filepath.Join(store, "volumes", "*", "*.tbk"))
	if err != nil || len(files) != 1 {
		t.Fatalf("delta files %q, %v", files, err)
	}
	delta, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ to, what string }{
		{filepath.Join(store, "catalog.db"), "the catalog"},
		{files[0], "the delta file"},
		{filepath.Join(store, "new.img"), "inside the store"},
	} {
		r := thinback(t, dir, "", "restore", "disk.img", "--store", store, "--to", c.to)
		r.want(t, exitTarget, "restore --to "+c.what)
		if !strings.Contains(r.stderr, c.what) {
			t.Errorf("restore --to %s: the message does not say %q: %s", c.to, c.what, r.stderr)
		}
	}
	if after, err := os.ReadFile(files[0]); err != nil || !bytes.Equal(after, delta) {
		t.Errorf("the delta file changed: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(store, "new.img")); err == nil {
		t.Errorf("new.img was created inside the store")
	}
	thinback(t, dir, "", "verify", "--store", store, "--quiet").want(t, 0, "verify after the refused restores")
}

// cat, like restore, refuses a named pipe planted in place of a delta
// file of the store with exit 1, naming it, and does not block on it:
// the point-in-time reader opens files through the store.
func TestCatPlantedPipe(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("data"), 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	store := filepath.Join(dir, "store")
	thinback(t, dir, "", "backup", "--file", img, "--store", store, "--quiet").want(t, 0, "backup")
	files, err := filepath.Glob(filepath.Join(store, "volumes", "*", "*.tbk"))
	if err != nil || len(files) != 1 {
		t.Fatalf("delta files %q, %v", files, err)
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(files[0], 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"cat", "disk.img", "--store", store, "-o", filepath.Join(dir, "out.img")},
		{"restore", "disk.img", "--store", store, "--to", filepath.Join(dir, "r.img")},
	} {
		r := thinback(t, dir, "", args...)
		r.want(t, exitError, args[0]+" with a pipe in place of its delta file")
		if !strings.Contains(r.stderr, files[0]) || !strings.Contains(r.stderr, "named pipe") {
			t.Errorf("%s: the message does not name %s as a named pipe: %s", args[0], files[0], r.stderr)
		}
	}
}
