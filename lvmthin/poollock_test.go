package lvmthin

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockDirMade: the lock directory is made private (0700) whatever the
// umask, and a lock file in it is the caller's alone (0600).
func TestLockDirMade(t *testing.T) {
	withLockDir(t)
	f, err := lockPool(context.Background(), Name{"vg0", "pool"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := os.Lstat(lockDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("lock directory mode %04o, want no access for group and others", fi.Mode().Perm())
	}
	ffi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if ffi.Mode().Perm()&0o077 != 0 {
		t.Errorf("lock file mode %04o, want no access for group and others", ffi.Mode().Perm())
	}
}

// TestLockDirRefused: a lock directory that is a symbolic link, is not a
// directory, belongs to another user or is writable by group or others is
// refused, naming it, and nothing is created through it.
func TestLockDirRefused(t *testing.T) {
	pool := Name{"vg0", "pool"}
	cases := []struct {
		name, problem string
		plant         func(t *testing.T, dir, elsewhere string)
	}{
		{"symlink", "symbolic link", func(t *testing.T, dir, elsewhere string) {
			if err := os.Symlink(elsewhere, dir); err != nil {
				t.Fatal(err)
			}
		}},
		{"file", "not a directory", func(t *testing.T, dir, _ string) {
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"world-writable", "writable by group or others", func(t *testing.T, dir, _ string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o1777); err != nil {
				t.Fatal(err)
			}
		}},
		{"group-writable", "writable by group or others", func(t *testing.T, dir, _ string) {
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, 0o770); err != nil {
				t.Fatal(err)
			}
		}},
		{"other owner", "owned by uid", func(t *testing.T, dir, _ string) {
			if os.Geteuid() != 0 {
				t.Skip("giving a directory to another user needs root")
			}
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(dir, 4242, 4242); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := t.TempDir()
			elsewhere := filepath.Join(base, "elsewhere")
			if err := os.Mkdir(elsewhere, 0o700); err != nil {
				t.Fatal(err)
			}
			old := lockDir
			lockDir = filepath.Join(base, "thinback")
			t.Cleanup(func() { lockDir = old })
			c.plant(t, lockDir, elsewhere)

			f, err := lockPool(context.Background(), pool, true)
			var de *LockDirError
			if !errors.As(err, &de) {
				if f != nil {
					f.Close()
				}
				t.Fatalf("lockPool = %v, want a LockDirError", err)
			}
			if de.Path != lockDir || !strings.Contains(err.Error(), lockDir) || !strings.Contains(err.Error(), c.problem) {
				t.Errorf("error %q does not name %s and say it %s", err, lockDir, c.problem)
			}
			if ents, _ := os.ReadDir(elsewhere); len(ents) != 0 {
				t.Errorf("a file was created through the link: %v", ents)
			}
		})
	}
}

// TestLockFileLinkRefused: a symbolic link (dangling or not), a hard link
// or a named pipe planted at a pool's lock file is refused; the file the
// link points to is neither created nor truncated.
func TestLockFileLinkRefused(t *testing.T) {
	pool := Name{"vg0", "pool"}
	for _, kind := range []string{"dangling symlink", "symlink", "hard link", "fifo"} {
		t.Run(kind, func(t *testing.T) {
			withLockDir(t)
			if err := privateLockDir(lockDir); err != nil {
				t.Fatal(err)
			}
			victim := filepath.Join(t.TempDir(), "nologin")
			lock := filepath.Join(lockDir, poolDMName(pool)+".lock")
			var err error
			switch kind {
			case "dangling symlink":
				err = os.Symlink(victim, lock)
			case "symlink":
				if err = os.WriteFile(victim, []byte("keep me"), 0o644); err == nil {
					err = os.Symlink(victim, lock)
				}
			case "hard link":
				if err = os.WriteFile(victim, []byte("keep me"), 0o644); err == nil {
					err = os.Link(victim, lock)
				}
			case "fifo":
				err = mkfifo(lock)
			}
			if err != nil {
				t.Fatal(err)
			}
			f, err := lockPool(context.Background(), pool, true)
			var de *LockDirError
			if !errors.As(err, &de) || de.Path != lock {
				if f != nil {
					f.Close()
				}
				t.Fatalf("lockPool = %v, want a LockDirError naming %s", err, lock)
			}
			data, err := os.ReadFile(victim)
			switch {
			case kind == "dangling symlink" && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("the link's target was created: %v", err)
			case kind != "dangling symlink" && kind != "fifo" && string(data) != "keep me":
				t.Errorf("the link's target now holds %q, %v", data, err)
			}
		})
	}
}

// TestLockBusyNamesHolder: a process that finds a pool's lock busy says
// which process holds it, running what, since when.
func TestLockBusyNamesHolder(t *testing.T) {
	withLockDir(t)
	pool := Name{"vg0", "pool"}
	ctx := context.Background()
	before := time.Now().UTC().Truncate(time.Second)
	first, err := lockPool(ctx, pool, true)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = lockPool(ctx, pool, true)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: %v, want ErrLocked", err)
	}
	msg := err.Error()
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()), os.Args[0], " since "} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q does not name the holder (%q)", msg, want)
		}
	}
	i := strings.Index(msg, " since ")
	since, perr := time.Parse(time.RFC3339, strings.Fields(msg[i+len(" since "):])[0])
	if perr != nil || since.Before(before) || since.After(time.Now()) {
		t.Errorf("since %v (%v), want the time the first lock was taken (after %v)", since, perr, before)
	}

	// A waiter whose context ends says it too.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := lockPool(cctx, pool, false); !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("cancelled waiter: %v, want the holder named", err)
	}
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o600) }

// TestLockWaitingNamesHolder: a run that waits for a busy pool's lock is
// told once, with the holder named, and gets the lock when the holder
// lets go.
func TestLockWaitingNamesHolder(t *testing.T) {
	withLockDir(t)
	pool := Name{"vg0", "pool"}
	ctx := context.Background()
	first, err := lockPool(ctx, pool, true)
	if err != nil {
		t.Fatal(err)
	}
	told := make(chan string, 2)
	got := make(chan error, 1)
	go func() {
		f, err := lockPoolWaiting(ctx, pool, false, func(msg string) { told <- msg })
		if err == nil {
			f.Close()
		}
		got <- err
	}()
	msg := <-told
	if !strings.Contains(msg, "pid "+strconv.Itoa(os.Getpid())) || !strings.Contains(msg, "waiting") || !strings.Contains(msg, "vg0/pool") {
		t.Errorf("waiting line %q does not name the pool and the holder", msg)
	}
	select {
	case err := <-got:
		t.Fatalf("got the lock while the holder held it: %v", err)
	default:
	}
	first.Close()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if len(told) != 0 {
		t.Errorf("told more than once: %q", <-told)
	}
}
