package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/lvmthin/internal/dmioctl"
)

// fields normalizes a status or table for comparison: dmsetup prints a
// space after a target type whose parameters are empty, the ioctl path
// does not print what is not there.
func fields(out string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "\n")
}

// TestKernelDMIoctl: on real pools, the ioctls give the answers dmsetup
// gives on the same devices (status, table, info) and the metadata
// snapshot reserved and released through them is the one dmsetup sees;
// a busy or missing snapshot, a missing device, fail with the sentinels
// dmsetup's failures map to, naming the device.
func TestKernelDMIoctl(t *testing.T) {
	guestOnly(t)
	ctx := context.Background()
	t.Setenv(DMEnv, "")
	// A hyphen in the VG doubles in the dm names.
	pool := newPool(t, "vgdm-io", "-s", "1G", "-p", "256M")
	newThinLV(t, pool, "vol", "64M")
	sh(t, "dd if=/dev/urandom of=/dev/vgdm-io/vol bs=64k count=40 oflag=direct status=none")
	sh(t, "lvcreate -q -s -n snap -ay -K vgdm-io/vol")
	// A classic snapshot of a thick LV: linear, snapshot-origin, snapshot
	// and its cow.
	sh(t, "lvcreate -q -L 16M -n thick vgdm-io && lvcreate -q -s -L 8M -n csnap vgdm-io/thick")
	sh(t, "dd if=/dev/urandom of=/dev/vgdm-io/thick bs=64k count=4 oflag=direct status=none")

	names := strings.Fields(sh(t, "dmsetup info -c --noheadings -o name | grep '^vgdm--io-' | sort"))
	if len(names) < 8 {
		t.Fatalf("dm devices of vgdm-io: %q", names)
	}
	for _, name := range names {
		st, err := dmStatus(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if want := sh(t, "dmsetup status "+name); fields(st) != fields(want) {
			t.Errorf("status of %s:\nioctl   %q\ndmsetup %q", name, st, want)
		}
		tb, err := DMTable(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if want := sh(t, "dmsetup table "+name); fields(tb) != fields(want) {
			t.Errorf("table of %s:\nioctl   %q\ndmsetup %q", name, tb, want)
		}
		info, err := dmioctl.DevInfo(name)
		if err != nil {
			t.Fatal(err)
		}
		got := fmt.Sprintf("%d %d %d %d %d %s", info.Major, info.Minor, info.OpenCount, info.TargetCount, info.EventNr, info.UUID)
		want := sh(t, "dmsetup info -c --noheadings --separator ' ' -o major,minor,open,segments,events,uuid "+name)
		if got != fields(want) {
			t.Errorf("info of %s: ioctl %q, dmsetup %q", name, got, want)
		}
	}
	v, err := dmioctl.KernelVersion()
	if err != nil {
		t.Fatal(err)
	}
	if want := sh(t, "dmsetup version | sed -n 's/^Driver version: *//p'"); fmt.Sprintf("%d.%d.%d", v[0], v[1], v[2]) != want {
		t.Errorf("driver version: ioctl %v, dmsetup %q", v, want)
	}

	// Reserve and release through the ioctls; dmsetup sees the same root.
	dmRoot := func() string { return sh(t, "dmsetup status vgdm--io-pool-tpool | cut -d' ' -f7") }
	ctx, commands := CountCommands(ctx)
	m, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := dmRoot(); m.Root() == 0 || got != fmt.Sprint(m.Root()) {
		t.Errorf("reserved root %d, dmsetup status says %s", m.Root(), got)
	}
	if err := m.Release(); err != nil {
		t.Fatal(err)
	}
	if got := dmRoot(); got != "-" {
		t.Errorf("after release dmsetup status says %s", got)
	}
	if cs := commands(); cs.DMIoctls != 5 || cs.DMSetup != 0 || cs.ByProgram[ioctlName] != 5 {
		t.Errorf("reserve and release: %+v, want 5 ioctls and no dmsetup", cs)
	}

	// Reserved by dmsetup: the ioctl path sees its root, and a reserve
	// through either path fails the same way.
	sh(t, "dmsetup message vgdm--io-pool-tpool 0 reserve_metadata_snap")
	if st, err := GetPoolStatus(ctx, pool); err != nil || fmt.Sprint(st.HeldRoot) != dmRoot() {
		t.Errorf("status through the ioctl: %+v, %v; dmsetup says %s", st, err, dmRoot())
	}
	for _, via := range []string{"ioctl", "dmsetup"} {
		t.Setenv(DMEnv, via)
		_, err := ReserveMetadataSnap(ctx, pool, ReserveOptions{NoWait: true})
		if !errors.Is(err, ErrStaleMetadataSnap) || !strings.Contains(err.Error(), "dmsetup message vgdm--io-pool-tpool 0 release_metadata_snap") {
			t.Errorf("%s: reserve while dmsetup holds one: %v", via, err)
		}
		// The message itself, as when another program reserves between
		// our status check and our message.
		err = dmMessage(ctx, "vgdm--io-pool-tpool", "reserve_metadata_snap")
		if !errors.Is(err, ErrMetadataSnapBusy) || !strings.Contains(err.Error(), "vgdm--io-pool-tpool") {
			t.Errorf("%s: reserve_metadata_snap while held: %v, want ErrMetadataSnapBusy naming the device", via, err)
		}
		if via == "ioctl" && !errors.Is(err, syscall.EBUSY) {
			t.Errorf("ioctl: %v is not EBUSY", err)
		}
	}
	t.Setenv(DMEnv, "")
	if released, err := ReleaseStale(ctx, pool, ReserveOptions{NoWait: true}); err != nil || !released {
		t.Fatalf("release stale: %v, %v", released, err)
	}
	if got := dmRoot(); got != "-" {
		t.Errorf("after ReleaseStale dmsetup status says %s", got)
	}
	for _, via := range []string{"ioctl", "dmsetup"} {
		t.Setenv(DMEnv, via)
		if err := dmMessage(ctx, "vgdm--io-pool-tpool", "release_metadata_snap"); !errors.Is(err, errNoMetadataSnap) {
			t.Errorf("%s: release with none held: %v", via, err)
		}
		_, err := GetPoolStatus(ctx, Name{VG: "vgdm-io", LV: "nopool"})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "vgdm--io-nopool-tpool") || !strings.Contains(err.Error(), "it must be active") {
			t.Errorf("%s: status of a missing pool: %v", via, err)
		}
		if err := dmMessage(ctx, "vgdm--io-nopool-tpool", "reserve_metadata_snap"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: message to a missing device: %v", via, err)
		}
	}
	t.Setenv(DMEnv, "")

	// A pool status and a classic snapshot's, parsed, agree both ways.
	for _, via := range []string{"ioctl", "dmsetup"} {
		t.Setenv(DMEnv, via)
		st, err := GetPoolStatus(ctx, pool)
		if err != nil || st.Mode != PoolWrite || st.HeldRoot != 0 || st.DataUsed == 0 {
			t.Errorf("%s: pool status %+v, %v", via, st, err)
		}
		cs, err := GetSnapshotStatus(ctx, Name{VG: "vgdm-io", LV: "csnap"})
		if err != nil || cs.State != SnapshotValid || cs.SectorsAllocated == 0 {
			t.Errorf("%s: classic snapshot status %+v, %v", via, cs, err)
		}
	}
}
