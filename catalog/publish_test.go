package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// publishModes forces each way renameNoReplace has, so all three are
// tested on any filesystem (the guest tests run them on a real vfat).
var publishModes = []struct {
	name                    string
	skipRenameat2, skipLink bool
}{
	{"renameat2", false, false},
	{"link", true, false},
	{"exclusive-create", true, true},
}

func withMode(t *testing.T, skipRenameat2, skipLink bool) {
	t.Helper()
	saved := noReplace
	noReplace.skipRenameat2, noReplace.skipLink = skipRenameat2, skipLink
	t.Cleanup(func() { noReplace = saved })
}

// entries lists dir's names.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestPublish(t *testing.T) {
	for _, m := range publishModes {
		t.Run(m.name, func(t *testing.T) {
			withMode(t, m.skipRenameat2, m.skipLink)
			dir := t.TempDir()
			final := filepath.Join(dir, "out.tbk")
			p, err := CreatePending(final)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.WriteString("complete"); err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if err := p.Discard(); err != nil {
				t.Errorf("Discard after Publish: %v", err)
			}
			if b, err := os.ReadFile(final); err != nil || string(b) != "complete" {
				t.Errorf("published file = %q, %v", b, err)
			}
			if got := entries(t, dir); len(got) != 1 || got[0] != "out.tbk" {
				t.Errorf("directory holds %q, want only out.tbk", got)
			}
			if err := p.Publish(); !errors.Is(err, os.ErrClosed) {
				t.Errorf("second Publish: %v, want os.ErrClosed", err)
			}
		})
	}
}

// TestPublishNeverReplaces: a file that appears under the final name while
// the pending one is written is kept, and the pending one is removed.
func TestPublishNeverReplaces(t *testing.T) {
	for _, m := range publishModes {
		t.Run(m.name, func(t *testing.T) {
			withMode(t, m.skipRenameat2, m.skipLink)
			dir := t.TempDir()
			final := filepath.Join(dir, "out.tbk")
			p, err := CreatePending(final)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.WriteString("mine"); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(final, []byte("theirs"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := p.Publish(); !errors.Is(err, fs.ErrExist) {
				t.Fatalf("Publish over an existing file: %v, want fs.ErrExist", err)
			}
			if b, _ := os.ReadFile(final); string(b) != "theirs" {
				t.Errorf("the existing file now holds %q", b)
			}
			if got := entries(t, dir); len(got) != 1 {
				t.Errorf("directory holds %q, want only the existing file", got)
			}
		})
	}
}

// TestPublishPlaceholderTaken: in the exclusive-create mode, a placeholder
// that someone replaced between its creation and the rename is theirs: it
// is left alone, and the pending file is not published.
func TestPublishPlaceholderTaken(t *testing.T) {
	withMode(t, true, true)
	dir := t.TempDir()
	final := filepath.Join(dir, "out.tbk")
	p, err := CreatePending(final)
	if err != nil {
		t.Fatal(err)
	}
	hook = func(point string) {
		if point == "publish:reserved" {
			if err := os.Remove(final); err != nil {
				t.Error(err)
			}
			if err := os.WriteFile(final, []byte("theirs"), 0o600); err != nil {
				t.Error(err)
			}
		}
	}
	defer func() { hook = nil }()
	if err := p.Publish(); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Publish onto a taken placeholder: %v, want fs.ErrExist", err)
	}
	if b, _ := os.ReadFile(final); string(b) != "theirs" {
		t.Errorf("the other file now holds %q", b)
	}
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %q, want only the other file", got)
	}
}

func TestCreatePendingExists(t *testing.T) {
	dir := t.TempDir()
	final := filepath.Join(dir, "out.tbk")
	if err := os.Symlink("nowhere", final); err != nil {
		t.Fatal(err)
	}
	if _, err := CreatePending(final); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreatePending over a dangling symlink: %v, want fs.ErrExist", err)
	}
}

func TestPendingDiscard(t *testing.T) {
	dir := t.TempDir()
	p, err := CreatePending(filepath.Join(dir, "out.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WriteString("half"); err != nil {
		t.Fatal(err)
	}
	if err := p.Discard(); err != nil {
		t.Fatal(err)
	}
	if err := p.Discard(); err != nil {
		t.Errorf("second Discard: %v", err)
	}
	if got := entries(t, dir); len(got) != 0 {
		t.Errorf("Discard left %q", got)
	}
}

func TestCreateExclusive(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "undo.tbk")
	f, err := CreateExclusive(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("x"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateExclusive(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateExclusive of an existing file: %v, want fs.ErrExist", err)
	}
	link := filepath.Join(dir, "link.tbk")
	if err := os.Symlink(filepath.Join(dir, "target"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateExclusive(link); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateExclusive through a dangling symlink: %v, want fs.ErrExist", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "target")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("CreateExclusive created the symlink's target: %v", err)
	}
}

func TestSyncDir(t *testing.T) {
	if err := SyncDir(t.TempDir()); err != nil {
		t.Error(err)
	}
	if err := SyncDir(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("SyncDir of a missing directory: %v", err)
	}
}

func TestWriteError(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	wrap := func(errno syscall.Errno) error {
		return fmt.Errorf("writing: %w", &fs.PathError{Op: "write", Path: path, Err: errno})
	}
	for _, tc := range []struct {
		err  error
		want error
	}{
		{wrap(syscall.ENOSPC), ErrNoSpace},
		{wrap(syscall.EDQUOT), ErrNoSpace},
		{wrap(syscall.EFBIG), ErrTooLarge},
	} {
		got := WriteError(path, tc.err)
		if !errors.Is(got, tc.want) || !errors.Is(got, tc.err.(interface{ Unwrap() error }).Unwrap()) {
			t.Errorf("WriteError(%v) = %v, want %v keeping the cause", tc.err, got, tc.want)
		}
		if again := WriteError(path, got); again != got {
			t.Errorf("WriteError is not idempotent: %v", again)
		}
	}
	other := wrap(syscall.EIO)
	if got := WriteError(path, other); got != other {
		t.Errorf("WriteError(EIO) = %v, want it unchanged", got)
	}
	if WriteError(path, nil) != nil {
		t.Error("WriteError(nil) != nil")
	}
	var tl *TooLargeError
	if errors.As(WriteError(path, wrap(syscall.EFBIG)), &tl); tl == nil || tl.Path != path {
		t.Errorf("TooLargeError = %+v, want it naming %s", tl, path)
	}
}
