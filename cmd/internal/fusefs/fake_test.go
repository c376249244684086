package fusefs

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
)

var seedFlag = flag.Uint64("seed", 0, "seed for random tests (0: from THINBACK_SEED or the clock)")

// newRand returns a generator whose seed the test prints, and takes back
// with -seed N or THINBACK_SEED=N.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v := os.Getenv("THINBACK_SEED"); v != "" {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatalf("THINBACK_SEED=%q: %v", v, err)
			}
			seed = n
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d or THINBACK_SEED=%d)", seed, seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// The file system's tests run against an in-memory source: the store
// behind the real one (catalog, delta files, archive.SnapshotReader) is
// tested by its own packages and, mounted, by cmd/thinback's tests.

// fakeSource holds volumes and the bytes of each point in time.
type fakeSource struct {
	mu    sync.Mutex
	snaps map[string][]catalog.Snapshot // volume → snapshots, oldest first
	data  map[string][]byte             // snapshot ID → the volume then
	// bad is a range of every image whose reads fail, as a damaged record's.
	badFrom, badTo int64
	// listErr fails every listing; openErr every open; size, if not -1,
	// is the size the images say they have.
	listErr, openErr error
	size             int64

	lists, opens, closes int
	open                 map[string]int // snapshot ID → images open now
	maxOpen              int            // the most images of one snapshot open at once
}

func newFakeSource() *fakeSource {
	return &fakeSource{snaps: map[string][]catalog.Snapshot{}, data: map[string][]byte{}, open: map[string]int{}, size: -1, badFrom: -1, badTo: -1}
}

// add appends a snapshot of volume holding data.
func (f *fakeSource) add(volume string, data []byte) catalog.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	seq := uint64(len(f.snaps[volume]) + 1)
	sn := catalog.Snapshot{
		ID:         fmt.Sprintf("%08x-0000-4000-8000-%012d", len(f.data)+1, seq),
		Volume:     volume,
		Seq:        seq,
		Time:       time.Date(2026, 11, 20, 3, 0, int(seq), 123456789, time.UTC),
		VolumeSize: int64(len(data)),
	}
	f.snaps[volume] = append(f.snaps[volume], sn)
	f.data[sn.ID] = data
	return sn
}

func (f *fakeSource) Volumes() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	var names []string
	for v, s := range f.snaps {
		if len(s) > 0 {
			names = append(names, v)
		}
	}
	return names, nil
}

func (f *fakeSource) Snapshots(volume string) ([]catalog.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lists++
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]catalog.Snapshot(nil), f.snaps[volume]...), nil
}

func (f *fakeSource) Open(ctx context.Context, snap catalog.Snapshot) (Image, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("opened with a cancelled context: %w", ctx.Err())
	}
	if f.openErr != nil {
		return nil, f.openErr
	}
	data, ok := f.data[snap.ID]
	if !ok {
		return nil, fmt.Errorf("snapshot %s: %w", snap.ID, catalog.ErrNotFound)
	}
	f.opens++
	f.open[snap.ID]++
	f.maxOpen = max(f.maxOpen, f.open[snap.ID])
	size := int64(len(data))
	if f.size >= 0 {
		size = f.size
	}
	return &fakeImage{src: f, id: snap.ID, data: data, size: size, badFrom: f.badFrom, badTo: f.badTo}, nil
}

// setBad makes the reads of [from, to) of the images opened from now on
// fail.
func (f *fakeSource) setBad(from, to int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.badFrom, f.badTo = from, to
}

// stats returns how many images were opened and closed, and how many
// listings were made.
func (f *fakeSource) stats() (opens, closes, lists int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opens, f.closes, f.lists
}

var errDamaged = errors.New("fake: damaged record")

// fakeImage is a point in time in memory. A block of 4 KiB of zeroes is
// a hole for SeekData and SeekHole.
type fakeImage struct {
	src            *fakeSource
	id             string
	data           []byte
	size           int64
	badFrom, badTo int64
	closed         bool
}

const fakeBlock = 4096

func (i *fakeImage) ReadAt(p []byte, off int64) (int, error) {
	if i.closed {
		return 0, errors.New("fake: read of a closed image")
	}
	if off < i.badTo && off+int64(len(p)) > i.badFrom {
		return 0, errDamaged
	}
	if off >= int64(len(i.data)) {
		return 0, io.EOF
	}
	n := copy(p, i.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (i *fakeImage) Size() int64 { return i.size }

func (i *fakeImage) hole(b int64) bool {
	end := min((b+1)*fakeBlock, int64(len(i.data)))
	for _, c := range i.data[b*fakeBlock : end] {
		if c != 0 {
			return false
		}
	}
	return true
}

func (i *fakeImage) SeekData(off int64) (int64, bool) {
	if off < 0 || off >= int64(len(i.data)) {
		return 0, false
	}
	for b := off / fakeBlock; b*fakeBlock < int64(len(i.data)); b++ {
		if !i.hole(b) {
			return max(off, b*fakeBlock), true
		}
	}
	return 0, false
}

func (i *fakeImage) SeekHole(off int64) (int64, bool) {
	if off < 0 || off >= int64(len(i.data)) {
		return 0, false
	}
	for b := off / fakeBlock; b*fakeBlock < int64(len(i.data)); b++ {
		if i.hole(b) {
			return max(off, b*fakeBlock), true
		}
	}
	return int64(len(i.data)), true
}

func (i *fakeImage) Close() error {
	i.src.mu.Lock()
	defer i.src.mu.Unlock()
	if i.closed {
		return errors.New("fake: image closed twice")
	}
	i.closed = true
	i.src.closes++
	i.src.open[i.id]--
	return nil
}
