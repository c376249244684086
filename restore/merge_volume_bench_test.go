package restore

import (
	"context"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/thinback/thinback/archive"
)

// writeIncremental writes an incremental of a volume of size bytes that
// rewrites 64 KiB blocks at the given offsets, with random data.
func writeIncremental(b *testing.B, path string, size int64, offs []int64, parent, snap archive.ID, seed int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	w := archive.NewWriter(f)
	h := &archive.Header{BlockSize: 64 << 10, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: "vol", VolumeSize: size, Snapshot: archive.Snapshot{ID: snap, Name: "snap"},
		Parent: archive.Snapshot{ID: parent, Name: "parent"}, ParentSize: size, Tool: "bench"}
	if err := w.WriteHeader(h); err != nil {
		b.Fatal(err)
	}
	enc := archive.NewEncoder(archive.LevelFastest)
	defer enc.Close()
	r := rand.New(rand.NewSource(seed))
	data := make([]byte, 64<<10)
	for _, off := range offs {
		r.Read(data[:32<<10]) // half random, half zero: compresses 2:1
		recs, _ := enc.Encode(nil, off, data, h.BlockSize, nil)
		for i := range recs {
			if err := w.WriteRecord(&recs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkPruneIncrementalVolumeSize merges two incrementals of 32 MiB of
// changes each (prune removing an incremental) in volumes of 1 GiB to
// 1 TiB: the time must follow the files' size, not the volume's. MB/s are
// of the two files' DATA.
func BenchmarkPruneIncrementalVolumeSize(b *testing.B) {
	for _, vol := range []struct {
		name string
		size int64
	}{{"1GiB", 1 << 30}, {"64GiB", 64 << 30}, {"1TiB", 1 << 40}} {
		b.Run(vol.name, func(b *testing.B) {
			dir := b.TempDir()
			// The same 512 blocks (32 MiB) at spread offsets, scaled to the volume.
			r := rand.New(rand.NewSource(1))
			blocks := vol.size / (64 << 10)
			seen := map[int64]bool{}
			var offs []int64
			for len(offs) < 512 {
				blk := r.Int63n(blocks)
				if !seen[blk] {
					seen[blk] = true
					offs = append(offs, blk*(64<<10))
				}
			}
			sort.Slice(offs, func(i, j int) bool { return offs[i] < offs[j] })
			ids := []archive.ID{archive.NewID(), archive.NewID(), archive.NewID()}
			a, c := filepath.Join(dir, "a.tbk"), filepath.Join(dir, "b.tbk")
			writeIncremental(b, a, vol.size, offs, ids[0], ids[1], 2)
			writeIncremental(b, c, vol.size, offs[:256], ids[1], ids[2], 3)
			b.SetBytes(int64(512+256) * 64 << 10)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				fa, _ := os.Open(a)
				fc, _ := os.Open(c)
				_, _, err := Merge(context.Background(), io.Discard, []Input{{Name: a, R: fa}, {Name: c, R: fc}}, MergeOptions{})
				fa.Close()
				fc.Close()
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
