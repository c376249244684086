package archive

import (
	"bytes"
	"context"
	"io"
	"math/rand"
	"testing"
)

// benchVolume is 64 MiB of mixed data: compressible text, random blocks and
// zero runs, in 64 KiB blocks.
func benchVolume() []byte {
	r := rand.New(rand.NewSource(7))
	return volume(r, 64<<20/4096, 0)
}

func BenchmarkSend(b *testing.B) {
	vol := benchVolume()
	h := testHeader(int64(len(vol)))
	h.BlockSize = DefaultBlockSize
	b.SetBytes(int64(len(vol)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w := NewWriter(io.Discard)
		if err := w.WriteHeader(h); err != nil {
			b.Fatal(err)
		}
		if err := Send(context.Background(), w, fullSource(vol), SendOptions{}); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkScan(b *testing.B) {
	vol := benchVolume()
	h := testHeader(int64(len(vol)))
	h.BlockSize = DefaultBlockSize
	file := build(b, h, fullSource(vol), SendOptions{})
	b.SetBytes(int64(len(vol)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd := NewReader(bytes.NewReader(file))
		if err := Scan(context.Background(), rd, ScanOptions{}, func(*Record, []byte) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadStructure reads only record metadata, seeking over payloads:
// the cost of planning a restore or rebuilding a catalog.
func BenchmarkReadStructure(b *testing.B) {
	vol := benchVolume()
	h := testHeader(int64(len(vol)))
	h.BlockSize = DefaultBlockSize
	file := build(b, h, fullSource(vol), SendOptions{})
	b.SetBytes(int64(len(vol)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rd := NewReader(bytes.NewReader(file))
		for {
			if _, err := rd.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}
