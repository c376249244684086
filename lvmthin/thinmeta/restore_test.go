package thinmeta

import (
	"context"
	"errors"
	"math/rand/v2"
	"reflect"
	"testing"
)

// randomPool makes a pool of an origin and snapshots of it and of each
// other, each with its own changes, some grown past their origin.
func randomPool(r *rand.Rand, blocks int) *pool {
	p := &pool{blockSectors: 128 << r.IntN(3), time: 5}
	origin := p.newDevice(r, uint64(1+r.IntN(3)), blocks, 0.3+0.7*r.Float64())
	devs := []*device{origin}
	for i := 0; i < 2+r.IntN(3); i++ {
		from := devs[r.IntN(len(devs))]
		grow := 0
		if r.IntN(3) == 0 {
			grow = r.IntN(blocks/4 + 1)
		}
		devs = append(devs, p.snapshot(r, from, devs[len(devs)-1].id+uint64(1+r.IntN(5)), r.IntN(20), grow))
	}
	// An empty device too, sometimes.
	if r.IntN(3) == 0 {
		p.newDevice(r, devs[len(devs)-1].id+1, 0, 0)
	}
	return p
}

// checkAgainstTools compares every reader answer with thin_delta and
// thin_dump on the same metadata: the full diffs, the diffs with Same
// only from some block and an end, every device's mappings and runs, and
// the device details.
func checkAgainstTools(t *testing.T, r *rand.Rand, meta string, snap bool, ids []uint64, maxBlock uint64) {
	t.Helper()
	m, err := Open(meta, Options{Snapshot: snap})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	wantDevs, err := toolDevices(meta, snap)
	if err != nil {
		t.Fatal(err)
	}
	var gotDevs []DeviceDetails
	if err := m.Devices(context.Background(), func(d DeviceDetails) error { gotDevs = append(gotDevs, d); return nil }); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotDevs, wantDevs) {
		t.Fatalf("devices\n got %+v\nwant %+v", gotDevs, wantDevs)
	}
	for _, d := range wantDevs {
		got, err := m.Device(d.ID)
		if err != nil || got != d {
			t.Fatalf("Device(%d) = %+v, %v; want %+v", d.ID, got, err, d)
		}
	}

	for _, id := range ids {
		want, err := toolDump(meta, snap, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mappings(m, id, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
			t.Fatalf("mappings of device %d: got %d, want %d (thin_dump)", id, len(got), len(want))
		}
		end := 1 + uint64(r.IntN(int(maxBlock)+2))
		runs, err := mappedRanges(m, id, end)
		if err != nil {
			t.Fatal(err)
		}
		var clipped []Mapping
		for _, x := range want {
			if x.Block < end {
				clipped = append(clipped, x)
			}
		}
		if wantRuns := runsOf(clipped); !reflect.DeepEqual(runs, wantRuns) {
			t.Fatalf("runs of device %d below %d:\n got %v\nwant %v", id, end, runs, wantRuns)
		}
	}

	for _, left := range ids {
		for _, right := range ids {
			if left == right {
				continue
			}
			want, err := toolDelta(meta, snap, left, right)
			if err != nil {
				t.Fatal(err)
			}
			for _, opts := range []DiffOptions{
				{},
				{SameFrom: ^uint64(0)},
				{SameFrom: uint64(r.IntN(int(maxBlock) + 1)), End: 1 + uint64(r.IntN(int(maxBlock)+2))},
				{SameFrom: ^uint64(0), End: 1 + uint64(r.IntN(int(maxBlock)+2))},
			} {
				got, err := diffRanges(m, left, right, opts)
				if err != nil {
					t.Fatalf("diff %d %d %+v: %v", left, right, opts, err)
				}
				if w := filterDiff(want, opts); !reflect.DeepEqual(got, w) {
					t.Fatalf("diff %d %d %+v:\n got %v\nwant %v", left, right, opts, got, w)
				}
			}
		}
	}
}

// TestRestoredAgainstTools: on metadata thin_restore writes from random
// pools (no node shared between devices), the reader says what
// thin_delta and thin_dump say, read directly and through a held
// metadata snapshot (-m).
func TestRestoredAgainstTools(t *testing.T) {
	needTools(t, "thin_restore", "thin_delta", "thin_dump")
	r := testRand(t)
	sizes := []int{1, 300, 5000, 40000}
	if !testing.Short() {
		sizes = append(sizes, 120000) // three levels of nodes
	}
	for _, blocks := range sizes {
		p := randomPool(r, blocks)
		meta := p.restore(t)
		var ids []uint64
		maxBlock := uint64(0)
		for _, d := range p.devs {
			ids = append(ids, d.id)
			maxBlock = max(maxBlock, uint64(len(d.data)))
		}
		checkAgainstTools(t, r, meta, false, ids, maxBlock)
		holdSnapshot(t, meta)
		checkAgainstTools(t, r, meta, true, ids, maxBlock)
	}
}

func TestNotFound(t *testing.T) {
	needTools(t, "thin_restore")
	r := testRand(t)
	p := randomPool(r, 100)
	meta := p.restore(t)
	m, err := Open(meta, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	const missing = 1 << 23
	if _, err := m.Device(missing); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Device of a missing device: %v", err)
	}
	if err := m.Diff(context.Background(), p.devs[0].id, missing, DiffOptions{}, func(Range) error { return nil }); !errors.Is(err, ErrNoDevice) {
		t.Errorf("Diff with a missing device: %v", err)
	}
	if err := m.MappedRanges(context.Background(), missing, 0, func(Range) error { return nil }); !errors.Is(err, ErrNoDevice) {
		t.Errorf("MappedRanges of a missing device: %v", err)
	}
	if _, err := Open(meta, Options{Snapshot: true}); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Open Snapshot without a held snapshot: %v", err)
	}
	h := holdSnapshot(t, meta)
	if _, err := Open(meta, Options{Snapshot: true, HeldRoot: h + 1}); !errors.Is(err, ErrNoSnapshot) {
		t.Errorf("Open Snapshot with another held root: %v", err)
	}
	m2, err := Open(meta, Options{Snapshot: true, HeldRoot: h})
	if err != nil {
		t.Fatal(err)
	}
	if sb := m2.Superblock(); sb.Block != h || sb.DataBlocks != 0 || m2.LiveSuperblock().HeldRoot != h {
		t.Errorf("snapshot superblock %+v", sb)
	}
	m2.Close()
}
