package thinmeta

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// kernelImages are metadata the kernel wrote (in the User-Mode Linux
// guest, lvmthin's TestKernelNativeRounds and TestKernelNativeSkips), with
// a metadata snapshot held: see testdata/thinmeta/README.md.
var kernelImages = []string{"kernel-skips.bin.gz", "kernel-256k-2-32.bin.gz", "kernel-64k-0-32.bin.gz"}

// kernelImage returns the decompressed image.
func kernelImage(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "testdata", "thinmeta", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := io.Copy(&b, zr); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// writeImage writes an image to a temporary file for Open and the tools.
func writeImage(t testing.TB, img []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "meta.bin")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func imageDevices(t testing.TB, path string) []uint64 {
	t.Helper()
	m, err := Open(path, Options{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var ids []uint64
	if err := m.Devices(context.Background(), func(d DeviceDetails) error { ids = append(ids, d.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	return ids
}

// TestKernelImagesAgainstTools: on metadata the kernel wrote, where
// snapshots share subtrees, the reader says what thin_delta -m and
// thin_dump -m say.
func TestKernelImagesAgainstTools(t *testing.T) {
	needTools(t, "thin_delta", "thin_dump")
	r := testRand(t)
	for _, name := range kernelImages {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, kernelImage(t, name))
			ids := imageDevices(t, path)
			if len(ids) < 3 {
				t.Fatalf("devices %v", ids)
			}
			checkAgainstTools(t, r, path, true, ids, 1<<14)
		})
	}
}

// TestKernelImageSkips: in kernel-skips (a 512 MiB volume written whole,
// snapshot 2, one 4 KiB write to block 4800, snapshot 3), the diff of the
// two snapshots reads the top-level tree, the two roots and the two copies
// of the changed leaf, nothing else; read whole, the trees are 70 blocks.
func TestKernelImageSkips(t *testing.T) {
	path := writeImage(t, kernelImage(t, "kernel-skips.bin.gz"))
	m, err := Open(path, Options{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tc := range []struct {
		opts      DiffOptions
		maxBlocks int64
	}{
		{DiffOptions{SameFrom: math.MaxUint64}, 5},
		{DiffOptions{SameFrom: 8000}, 10}, // the last leaf's same ranges, from both trees
	} {
		before := m.Stats()
		rs, err := diffRanges(m, 2, 3, tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		got := m.Stats().BlocksRead - before.BlocksRead
		if got > tc.maxBlocks || len(rs) == 0 || rs[0] != (Range{Kind: Different, Begin: 4800, Length: 1}) {
			t.Errorf("%+v: %v, %d blocks read (want at most %d)", tc.opts, rs, got, tc.maxBlocks)
		}
	}
	before := m.Stats()
	rs, err := diffRanges(m, 2, 3, DiffOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Both trees whole, each block once: 34 each, none read twice by
	// reading ahead.
	if got := m.Stats().BlocksRead - before.BlocksRead; got < 60 || got > 70 || len(rs) != 3 {
		t.Errorf("whole diff: %v, %d blocks read", rs, got)
	}
}

// TestKernelImagesReadAhead: on metadata the kernel wrote, reading nodes
// ahead, many at a time or one run at a time, changes nothing the walks
// report, and reads no block the walk would not read without it: every
// diff of two devices and every device's full read the same ranges, the
// same number of blocks.
func TestKernelImagesReadAhead(t *testing.T) {
	ctx := context.Background()
	for _, name := range kernelImages {
		t.Run(name, func(t *testing.T) {
			path := writeImage(t, kernelImage(t, name))
			ids := imageDevices(t, path)
			type result struct {
				rs     []Range
				blocks int64
			}
			run := func(readAhead int, f func(m *Metadata) ([]Range, error)) result {
				t.Helper()
				m, err := Open(path, Options{Snapshot: true, ReadAhead: readAhead})
				if err != nil {
					t.Fatal(err)
				}
				defer m.Close()
				before := m.Stats().BlocksRead
				rs, err := f(m)
				if err != nil {
					t.Fatal(err)
				}
				return result{rs, m.Stats().BlocksRead - before}
			}
			check := func(what string, f func(m *Metadata) ([]Range, error)) {
				t.Helper()
				want := run(-1, f)
				for _, ra := range []int{1, 4, 0} {
					got := run(ra, f)
					if !slices.Equal(got.rs, want.rs) || got.blocks != want.blocks {
						t.Errorf("%s, read-ahead %d: %d ranges, %d blocks read; without read-ahead %d ranges, %d blocks",
							what, ra, len(got.rs), got.blocks, len(want.rs), want.blocks)
					}
				}
			}
			for _, a := range ids {
				check(fmt.Sprintf("mapped ranges of %d", a), func(m *Metadata) ([]Range, error) {
					var rs []Range
					err := m.MappedRanges(ctx, a, 0, func(r Range) error { rs = append(rs, r); return nil })
					return rs, err
				})
				for _, b := range ids {
					if a != b {
						check(fmt.Sprintf("diff of %d and %d", a, b), func(m *Metadata) ([]Range, error) {
							return diffRanges(m, a, b, DiffOptions{SameFrom: math.MaxUint64})
						})
					}
				}
			}
		})
	}
}
