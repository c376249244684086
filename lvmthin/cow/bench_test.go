package cow

import (
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// buildLarge writes a sparse COW store of n exceptions of 4 KiB chunks
// (n/256 metadata areas, 1 MiB + 4 KiB apart: 4 GiB of device for 1 M),
// laid out as the kernel does, with origin chunks in random order out of
// an origin 4 times larger (so runs are short, as after scattered writes).
// It returns the file and the origin size.
func buildLarge(b *testing.B, n int) (*os.File, int64) {
	b.Helper()
	const cs = 4096
	const per = cs / 16
	r := rand.New(rand.NewPCG(1, 2))
	olds := make([]uint64, n)
	for i := range olds {
		olds[i] = uint64(4*i + r.IntN(4))
	}
	r.Shuffle(n, func(i, j int) { olds[i], olds[j] = olds[j], olds[i] })
	f, err := os.Create(filepath.Join(b.TempDir(), "cow"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	hdr := make([]byte, cs)
	binary.LittleEndian.PutUint32(hdr[0:], Magic)
	binary.LittleEndian.PutUint32(hdr[4:], 1)
	binary.LittleEndian.PutUint32(hdr[8:], Version)
	binary.LittleEndian.PutUint32(hdr[12:], cs/SectorSize)
	if _, err := f.WriteAt(hdr, 0); err != nil {
		b.Fatal(err)
	}
	areas := (n + per) / per // a full last area is followed by an empty one
	area := make([]byte, cs)
	next := uint64(2)
	for a := 0; a < areas; a++ {
		clear(area)
		for i := 0; i < per && a*per+i < n; i++ {
			binary.LittleEndian.PutUint64(area[16*i:], olds[a*per+i])
			binary.LittleEndian.PutUint64(area[16*i+8:], next)
			next++
			if (next-1)%(per+1) == 0 {
				next++
			}
		}
		if _, err := f.WriteAt(area, int64(1+a*(per+1))*cs); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Truncate(int64(1+areas*(per+1)) * cs); err != nil {
		b.Fatal(err)
	}
	return f, int64(4*n+4) * cs
}

func benchmarkRead(b *testing.B, n, memory int) {
	f, origin := buildLarge(b, n)
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{Name: f.Name(), Size: fi.Size(), OriginSize: origin, MemoryChunks: memory, TempDir: b.TempDir()}
	b.ReportAllocs()
	b.ResetTimer()
	var st Stats
	for i := 0; i < b.N; i++ {
		var runs int64
		st, err = Read(f, opts, func(Run) error { runs++; return nil })
		if err != nil {
			b.Fatal(err)
		}
		if st.Exceptions != int64(n) {
			b.Fatalf("%d exceptions, want %d", st.Exceptions, n)
		}
	}
	b.SetBytes(st.MetadataBytes)
	b.ReportMetric(float64(st.Runs), "runs")
	b.ReportMetric(float64(st.Spilled), "spilled")
}

// BenchmarkRead1M reads a table of 1 M exceptions (16 MiB of metadata in
// 4096 areas) from a file in the page cache: MB/s is metadata read.
func BenchmarkRead1M(b *testing.B) { benchmarkRead(b, 1<<20, 0) }

// BenchmarkRead1MSpill is the same with 128 Ki chunk numbers in memory, so
// that 8 sorted runs spill to a file and are merged.
func BenchmarkRead1MSpill(b *testing.B) { benchmarkRead(b, 1<<20, 128<<10) }
