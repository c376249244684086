package lvmthin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/lvmthin/internal/dmioctl"
)

// TestStatusSaysActiveOnlyWhenMissing: "it must be active" is said of a
// pool or snapshot that device-mapper does not know, not of a status
// query that a signal cut short (which would name the pool as the
// problem when the run was only interrupted).
func TestStatusSaysActiveOnlyWhenMissing(t *testing.T) {
	script := filepath.Join(t.TempDir(), "dmsetup")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho 'Device does not exist.' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(DMEnv, "dmsetup")
	old := programs.dmsetup
	programs.dmsetup = script
	t.Cleanup(func() { programs.dmsetup = old })

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	queries := map[string]func(context.Context) error{
		"pool": func(ctx context.Context) error {
			_, err := GetPoolStatus(ctx, Name{"vg0", "pool"})
			return err
		},
		"snapshot": func(ctx context.Context) error {
			_, err := GetSnapshotStatus(ctx, Name{"vg0", "snap"})
			return err
		},
	}
	for what, query := range queries {
		err := query(context.Background())
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "(it must be active)") {
			t.Errorf("%s missing: %v, want ErrNotFound saying it must be active", what, err)
		}
		err = query(cancelled)
		if err == nil || errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "must be active") {
			t.Errorf("%s status cut short: %v, want the interruption without 'must be active'", what, err)
		}
	}
}

// TestDMIoctlErrors: an ioctl's errno means what dmsetup's message for
// it means (see classify), and the error still names the device.
func TestDMIoctlErrors(t *testing.T) {
	tests := []struct {
		msg   string
		errno syscall.Errno
		want  error
	}{
		{"", syscall.ENXIO, ErrNotFound},
		{"reserve_metadata_snap", syscall.ENXIO, ErrNotFound},
		{"reserve_metadata_snap", syscall.EBUSY, ErrMetadataSnapBusy},
		{"release_metadata_snap", syscall.EINVAL, errNoMetadataSnap},
		{"reserve_metadata_snap", syscall.EOPNOTSUPP, errMessageRefused},
		{"release_metadata_snap", syscall.EBUSY, nil},
		{"reserve_metadata_snap", syscall.EINVAL, nil},
		{"", syscall.EPERM, nil},
	}
	for _, tc := range tests {
		what := tc.msg
		if what == "" {
			what = "status"
		}
		op := &dmioctl.Error{Op: "DM_TARGET_MSG", Device: "vg0-pool-tpool", What: what, Err: tc.errno}
		err := dmIoctlError(op, tc.msg)
		for _, s := range []error{ErrNotFound, ErrMetadataSnapBusy, errNoMetadataSnap, errMessageRefused} {
			if errors.Is(err, s) != (s == tc.want) {
				t.Errorf("%s, %v: errors.Is(%v) = %v", what, tc.errno, s, !(s == tc.want))
			}
		}
		if !errors.Is(err, tc.errno) || !strings.Contains(err.Error(), "on vg0-pool-tpool") {
			t.Errorf("%s, %v: %v does not name the device or unwrap to the errno", what, tc.errno, err)
		}
	}
}
