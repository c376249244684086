package lvmthin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRunError(t *testing.T) {
	_, err := run(context.Background(), nil, "sh", "-c",
		`echo some output; echo '  Volume group "vg 9" not found' >&2; echo '  Cannot process volume group vg9' >&2; exit 5`, "arg with space")
	var ce *CommandError
	if !errors.As(err, &ce) {
		t.Fatalf("error %v (%T) is not a *CommandError", err, err)
	}
	if ce.ExitCode != 5 {
		t.Errorf("exit code %d", ce.ExitCode)
	}
	msg := err.Error()
	for _, want := range []string{`sh -c 'echo some output;`, `'arg with space'`, "exit status 5",
		`Volume group "vg 9" not found; Cannot process volume group vg9`} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
	if !errors.Is(err, ErrNotFound) {
		t.Errorf("%v is not ErrNotFound", err)
	}
}

func TestRunOutput(t *testing.T) {
	out, err := run(context.Background(), nil, "sh", "-c", `printf 'a\nb'; echo "LC_ALL=$LC_ALL" >&2`)
	if err != nil || string(out) != "a\nb" {
		t.Fatalf("run = %q, %v", out, err)
	}
	// Commands run with LC_ALL=C (classify depends on English messages).
	out, err = run(context.Background(), nil, "sh", "-c", `echo "$LC_ALL"`)
	if err != nil || string(out) != "C\n" {
		t.Fatalf("LC_ALL = %q, %v", out, err)
	}
}

func TestRunNotStarted(t *testing.T) {
	_, err := run(context.Background(), nil, "thinback-no-such-program")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != -1 || !strings.Contains(err.Error(), "thinback-no-such-program") {
		t.Fatalf("error %v", err)
	}
}

func TestRunConsumeErrorStopsCommand(t *testing.T) {
	bad := errors.New("parser gave up")
	pidFile := filepath.Join(t.TempDir(), "pid")
	// The producer never ends by itself, nor does its child holding the
	// same output: only stopping the whole group ends run.
	err := runBounded(t, func() error {
		_, err := run(context.Background(), func(r io.Reader) error {
			buf := make([]byte, 10)
			if _, err := io.ReadFull(r, buf); err != nil {
				return err
			}
			return bad
		}, "sh", "-c", `sleep 100000 & echo $! > `+pidFile+`; while :; do echo yyyyyyyyyyyyyyyyyyyy; done`)
		return err
	})
	if !errors.Is(err, bad) {
		t.Fatalf("error %v, want the consumer's", err)
	}
	waitGone(t, pidFile)
}

// runBounded runs f and returns its error; a generous bound turns a run
// that never returns into a failure rather than a test binary timeout.
func runBounded(t *testing.T, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(2 * time.Minute): // a bound for a stuck run, not a claim about its speed
		t.Fatal("run did not return")
		return nil
	}
}

// waitPidFile waits until the command has written its child's pid.
func waitPidFile(t *testing.T, pidFile string) {
	t.Helper()
	for i := 0; ; i++ {
		if b, err := os.ReadFile(pidFile); err == nil && strings.HasSuffix(string(b), "\n") {
			return
		}
		if i == 6000 {
			t.Fatalf("%s was never written", pidFile)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitGone checks that the process whose pid is in pidFile (a child of
// the command run started, in its process group) has ended: gone, or a
// zombie its new parent has not reaped yet. A process still running after
// a generous bound means run left it behind; it is killed then.
func waitGone(t *testing.T, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6000; i++ {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// pid (comm) STATE ...
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	t.Fatalf("process %d, started by the command, still runs after run returned", pid)
}

func TestRunCommandErrorWinsOverConsumer(t *testing.T) {
	_, err := run(context.Background(), func(r io.Reader) error {
		_, _ = io.ReadAll(r)
		return errors.New("truncated output")
	}, "sh", "-c", "echo '<superblock'; echo 'no current metadata snap' >&2; echo 'Usage: thin_delta [options]' >&2; exit 1")
	var ce *CommandError
	if !errors.As(err, &ce) || ce.ExitCode != 1 || ce.Stderr != "no current metadata snap" {
		t.Fatalf("error %v", err)
	}
}

func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	go func() { waitPidFile(t, pidFile); cancel() }()
	err := runBounded(t, func() error {
		_, err := run(ctx, nil, "sh", "-c", `sleep 100000 & echo $! > `+pidFile+`; wait`)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want the cancellation", err)
	}
	waitGone(t, pidFile)
}

func TestClassify(t *testing.T) {
	// Messages as the real tools print them (lvm2 2.03.16, dmsetup
	// 1.02.185, thin-provisioning-tools 0.9.0), after cleanStderr.
	tests := []struct {
		args   []string
		stderr string
		want   error
	}{
		{[]string{"lvs", "vg0/nope"}, `Failed to find logical volume "vg0/nope"`, ErrNotFound},
		{[]string{"lvs", "nope"}, `Volume group "nope" not found; Cannot process volume group nope`, ErrNotFound},
		{[]string{"lvcreate", "-s", "-n", "s3", "vg0/nope"}, `Snapshot origin LV nope not found in Volume group vg0.`, ErrNotFound},
		{[]string{"lvremove", "-y", "vg0/nope"}, `Failed to find logical volume "vg0/nope"`, ErrNotFound},
		{[]string{"lvcreate", "-s", "-n", "s4", "vg0/plain"}, `Please specify either size or extents with snapshots.`, nil},
		{[]string{"/sbin/dmsetup", "status", "nope"}, `Device does not exist.`, ErrNotFound},
		{[]string{"dmsetup", "message", "vg0-pool-tpool", "0", "reserve_metadata_snap"},
			`device-mapper: message ioctl on vg0-pool-tpool  failed: Device or resource busy`, ErrMetadataSnapBusy},
		{[]string{"dmsetup", "message", "vg0-pool-tpool", "0", "release_metadata_snap"},
			`device-mapper: message ioctl on vg0-pool-tpool  failed: Invalid argument`, errNoMetadataSnap},
		{[]string{"dmsetup", "message", "vg0-pool-tpool", "0", "reserve_metadata_snap"},
			`device-mapper: message ioctl on vg0-pool-tpool  failed: Operation not supported`, errMessageRefused},
		{[]string{"thin_delta", "-m", "--snap1", "1", "--snap2", "9", "/dev/mapper/vg0-pool_tmeta"},
			`Unable to find mapping tree for snap2 (9)`, ErrNotFound},
		{[]string{"thin_delta", "-m", "--snap1", "1", "--snap2", "2", "/dev/mapper/vg0-pool_tmeta"},
			`no current metadata snap`, errNoMetadataSnap},
		{[]string{"thin_dump", "-m", "/dev/mapper/vg0-pool_tmeta"}, `something else`, nil},
		// Classic snapshots (lvm2 2.03.16 in the UML guest).
		{[]string{"lvcreate", "-s", "-L", "8388608b", "-n", "s1", "tb-x/vol"},
			`Logical Volume "s1" already exists in volume group "tb-x"`, ErrExists},
		{[]string{"lvcreate", "-s", "-L", "524288000b", "-n", "s1", "tb-y/vol"},
			`Volume group "tb-y" has insufficient free space (49 extents): 125 required.`, ErrNoSpace},
		{[]string{"lvremove", "-y", "tb-x/s2"}, `Can't remove merging snapshot logical volume tb-x/s2.`, ErrSnapshotMerging},
		// Replicas (lvm2 2.03.16 in the UML guest, TestKernelReplica).
		{[]string{"lvremove", "-y", "--", "tb-rep/tgt"}, `Logical volume tb-rep/tgt in use.`, ErrOpen},
		{[]string{"lvchange", "-an", "tb-x/s0"},
			`Change of snapshot tb-x/s0 will also change its origin tb-x/vol and 1 other snapshot(s). Proceed? [y/n]: [n]; Logical volume tb-x/s0 not changed.`, nil},
	}
	for _, tt := range tests {
		if got := classify(tt.args, tt.stderr); got != tt.want {
			t.Errorf("classify(%q, %q) = %v, want %v", tt.args, tt.stderr, got, tt.want)
		}
	}
}

func TestCleanStderr(t *testing.T) {
	in := "Unable to find mapping tree for snap2 (9)\nUsage: thin_delta [options] <device or file>\nOptions:\n  {--thin1, --snap1}\n"
	if got := cleanStderr(in); got != "Unable to find mapping tree for snap2 (9)" {
		t.Errorf("cleanStderr = %q", got)
	}
	in = "device-mapper: message ioctl on vg0-pool-tpool  failed: Device or resource busy\nCommand failed.\n"
	if got := cleanStderr(in); got != "device-mapper: message ioctl on vg0-pool-tpool  failed: Device or resource busy" {
		t.Errorf("cleanStderr = %q", got)
	}
}
