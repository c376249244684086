package thinmeta

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"testing"
)

// bigPool is a thin_restore'd pool of two devices of 250 000 mappings (three
// levels of nodes) that differ in about 0.1 % of their blocks, made once.
var bigPool struct {
	once      sync.Once
	dir, path string
}

func bigPoolPath(t testing.TB) string {
	needTools(t, "thin_restore")
	bigPool.once.Do(func() {
		r := rand.New(rand.NewPCG(1, 2))
		p := &pool{blockSectors: 128, time: 2}
		d := p.newDevice(r, 1, 250000, 1)
		p.snapshot(r, d, 2, 250, 0)
		// Shared by tests and benchmarks: TestMain removes it.
		dir, err := os.MkdirTemp("", "thinmeta-test-")
		if err != nil {
			t.Fatal(err)
		}
		bigPool.dir = dir
		bigPool.path = p.restoreIn(t, dir)
	})
	if bigPool.path == "" {
		t.Fatal("no big pool (its making failed)")
	}
	return bigPool.path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if bigPool.dir != "" {
		os.RemoveAll(bigPool.dir)
	}
	os.Exit(code)
}

// TestBoundedMemory: reading whole trees of 40 000 or 250 000 mappings of
// the same depth (three levels), or diffing them, allocates a few blocks
// per level and at most one batch read ahead per level, not memory that
// grows with the pool.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a large pool")
	}
	r := rand.New(rand.NewPCG(3, 4))
	p := &pool{blockSectors: 128, time: 2}
	d := p.newDevice(r, 1, 40000, 1)
	p.snapshot(r, d, 2, 40, 0)
	small := p.restore(t)
	ctx := context.Background()
	measure := func(path, what string, f func(m *Metadata) error) uint64 {
		t.Helper()
		m, err := Open(path, Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		if err := f(m); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		alloc := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: %d KiB of metadata read, %d KiB allocated", what, m.Stats().BytesRead>>10, alloc>>10)
		return alloc
	}
	big := bigPoolPath(t)
	for _, tc := range []struct {
		what string
		f    func(m *Metadata) error
	}{
		{"MappedRanges", func(m *Metadata) error { return m.MappedRanges(ctx, 1, 0, func(Range) error { return nil }) }},
		{"whole Diff", func(m *Metadata) error { return m.Diff(ctx, 1, 2, DiffOptions{}, func(Range) error { return nil }) }},
		{"Diff", func(m *Metadata) error {
			return m.Diff(ctx, 1, 2, DiffOptions{SameFrom: math.MaxUint64}, func(Range) error { return nil })
		}},
	} {
		a := measure(small, tc.what+" of 40 000 mappings", tc.f)
		b := measure(big, tc.what+" of 250 000 mappings", tc.f)
		// Two cursors of two levels below the root, each level's
		// read-ahead buffer at most maxBatch blocks (and a couple for
		// alignment), whatever the size of the pool, plus 1 MiB.
		if bound := uint64(2*2*(maxBatch+2)*BlockSize + 1<<20); a > bound || b > bound {
			t.Errorf("%s: %d bytes allocated for 40 000 mappings, %d for 250 000", tc.what, a, b)
		}
	}
}

func benchmarkRead(b *testing.B, f func(m *Metadata) error) {
	path := bigPoolPath(b)
	m, err := Open(path, Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if err := f(m); err != nil { // warm the page cache, count the bytes
		b.Fatal(err)
	}
	before := m.Stats().BytesRead
	if err := f(m); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(m.Stats().BytesRead - before)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := f(m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMappedRanges reads a device of 250 000 mappings whole (the
// full); MB/s is metadata read.
func BenchmarkMappedRanges(b *testing.B) {
	benchmarkRead(b, func(m *Metadata) error {
		return m.MappedRanges(context.Background(), 2, 0, func(Range) error { return nil })
	})
}

// BenchmarkDiffWhole compares two devices of 250 000 mappings reading
// both trees whole (thin_restore shares no node, so skipping cannot
// help): the cost of the walk and merge themselves.
func BenchmarkDiffWhole(b *testing.B) {
	benchmarkRead(b, func(m *Metadata) error {
		return m.Diff(context.Background(), 1, 2, DiffOptions{}, func(Range) error { return nil })
	})
}
