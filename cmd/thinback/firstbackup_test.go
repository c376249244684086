package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// noTrace checks that a store holds no volume and no file of one.
func noTrace(t *testing.T, dir, store string) {
	t.Helper()
	r := thinback(t, dir, "", "list", "--store", store)
	r.want(t, 0, "list")
	if !strings.Contains(r.stdout, "no volumes") {
		t.Errorf("list after a failed first backup:\n%s", r.stdout)
	}
	for _, sub := range []string{"volumes", "tmp", "locks"} {
		entries, err := os.ReadDir(filepath.Join(store, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			t.Errorf("%s/ holds %s after a failed first backup", sub, e.Name())
		}
	}
	thinback(t, dir, "", "verify", "--store", store).want(t, 0, "verify")
}

// A first backup interrupted (SIGINT, here from its --pre hook, so it
// arrives while the backup is under way) leaves no volume and no file;
// the next one works.
func TestFirstBackupInterruptedLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("data"), 256<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	// exec: the hook's sleep is the process the interrupted backup kills.
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store, "--pre", "kill -INT $PPID; exec sleep 600")
	r.want(t, exitInterrupted, "interrupted first backup")
	noTrace(t, dir, store)
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "backup")
	thinback(t, dir, "", "restore", "disk.img", "--store", store, "--to", "r.img").want(t, 0, "restore")
	sameFile(t, img, filepath.Join(dir, "r.img"))
}

// A first backup whose --pre hook fails (standing in for any failure
// before the delta file is complete) leaves no volume either.
func TestFirstBackupFailedLeavesNoTrace(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	thinback(t, dir, "", "backup", "--file", img, "--store", store, "--pre", "exit 3").want(t, exitError, "failed first backup")
	noTrace(t, dir, store)
}
