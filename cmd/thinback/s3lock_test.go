package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

// TestS3KilledBackupNextRun: a backup to an S3 store killed with SIGKILL
// while it holds the volume's lock does not stop the next run on the same
// host: the next backup breaks the lock of the process that no longer
// runs, says so in a warning, and succeeds, with no --break-stale-lock.
func TestS3KilledBackupNextRun(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	setS3Env(t, srv, filepath.Join(dir, "cache"))
	store := srv.Location("killed")
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("thinback"), 128<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, dir, "backup", "--store", store, "--file", img, "--no-encrypt")

	// A backup that holds the lock (--pre runs under it) and is killed,
	// with its hook, as kill -9 or the OOM killer would.
	marker := filepath.Join(dir, "pre-ran")
	cmd := thinbackCmd(t, dir, "backup", "--store", store, "--file", img, "--pre", "touch "+marker+"; exec sleep 600")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		} else if !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			t.Fatalf("the backup ended (%v) before its --pre hook ran:\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done

	r := thinbackEnv(t, dir, nil, "backup", "--store", store, "--file", img)
	if r.code != 0 {
		t.Fatalf("the backup after a killed one: exit %d, want 0\n%s", r.code, r.stdout+r.stderr)
	}
	if !strings.Contains(r.stderr, "warning: broke the lock") || !strings.Contains(r.stderr, "no longer runs") {
		t.Fatalf("no warning line about the lock broken:\n%s", r.stderr)
	}
	run(t, dir, "verify", "--store", store)
}
