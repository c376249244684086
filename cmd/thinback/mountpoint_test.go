package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMountpointLinks: a mount point that is a symbolic link is refused
// (exit 2) before anything is mounted, since stopping thinback mount
// unmounts by path and the link could point elsewhere by then; links in
// the directories above are resolved once, so the path unmounted later
// has no link left in it.
func TestMountpointLinks(t *testing.T) {
	work := t.TempDir()
	run(t, work, "init", "--store", "store")
	real := filepath.Join(work, "real")
	if err := os.MkdirAll(filepath.Join(real, "mnt"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(real, "mnt"), filepath.Join(work, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, filepath.Join(work, "parent")); err != nil {
		t.Fatal(err)
	}

	_, err := checkMountpoint(filepath.Join(work, "link"))
	var ue usageError
	if !errors.As(err, &ue) || exitCode(err) != exitUsage || !strings.Contains(err.Error(), "symbolic link") {
		t.Fatalf("a link as mount point: %v (exit %d), want a usage error naming the link", err, exitCode(err))
	}
	out, err := thinbackCmd(t, work, "mount", "--store", "store", "link").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage || !strings.Contains(string(out), "is a symbolic link") {
		t.Fatalf("thinback mount on a link: %v\n%s", err, out)
	}
	if hasMount(filepath.Join(real, "mnt")) {
		t.Fatal("thinback mount on a link mounted something")
	}

	mp, err := checkMountpoint(filepath.Join(work, "parent", "mnt"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := filepath.EvalSymlinks(filepath.Join(real, "mnt"))
	if err != nil {
		t.Fatal(err)
	}
	if mp != want {
		t.Fatalf("a mount point below a linked directory: %s, want the resolved %s", mp, want)
	}
}
