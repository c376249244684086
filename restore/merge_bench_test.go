package restore

import (
	"context"
	"io"
	"strconv"
	"testing"

	"github.com/thinback/thinback/archive"
)

// benchVolume is size bytes in 64 KiB blocks: a third random, a third
// compressible text, a third zeroes, so that records are raw, compressed
// and ZERO.
func benchVolume(w *world, size int) []byte {
	v := make([]byte, size)
	const bs = 64 << 10
	for off := 0; off < size; off += bs {
		b := v[off:min(off+bs, size)]
		switch off / bs % 3 {
		case 0:
			w.r.Read(b)
		case 1:
			var s []byte
			for len(s) < len(b) {
				s = strconv.AppendInt(s, w.r.Int63n(1000), 10)
				s = append(s, " lorem ipsum "...)
			}
			copy(b, s)
		}
	}
	return v
}

// benchChain is a full of a 64 MiB volume and an incremental that rewrites
// one 64 KiB block in every stride bytes.
func benchChain(b *testing.B, stride int) ([]string, int64) {
	w := newWorld(b)
	w.bs = 64 << 10
	v1 := w.image(benchVolume(w, 64<<20))
	next := append([]byte(nil), v1.data...)
	for off := 0; off < len(next); off += stride {
		w.r.Read(next[off : off+64<<10])
	}
	v2 := w.image(next)
	files := []string{w.deltaChunk(v1, nil, 1<<20, 0), w.deltaChunk(v2, v1, 1<<20, 0)}
	var data int64
	for _, f := range files {
		_, _, tr := readAll(b, f)
		data += tr.DataBytes
	}
	return files, data
}

// BenchmarkMerge merges a full and an incremental into a new full. With
// "whole", the incremental touches 1 MiB record in 16, so most records are
// copied whole (read, decoded, verified); with "cut", it cuts every record,
// so every record is also compressed again. MB/s are of the DATA bytes of
// the inputs. BenchmarkMergeScan is the reference: decoding and verifying
// the same files, with nothing written.
func BenchmarkMerge(b *testing.B) {
	for _, tc := range []struct {
		name   string
		stride int
	}{{"whole", 16 << 20}, {"cut", 1 << 20}} {
		b.Run(tc.name, func(b *testing.B) {
			files, data := benchChain(b, tc.stride)
			b.SetBytes(data)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, _, err := Merge(context.Background(), io.Discard, openInputs(b, files...), MergeOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMergeScan(b *testing.B) {
	files, data := benchChain(b, 16<<20)
	b.SetBytes(data)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for _, in := range openInputs(b, files...) {
			if err := archive.Scan(context.Background(), archive.NewReader(in.R), archive.ScanOptions{}, func(*archive.Record, []byte) error { return nil }); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkChainDigests reads the digests of a 256 MiB volume from a full
// and five incrementals, seeking over payloads. MB/s are of the volume
// described.
func BenchmarkChainDigests(b *testing.B) {
	w := newWorld(b)
	w.bs = 64 << 10
	imgs := []*image{w.image(benchVolume(w, 256<<20))}
	files := []string{w.deltaChunk(imgs[0], nil, 4<<20, 0)}
	for i := 0; i < 5; i++ {
		imgs = append(imgs, w.image(w.mutate(imgs[i].data, 2000)))
		files = append(files, w.deltaChunk(imgs[i+1], imgs[i], 1<<20, 0))
	}
	b.SetBytes(int64(len(imgs[0].data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cd, err := openChainDigests(openInputs(b, files...))
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := cd.Next(); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
}
