package archive

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func writeTemp(t *testing.T, name string, data []byte) *os.File {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestFileSourceSparse(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sparse.img")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size = 64 << 20
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, size)
	for _, off := range []int64{0, 5 << 20, 40<<20 + 4096} {
		chunk := bytes.Repeat([]byte{byte(off>>20) + 1}, 1<<20)
		if _, err := f.WriteAt(chunk, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], chunk)
	}
	n, blk, err := FileSize(f)
	if err != nil || n != size || blk {
		t.Fatalf("FileSize = %d, %v, %v", n, blk, err)
	}
	src := NewFileSource(f, n, blk)
	var zero int64
	for {
		e, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindZero {
			zero += e.Length
		}
	}
	// ext4 and tmpfs report holes; a filesystem without SEEK_HOLE reports
	// none, which is correct but slower.
	t.Logf("holes found without reading: %d of %d bytes", zero, int64(size))
	h := testHeader(size)
	h.BlockSize = DefaultBlockSize
	file := build(t, h, NewFileSource(f, n, blk), SendOptions{})
	got, err := applyTo(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("full of a sparse file differs from it")
	}
	if len(file) > 4<<20 {
		t.Fatalf("full of a sparse 64 MiB file with 3 MiB of data is %d bytes", len(file))
	}
}

func TestFileSizeRefusesOtherFiles(t *testing.T) {
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, _, err := FileSize(d); err == nil {
		t.Fatal("FileSize accepted a directory")
	}
}

func TestCompareSource(t *testing.T) {
	r := testRand(t)
	for _, tc := range []struct {
		name           string
		baseLen, newLn int
	}{
		{"same size", 300 * 4096, 300 * 4096},
		{"grown", 200 * 4096, 300*4096 + 100},
		{"shrunk", 300 * 4096, 150*4096 + 7},
		{"chunk boundary", 2 * compareChunk, 2 * compareChunk},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := make([]byte, tc.baseLen)
			r.Read(base)
			next := make([]byte, tc.newLn)
			copy(next, base)
			if tc.newLn > tc.baseLen {
				r.Read(next[tc.baseLen:])
			}
			for i := 0; i < 20; i++ {
				off := r.Intn(len(next))
				n := min(1+r.Intn(20000), len(next)-off)
				if r.Intn(3) == 0 {
					clear(next[off : off+n])
				} else {
					r.Read(next[off : off+n])
				}
			}
			// Changes across the chunk boundary.
			if len(next) > compareChunk+10 {
				copy(next[compareChunk-5:], "across the boundary")
			}
			bf, nf := writeTemp(t, "base", base), writeTemp(t, "new", next)
			h := testHeader(int64(len(next)))
			h.Parent = Snapshot{ID: DeriveID("test", "base")}
			h.ParentSize = int64(len(base))
			src := NewCompareSource(nf, int64(len(next)), bf, int64(len(base)), 4096, nil)
			file := build(t, h, src, SendOptions{})
			got, err := applyTo(file, append([]byte(nil), base...))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, next) {
				t.Fatal("incremental of two files applied to BASE differs from NEW")
			}
			if src.Differed() > int64(len(next)) {
				t.Fatalf("differed %d > size", src.Differed())
			}
		})
	}
}
