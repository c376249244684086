package lvmthin

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// fakeLVS points programs.lvs at a script that prints the lvs-mixed.json
// fixture, for the rest of the test.
func fakeLVS(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	fixture, err := filepath.Abs(filepath.Join("..", "testdata", "lvm", "lvs-mixed.json"))
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "lvs")
	if err := os.WriteFile(script, []byte("#!/bin/sh\nexec cat '"+fixture+"'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := programs.lvs
	programs.lvs = script
	t.Cleanup(func() { programs.lvs = old })
}

// TestCountCommands: every command run under a counting context is
// counted once, by kind, including those run on contexts derived from it
// without its cancellation (as the release of a metadata snapshot is); a
// report read once answers every lookup without another lvs.
func TestCountCommands(t *testing.T) {
	fakeLVS(t)
	oldDM := programs.dmsetup
	programs.dmsetup = "true"
	t.Cleanup(func() { programs.dmsetup = oldDM })

	ctx, commands := CountCommands(context.Background())
	if cs := commands(); cs.LVM != 0 || cs.DMSetup != 0 || cs.LVMTime != 0 {
		t.Fatalf("before any command: %+v", cs)
	}
	rep, err := ListVG(ctx, "test-vg")
	if err != nil {
		t.Fatal(err)
	}
	vol, err := rep.Lookup(Name{"test-vg", "my-vol"})
	if err != nil || !vol.IsThin() {
		t.Fatalf("Lookup my-vol: %+v, %v", vol, err)
	}
	snaps, err := rep.Snapshots(vol.FullName())
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	if want := []string{"my-vol-snap1", "my-vol-snap2"}; !reflect.DeepEqual(names, want) {
		t.Errorf("snapshots %q, want %q", names, want)
	}
	if _, err := rep.Lookup(Name{"test-vg", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup of a missing LV: %v", err)
	}
	if _, err := rep.Lookup(Name{"other-vg", "my-vol"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Lookup in another VG: %v", err)
	}
	if _, err := rep.Snapshots(Name{"test-vg", "nope"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("Snapshots of a missing LV: %v", err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	for range 2 {
		if _, err := run(context.WithoutCancel(cancelled), nil, programs.dmsetup, "status"); err != nil {
			t.Fatal(err)
		}
	}
	cs := commands()
	if cs.LVM != 1 || cs.DMSetup != 2 || cs.Tools != 0 || cs.LVMTime <= 0 {
		t.Errorf("counted %+v, want 1 lvs and 2 dmsetup with their time", cs)
	}
	if want := map[string]int{"lvs": 1, "true": 2}; !reflect.DeepEqual(cs.ByProgram, want) {
		t.Errorf("by program %v, want %v", cs.ByProgram, want)
	}
	// Not counted: a context without a counter, and nothing leaks from
	// one counter into another.
	if _, err := run(context.Background(), nil, programs.dmsetup); err != nil {
		t.Fatal(err)
	}
	ctx2, commands2 := CountCommands(context.Background())
	if _, err := Lookup(ctx2, Name{"test-vg", "my-vol"}); err != nil {
		t.Fatal(err)
	}
	if cs := commands(); cs.DMSetup != 2 || cs.LVM != 1 {
		t.Errorf("first counter changed: %+v", cs)
	}
	if cs := commands2(); cs.LVM != 1 || cs.DMSetup != 0 {
		t.Errorf("second counter: %+v", cs)
	}
}
