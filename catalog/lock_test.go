package catalog

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockVolumeTwoProcesses(t *testing.T) {
	ts := newTestStore(t)
	const volume = "vg0/vm1"
	cmd, stdin, out := startChild(t, "lock", ts.Dir(), "", childSpec{Volume: volume})
	if line, err := out.ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	unlock, err := ts.LockVolume(volume)
	if err == nil {
		unlock()
		t.Fatal("second process got the lock")
	}
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("LockVolume: %v, want a LockedError", err)
	}
	lockFile := filepath.Join(ts.Dir(), "locks", "vg0%2Fvm1.lock")
	if le.Volume != volume || le.Path != lockFile || le.PID != cmd.Process.Pid {
		t.Errorf("LockedError = %+v, want volume %s, file %s, pid %d", le, volume, lockFile, cmd.Process.Pid)
	}
	if msg := err.Error(); !strings.Contains(msg, `"vg0/vm1"`) || !strings.Contains(msg, lockFile) {
		t.Errorf("message %q does not name the volume and lock file", msg)
	}
	// Other volumes are not affected.
	other, err := ts.LockVolume("vg0/vm2")
	if err != nil {
		t.Fatal(err)
	}
	if err := other(); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	unlock, err = ts.LockVolume(volume)
	if err != nil {
		t.Fatalf("lock after the holder released it: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}

// A holder killed with SIGKILL leaves no stale lock: the kernel drops the
// flock with the process.
func TestLockVolumeKilledHolder(t *testing.T) {
	ts := newTestStore(t)
	cmd, _, out := startChild(t, "lock", ts.Dir(), "", childSpec{Volume: "v"})
	if line, err := out.ReadString('\n'); err != nil || line != "locked\n" {
		t.Fatalf("child: %q, %v", line, err)
	}
	if _, err := ts.LockVolume("v"); !errors.Is(err, ErrLocked) {
		t.Fatalf("LockVolume while held: %v", err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	unlock, err := ts.LockVolume("v")
	if err != nil {
		t.Fatalf("lock after the holder was killed: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestLockVolumeSameProcess(t *testing.T) {
	ts := newTestStore(t)
	unlock, err := ts.LockVolume("v")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.LockVolume("v"); !errors.Is(err, ErrLocked) {
		t.Errorf("second LockVolume in one process: %v, want ErrLocked", err)
	}
	// A second Store on the same directory shares the lock files.
	again, err := OpenStore(ts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.LockVolume("v"); !errors.Is(err, ErrLocked) {
		t.Errorf("LockVolume through another Store: %v, want ErrLocked", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
	unlock, err = again.LockVolume("v")
	if err != nil {
		t.Fatalf("relock: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.LockVolume(""); err == nil {
		t.Error("empty volume name locked")
	}
}

// The key slots have a lock of their own, which no volume's lock is,
// even that of a volume named like its file.
func TestLockKeySlots(t *testing.T) {
	ts := newTestStore(t)
	unlock, err := ts.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	again, err := OpenStore(ts.Dir())
	if err != nil {
		t.Fatal(err)
	}
	_, err = again.LockKeySlots()
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("second LockKeySlots: %v, want a LockedError", err)
	}
	lockFile := filepath.Join(ts.Dir(), "locks", ".keys.lock")
	if le.Volume != "" || le.Path != lockFile || !strings.Contains(err.Error(), "key slots") {
		t.Errorf("LockedError = %+v (%v), want the key slots' lock file %s", le, err, lockFile)
	}
	for _, volume := range []string{".keys", "keys"} {
		u, err := ts.LockVolume(volume)
		if err != nil {
			t.Fatalf("volume %q while the key slots are locked: %v", volume, err)
		}
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock, err = again.LockKeySlots()
	if err != nil {
		t.Fatalf("relock: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
}
