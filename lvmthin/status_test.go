package lvmthin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
