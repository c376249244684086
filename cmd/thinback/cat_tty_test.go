package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPty returns the two ends of a new pseudo-terminal.
func openPty(t *testing.T) (master, tty *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	fd := int(m.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("ptsname: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return m, s
}

// TestCatRefusesTerminal: cat with a terminal as standard output (the
// README: "It refuses a terminal as standard output") exits 2 with a
// message saying what to do, and writes nothing to the terminal; -o FILE
// with the same terminal on standard output writes the image.
func TestCatRefusesTerminal(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("a disk image, not for a terminal\n"), 40000)
	if err := os.WriteFile(work+"/disk.img", img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	master, tty := openPty(t)

	cmd := thinbackCmd(t, work, "cat", "disk.img", "--store", "store")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = tty, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Read what reaches the terminal until its last holder, the command,
	// is gone (the master then reads EIO): a cat that wrote the image
	// would otherwise block on a full terminal.
	tty.Close()
	reached := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(master); reached <- b }()
	err := cmd.Wait()
	got := <-reached
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(stderr.String(), "refusing to write a disk image to a terminal") {
		t.Fatalf("cat to a terminal: %v, said %q; want exit 2 and a refusal", err, stderr.String())
	}
	if len(got) > 0 {
		t.Fatalf("the terminal got %d bytes: %.80q", len(got), got)
	}

	_, tty = openPty(t)
	cmd = thinbackCmd(t, work, "cat", "disk.img", "--store", "store", "-o", "out.raw")
	cmd.Stdout, cmd.Stderr = tty, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cat -o FILE with a terminal on standard output: %v\n%s", err, stderr.String())
	}
	sameFile(t, work+"/disk.img", work+"/out.raw")
}
