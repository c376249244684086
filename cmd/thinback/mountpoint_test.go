package main

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
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

// TestMountRelinkedParent: thinback mount given a path through a linked
// directory, whose link then points elsewhere (at a directory with a
// file system of its own mounted on it), unmounts on SIGTERM the tree it
// mounted, and leaves the other file system alone.
func TestMountRelinkedParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	work := t.TempDir()
	run(t, work, "init", "--store", "store")
	real, other := filepath.Join(work, "real"), filepath.Join(work, "other")
	for _, d := range []string{filepath.Join(real, "mnt"), filepath.Join(other, "mnt")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", filepath.Join(other, "mnt"), "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(filepath.Join(other, "mnt"), unix.MNT_DETACH) })
	if err := os.Symlink(real, filepath.Join(work, "parent")); err != nil {
		t.Fatal(err)
	}

	cmd := thinbackCmd(t, work, "mount", "--store", "store", filepath.Join("parent", "mnt"))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if hasMount(filepath.Join(real, "mnt")) {
			unix.Unmount(filepath.Join(real, "mnt"), unix.MNT_DETACH)
		}
		cmd.Process.Kill()
	})
	out := &syncBuffer{}
	mounted := make(chan bool, 1)
	done := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		said := false
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if !said && strings.Contains(sc.Text(), "mounted store") {
				said = true
				mounted <- true
			}
		}
		if !said {
			mounted <- false
		}
		done <- cmd.Wait()
	}()
	if !<-mounted {
		<-done
		t.Fatalf("thinback mount failed:\n%s", out.String())
	}
	if !hasMount(filepath.Join(real, "mnt")) {
		t.Fatalf("%s/mnt is not the mount point in /proc/self/mounts:\n%s", real, out.String())
	}
	// The link now leads to the tmpfs.
	if err := os.Remove(filepath.Join(work, "parent")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(other, filepath.Join(work, "parent")); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("thinback mount after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("thinback mount did not stop on SIGTERM:\n%s", out.String())
	}
	if hasMount(filepath.Join(real, "mnt")) {
		t.Fatalf("the tree is still mounted after SIGTERM:\n%s", out.String())
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(mounts, []byte(" "+filepath.Join(other, "mnt")+" tmpfs ")) {
		t.Fatalf("SIGTERM unmounted the tmpfs the link leads to now:\n%s", out.String())
	}
}

// TestMountAdvice: what a failed mount advises, from the errors go-fuse
// returns. A user other than root without fusermount3 is told to install
// it (go-fuse's error is exec.LookPath's for /bin/fusermount, which wraps
// ENOENT: before, that read as a missing /dev/fuse); root, whose mount(2)
// failed first, is asked whether FUSE is there.
func TestMountAdvice(t *testing.T) {
	_, noHelper := exec.LookPath(filepath.Join(t.TempDir(), "fusermount")) // as go-fuse looks in /bin
	if noHelper == nil {
		t.Fatal("exec.LookPath found a file in an empty directory")
	}
	for _, tc := range []struct {
		err  error
		euid int
		want string
	}{
		{noHelper, 1000, "\nas a user other than root, mounting needs fusermount3 (Debian's fuse3 package)"},
		{noHelper, 0, "\nis FUSE available? (modprobe fuse; /dev/fuse must exist)"},
		{&os.PathError{Op: "open", Path: "/dev/fuse", Err: syscall.ENOENT}, 0, "\nis FUSE available? (modprobe fuse; /dev/fuse must exist)"},
		{syscall.ENODEV, 1000, "\nis FUSE available? (modprobe fuse; /dev/fuse must exist)"},
		{syscall.EPERM, 0, "\nmounting needs root, or fusermount3 (Debian's fuse3 package) for other users"},
		{errors.New("fusermount exited with code 256\n"), 1000, "\nas a user other than root, mounting goes through fusermount3 (Debian's fuse3 package): see its message above"},
		{errors.New("fusermount exited with code 256\n"), 0, ""},
	} {
		if got := mountAdvice(tc.err, tc.euid); got != tc.want {
			t.Errorf("mountAdvice(%v, euid %d) = %q, want %q", tc.err, tc.euid, got, tc.want)
		}
	}
}
