package archive

import (
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

const benchImageSize = 256 << 20

// benchImage writes 256 MiB of random data (no zero block) to a file, which
// stays in the page cache, and returns it with digests of it in extents of
// 4 MiB, as a chain's records give them.
func benchImage(b *testing.B, sparse bool) (*os.File, []DigestExtent) {
	b.Helper()
	r := rand.New(rand.NewSource(1))
	f, err := os.Create(filepath.Join(b.TempDir(), "disk.img"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	if err := f.Truncate(benchImageSize); err != nil {
		b.Fatal(err)
	}
	chunk := make([]byte, MaxDataLen)
	var exts []DigestExtent
	for off := int64(0); off < benchImageSize; off += MaxDataLen {
		if sparse && off%(64<<20) != 0 { // one 4 MiB data region per 64 MiB
			exts = append(exts, DigestExtent{Offset: off, Length: MaxDataLen, Kind: KindZero})
			continue
		}
		r.Read(chunk)
		if _, err := f.WriteAt(chunk, off); err != nil {
			b.Fatal(err)
		}
		e := DigestExtent{Offset: off, Length: MaxDataLen, Kind: KindData}
		for i := 0; i < MaxDataLen; i += DefaultBlockSize {
			e.Digests = append(e.Digests, blake3.Sum256(chunk[i:i+DefaultBlockSize]))
		}
		exts = append(exts, e)
	}
	return f, exts
}

// BenchmarkDigestSource compares an unchanged 256 MiB image in the page
// cache with its digests: the cost of finding that nothing changed. Compare
// with BenchmarkReadImage (reading alone) and BenchmarkHashBlocks (hashing
// on one core).
func BenchmarkDigestSource(b *testing.B) {
	for _, tc := range []struct {
		name    string
		workers int
		sparse  bool
	}{{"workers=1", 1, false}, {"workers=all", 0, false}, {"sparse", 0, true}} {
		b.Run(tc.name, func(b *testing.B) {
			f, exts := benchImage(b, tc.sparse)
			b.SetBytes(benchImageSize)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				src, err := NewDigestSource(f, benchImageSize, DefaultBlockSize, &sliceDigests{exts: exts}, DigestSourceOptions{Workers: tc.workers})
				if err != nil {
					b.Fatal(err)
				}
				if e, err := src.Next(); err != io.EOF {
					b.Fatalf("unchanged image: %v %v", e, err)
				}
			}
		})
	}
}

// BenchmarkReadImage reads the image as DigestSource does, 1 MiB at a time,
// front to back, without hashing: the speed of the page cache.
func BenchmarkReadImage(b *testing.B) {
	f, _ := benchImage(b, false)
	buf := make([]byte, defaultHashChunk)
	b.SetBytes(benchImageSize)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for off := int64(0); off < benchImageSize; off += defaultHashChunk {
			if err := readFull(f, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkHashBlocks hashes 64 KiB blocks in memory on one core.
func BenchmarkHashBlocks(b *testing.B) {
	buf := make([]byte, 4<<20)
	rand.New(rand.NewSource(1)).Read(buf)
	for _, bs := range []int{4096, DefaultBlockSize} {
		b.Run(fmt.Sprintf("block=%d", bs), func(b *testing.B) {
			b.SetBytes(int64(len(buf)))
			for i := 0; i < b.N; i++ {
				for off := 0; off < len(buf); off += bs {
					blake3.Sum256(buf[off : off+bs])
				}
			}
		})
	}
}
