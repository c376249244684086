package blockdev

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"
)

// TestReadAt reads a regular file through aligned and unaligned buffers
// and offsets, up to and past its end, with O_DIRECT where the temp dir's
// file system allows it.
func TestReadAt(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	want := make([]byte, 3<<20+1234)
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	path := filepath.Join(t.TempDir(), "dev")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Size() != int64(len(want)) || d.Path() != path {
		t.Fatalf("size %d path %q", d.Size(), d.Path())
	}
	t.Logf("O_DIRECT: %v", d.Direct())
	buf := make([]byte, 2<<20+Align)
	for i := 0; i < 300; i++ {
		off := r.Int64N(int64(len(want)))
		n := 1 + r.IntN(2<<20)
		var p []byte
		if i%3 == 0 {
			off &^= Align - 1
			n = (n + Align - 1) &^ (Align - 1)
			p = AlignedBuffer(n)
		} else {
			skew := r.IntN(Align)
			p = buf[skew : skew+n]
		}
		got, err := d.ReadAt(p, off)
		end := min(off+int64(n), int64(len(want)))
		if end < off+int64(n) {
			if err != io.EOF {
				t.Fatalf("read %d at %d past the end: %v, want io.EOF", n, off, err)
			}
		} else if err != nil {
			t.Fatalf("read %d at %d: %v", n, off, err)
		}
		if !bytes.Equal(p[:got], want[off:end]) {
			t.Fatalf("read %d at %d: wrong bytes", n, off)
		}
	}
	if n, err := d.ReadAt(buf[:1], int64(len(want))); n != 0 || err != io.EOF {
		t.Errorf("read at the end: %d, %v", n, err)
	}
	if _, err := d.ReadAt(buf[:1], -1); err == nil {
		t.Error("negative offset accepted")
	}
}

func TestAlignedBuffer(t *testing.T) {
	for _, n := range []int{1, 4096, 12345, 1 << 20} {
		b := AlignedBuffer(n)
		if len(b) != n || cap(b) != n || uintptr(unsafe.Pointer(&b[0]))%Align != 0 {
			t.Errorf("AlignedBuffer(%d): len %d cap %d at %p", n, len(b), cap(b), &b[0])
		}
	}
}
