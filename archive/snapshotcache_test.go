package archive

import (
	"context"
	"fmt"
	"io"
	"testing"
)

// TestSnapshotCacheShared: readers of several snapshots opened with one
// SnapshotCache keep their decoded records within its one limit, read
// what each snapshot holds, and a reader closed gives back what it kept
// while the others go on reading.
func TestSnapshotCacheShared(t *testing.T) {
	r := testRand(t)
	const bs = 4096
	c := randomChain(t, r, 3, bs)
	// A limit of a few blocks: every reader's records compete for it.
	cache := NewSnapshotCache(5 * bs)
	defer cache.Close()
	var readers []*SnapshotReader
	for k := 1; k <= len(c.files); k++ {
		inputs := c.open(t, 0, k)
		for range 2 { // two readers of each snapshot, as two clients
			for _, in := range inputs {
				if _, err := in.File.Seek(0, io.SeekStart); err != nil {
					t.Fatal(err)
				}
			}
			s, err := OpenSnapshot(context.Background(), inputs, SnapshotOptions{Cache: cache, ReadAhead: 2 * bs})
			if err != nil {
				t.Fatal(err)
			}
			readers = append(readers, s)
		}
	}
	peak := int64(0)
	for round := 0; round < 200; round++ {
		i := r.Intn(len(readers))
		s, state := readers[i], c.states[i/2]
		where := fmt.Sprintf("round %d, reader %d", round, i)
		off := r.Int63n(int64(len(state)) + 1)
		readCheck(t, where, s, state, off, 1+r.Int63n(3*bs))
		// The limit holds, but for the one record a read needs above it
		// (records here are at most a few blocks).
		if b := cache.Bytes(); b > cache.Limit()+MaxDataLen {
			t.Fatalf("%s: the shared cache holds %d bytes, limit %d", where, b, cache.Limit())
		}
		peak = max(peak, cache.Bytes())
	}
	if peak == 0 {
		t.Fatal("no reader kept anything in the shared cache")
	}
	for i, s := range readers {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		cache.mu.Lock()
		for k := range cache.m {
			if k.s == s {
				cache.mu.Unlock()
				t.Fatalf("reader %d closed, its record %d is still in the shared cache", i, k.ref)
			}
		}
		cache.mu.Unlock()
		for j := i + 1; j < len(readers); j++ {
			state := c.states[j/2]
			readCheck(t, fmt.Sprintf("reader %d after %d closed", j, i), readers[j], state, r.Int63n(int64(len(state))), 1+r.Int63n(2*bs))
		}
	}
	if b := cache.Bytes(); b != 0 {
		t.Fatalf("every reader closed, the shared cache still counts %d bytes", b)
	}
}
