package catalog

// Tests on a real vfat filesystem: FAT has no hard links, no symlinks and
// a 4 GiB file size limit. They run inside a User-Mode Linux guest
// (TestGuest boots it), where the vfat module is loaded, and skip
// elsewhere.

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/lvmthin/lvmtest"
)

func TestGuest(t *testing.T) {
	lvmtest.RunGuest(t, "..", lvmtest.Options{Pattern: "^TestGuestVfat", Timeout: 5 * time.Minute})
}

// mountVfat makes a FAT32 filesystem in an image in the work dir (the
// guest's /tmp is a small tmpfs), mounts it and returns the mount point.
func mountVfat(t *testing.T) string {
	t.Helper()
	if !lvmtest.InGuest() {
		t.Skip("mounts a vfat filesystem: runs in the UML guest (TestGuest)")
	}
	work := os.Getenv("THINBACK_UML_WORK")
	img := filepath.Join(work, strings.ReplaceAll(t.Name(), "/", "_")+".vfat")
	mnt := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("truncate", "-s", "256M", img)
	run("mkfs.vfat", "-F", "32", img)
	run("mount", "-t", "vfat", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
		os.Remove(img)
	})
	return mnt
}

// TestGuestVfatPublish: every way of publishing works on FAT, including
// the exclusive-create fallback for kernels whose FAT lacks
// RENAME_NOREPLACE; a hard link is refused there, as the fallback expects.
func TestGuestVfatPublish(t *testing.T) {
	dir := mountVfat(t)
	if err := os.WriteFile(filepath.Join(dir, "a"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err == nil {
		t.Fatal("vfat made a hard link: the test does not test the fallback")
	}
	for _, m := range publishModes {
		t.Run(m.name, func(t *testing.T) {
			withMode(t, m.skipRenameat2, m.skipLink)
			final := filepath.Join(dir, m.name+".tbk")
			p, err := CreatePending(final)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.WriteString("complete"); err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(); err != nil {
				t.Fatalf("Publish on vfat: %v", err)
			}
			if b, err := os.ReadFile(final); err != nil || string(b) != "complete" {
				t.Errorf("published file = %q, %v", b, err)
			}
			q, err := CreatePending(final + ".2")
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(final+".2", []byte("theirs"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := q.Publish(); !errors.Is(err, os.ErrExist) {
				t.Errorf("Publish over an existing file on vfat: %v, want ErrExist", err)
			}
			if b, _ := os.ReadFile(final + ".2"); string(b) != "theirs" {
				t.Errorf("the existing file now holds %q", b)
			}
		})
	}
	for _, e := range entries(t, dir) {
		if strings.HasSuffix(e, ".tmp") {
			t.Errorf("temp file %s left on vfat", e)
		}
	}
}

// TestGuestVfatStore: a store on FAT commits and replaces in every mode.
func TestGuestVfatStore(t *testing.T) {
	dir := mountVfat(t)
	for _, m := range publishModes {
		t.Run(m.name, func(t *testing.T) {
			withMode(t, m.skipRenameat2, m.skipLink)
			ts := openTestStore(t, filepath.Join(dir, m.name))
			ts.putVolume("vg0/vm1")
			a := ts.commit("vg0/vm1", "", []byte("A"))
			b := ts.commit("vg0/vm1", a.ID, []byte("B"))
			merged := b
			merged.Parent, merged.ParentSize, merged.FileDigest = "", 0, digest([]byte("A+B"))
			if err := ts.Replace(ts.temp("vg0/vm1", []byte("A+B")), &merged, a.ID); err != nil {
				t.Fatal(err)
			}
			if got := ts.snapshots("vg0/vm1"); len(got) != 1 || string(ts.read(got[0].File)) != "A+B" {
				t.Errorf("after Replace on vfat: %+v", got)
			}
		})
	}
}

// TestGuestVfatTooLarge: a file that would pass FAT's 4 GiB limit fails
// with a TooLargeError that names FAT and its limit. FAT has no holes, but
// the kernel refuses a write past the limit before it zero-fills up to it,
// so nothing near 4 GiB is written.
func TestGuestVfatTooLarge(t *testing.T) {
	dir := mountVfat(t)
	p, err := CreatePending(filepath.Join(dir, "big.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Discard()
	_, err = p.WriteAt([]byte{1}, fatMaxFileSize)
	err = WriteError(p.Name(), err)
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.FS != "FAT" || tl.Limit != fatMaxFileSize {
		t.Fatalf("a write past 4 GiB on vfat: %v, want a TooLargeError naming FAT", err)
	}
	t.Logf("message: %v", err)
	if err := p.Discard(); err != nil {
		t.Fatal(err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("left on vfat: %q", got)
	}
}
