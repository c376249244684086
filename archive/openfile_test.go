package archive

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpenFileRefusesSpecialFiles: only regular files and block devices
// open; a FIFO is refused without blocking in open(2) (this test would hang
// otherwise: nobody writes to the FIFO).
func TestOpenFileRefusesSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reg := filepath.Join(dir, "img")
	if err := os.WriteFile(reg, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{fifo, dir, "/dev/null"} {
		f, err := OpenFile(p)
		if !errors.Is(err, ErrFileKind) {
			t.Errorf("OpenFile(%s): %v, want ErrFileKind", p, err)
		}
		if f != nil {
			f.Close()
		}
		t.Log(err)
	}
	f, err := OpenFile(reg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err != nil || fl&unix.O_NONBLOCK != 0 {
		t.Fatalf("flags %#x (%v): O_NONBLOCK left set", fl, err)
	}
	if _, err := OpenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}
