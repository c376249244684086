package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// victimFile is a file outside any store, precious to someone.
func victimFile(t *testing.T, data string) (path string, untouched func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		got, err := os.ReadFile(path)
		fi, serr := os.Stat(path)
		if err != nil || serr != nil || string(got) != data || !fi.ModTime().Equal(old) {
			t.Errorf("%s was changed: %q, %v", path, got, err)
		}
	}
}

// Links planted in a store or in place of the state file are refused with
// exit 1 and a message naming them; what they point at is left alone.
func TestPlantedLinksCLI(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("data"), 64<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	thinback(t, dir, "", "send", "--file", img, "-o", "full.tbk").want(t, 0, "send")
	refused := func(t *testing.T, r result, path string) {
		t.Helper()
		if r.code != exitError {
			// Not fatal: whether the linked file survived is the point.
			t.Errorf("with a planted link: exit %d, want %d", r.code, exitError)
		}
		if !strings.Contains(r.stderr, path) || !strings.Contains(r.stderr, "symbolic link") {
			t.Errorf("the message does not name %s as a link: %s", path, r.stderr)
		}
	}
	t.Run("lock file", func(t *testing.T) {
		store := filepath.Join(t.TempDir(), "store")
		thinback(t, dir, "", "init", "--store", store).want(t, 0, "init")
		victim, untouched := victimFile(t, "root:$6$x:19000:0:99999:7:::\n")
		lock := filepath.Join(store, "locks", "disk.img.lock")
		if err := os.Symlink(victim, lock); err != nil {
			t.Fatal(err)
		}
		refused(t, thinback(t, dir, "", "backup", "--file", img, "--store", store), lock)
		untouched()
	})
	t.Run("catalog", func(t *testing.T) {
		store := filepath.Join(t.TempDir(), "store")
		if err := os.MkdirAll(store, 0o700); err != nil {
			t.Fatal(err)
		}
		victim, untouched := victimFile(t, "")
		db := filepath.Join(store, "catalog.db")
		if err := os.Symlink(victim, db); err != nil {
			t.Fatal(err)
		}
		refused(t, thinback(t, dir, "full.tbk", "receive", "--store", store), db)
		refused(t, thinback(t, dir, "", "list", "--store", store), db)
		untouched()
	})
	t.Run("tmp directory", func(t *testing.T) {
		store := filepath.Join(t.TempDir(), "store")
		thinback(t, dir, "", "init", "--store", store).want(t, 0, "init")
		outside := t.TempDir()
		tmp := filepath.Join(store, "tmp")
		if err := os.Remove(tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, tmp); err != nil {
			t.Fatal(err)
		}
		refused(t, thinback(t, dir, "full.tbk", "receive", "--store", store), tmp)
		if entries, _ := os.ReadDir(outside); len(entries) != 0 {
			t.Errorf("files appeared behind the link: %v", entries)
		}
	})
	t.Run("state file", func(t *testing.T) {
		victim, untouched := victimFile(t, "")
		state := filepath.Join(t.TempDir(), "state.db")
		if err := os.Symlink(victim, state); err != nil {
			t.Fatal(err)
		}
		refused(t, thinback(t, dir, "", "apply", "full.tbk", "--to", filepath.Join(t.TempDir(), "t.img"), "--state", state), state)
		untouched()
	})
	t.Run("state directory", func(t *testing.T) {
		outside := t.TempDir()
		victim, untouched := victimFile(t, "")
		if err := os.Symlink(victim, filepath.Join(outside, "state.db")); err != nil {
			t.Fatal(err)
		}
		link := filepath.Join(t.TempDir(), "thinback")
		if err := os.Symlink(outside, link); err != nil {
			t.Fatal(err)
		}
		refused(t, thinback(t, dir, "", "apply", "full.tbk", "--to", filepath.Join(t.TempDir(), "t.img"),
			"--state", filepath.Join(link, "state.db")), link)
		untouched()
		if entries, _ := os.ReadDir(outside); len(entries) != 1 {
			t.Errorf("files appeared behind the link: %v", entries)
		}
	})
}
