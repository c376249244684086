package s3store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

// TestCacheFileLinks: a symbolic link planted at any file of a store's
// cache is never written through, whatever the store does with the file
// (open, lock, write a snapshot): the file it points to stays as it was.
func TestCacheFileLinks(t *testing.T) {
	srv := s3test.Start(t)
	for i, name := range []string{"store", "store.tmp", "records.json", "records.json.tmp", "sync.lock", "catalog.db"} {
		t.Run(name, func(t *testing.T) {
			h := newHost(t, srv)
			h.cache = filepath.Join(h.cache, "cache")
			st := h.open()
			dir := st.CacheDir()
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(t.TempDir(), "victim")
			if err := os.WriteFile(victim, []byte("keep me"), 0o644); err != nil {
				t.Fatal(err)
			}
			planted := filepath.Join(dir, name)
			if err := os.Remove(planted); err != nil && !errors.Is(err, os.ErrNotExist) {
				t.Fatal(err)
			}
			if err := os.Symlink(victim, planted); err != nil {
				t.Fatal(err)
			}
			o := testOptions(h.cache)
			st, err := Open(testCtx(t), h.loc("p"), o)
			if err == nil {
				defer st.Close()
				var unlock func() error
				if unlock, err = st.LockVolume("v"); err == nil {
					write(t, st, "v", "", []byte{byte(i), 1, 2, 3}, 0)
					err = unlock()
				}
			}
			// A link where the store keeps its own file is either
			// replaced (a file written whole under a temp name) or
			// refused; never followed.
			if err != nil && !errors.Is(err, catalog.ErrNotOwn) {
				t.Fatalf("with a link at %s: %v, want success or ErrNotOwn", planted, err)
			}
			if got, rerr := os.ReadFile(victim); rerr != nil || string(got) != "keep me" {
				t.Fatalf("the link's target now holds %q (%v)", got, rerr)
			}
			if name == "store" {
				if fi, err := os.Lstat(planted); err != nil || !fi.Mode().IsRegular() {
					t.Fatalf("%s is not a regular file now: %v", planted, err)
				}
				if got, _ := os.ReadFile(planted); string(got) != h.loc("p").String()+"\n" {
					t.Fatalf("%s holds %q", planted, got)
				}
			}
		})
	}
}

// TestCacheDirRefused: a cache directory, or a store's directory in it,
// that belongs to another user or that group or others may write to is
// refused, naming it and what to do; so is a store's directory that is a
// link. The base directory may be a link the user made to a directory of
// their own.
func TestCacheDirRefused(t *testing.T) {
	srv := s3test.Start(t)
	chown := func(t *testing.T, dir string) {
		if os.Geteuid() != 0 {
			t.Skip("giving a directory to another user needs root")
		}
		if err := os.Chown(dir, 4242, 4242); err != nil {
			t.Fatal(err)
		}
	}
	chmod := func(mode os.FileMode) func(*testing.T, string) {
		return func(t *testing.T, dir string) {
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, c := range []struct {
		name    string
		store   bool // the store's directory, not the base
		change  func(*testing.T, string)
		problem string // "" if the directory is fine
	}{
		{"base world-writable", false, chmod(0o777), "writable by group or others"},
		{"base sticky world-writable", false, chmod(0o1777), "writable by group or others"},
		{"base group-writable", false, chmod(0o770), "writable by group or others"},
		{"base of another user", false, chown, "owned by uid 4242"},
		{"base readable by others", false, chmod(0o755), ""},
		{"store's world-writable", true, chmod(0o777), "writable by group or others"},
		{"store's group-writable", true, chmod(0o730), "writable by group or others"},
		{"store's of another user", true, chown, "owned by uid 4242"},
	} {
		t.Run(strings.ReplaceAll(c.name, " ", "-"), func(t *testing.T) {
			h := newHost(t, srv)
			h.cache = filepath.Join(h.cache, "cache")
			st := h.open()
			dir := h.cache
			if c.store {
				dir = st.CacheDir()
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			c.change(t, dir)
			st, err := Open(testCtx(t), h.loc("p"), testOptions(h.cache))
			if c.problem == "" {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				st.Close()
				return
			}
			var ce *CacheDirError
			if !errors.As(err, &ce) || !errors.Is(err, catalog.ErrNotOwn) || ce.Path != dir {
				if err == nil {
					st.Close()
				}
				t.Fatalf("open with %s: %v, want a CacheDirError naming %s", c.name, err, dir)
			}
			for _, want := range []string{dir, c.problem, "--cache"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q does not say %q", err, want)
				}
			}
		})
	}

	t.Run("store's a link", func(t *testing.T) {
		h := newHost(t, srv)
		st := h.open()
		dir := st.CacheDir()
		st.Close()
		mine := filepath.Join(t.TempDir(), "elsewhere")
		if err := os.Rename(dir, mine); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(mine, dir); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(testCtx(t), h.loc("p"), testOptions(h.cache)); !errors.Is(err, catalog.ErrNotOwn) {
			t.Fatalf("open with the store's cache a link: %v, want ErrNotOwn", err)
		}
	})
	t.Run("base a link of the user's", func(t *testing.T) {
		h := newHost(t, srv)
		real := t.TempDir()
		link := filepath.Join(t.TempDir(), "cache")
		if err := os.Symlink(real, link); err != nil {
			t.Fatal(err)
		}
		h.cache = link
		h.open()
	})
}
