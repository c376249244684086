package s3

import (
	"errors"
	"io"
	"testing"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestReaderAt(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "r")
	ctx := testCtx(t)
	r := newRand(t)
	data := randBytes(r, 3<<20+777)
	if _, err := s.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if rd.Size() != int64(len(data)) {
		t.Fatalf("size %d", rd.Size())
	}
	size := int64(len(data))
	for range 40 {
		off := r.Int64N(size + 10)
		n := r.IntN(1 << 20)
		p := make([]byte, n)
		got, err := rd.ReadAt(p, off)
		wantN := int(max(0, min(int64(n), size-off)))
		if got != wantN {
			t.Fatalf("ReadAt(%d bytes, %d): %d bytes, want %d (%v)", n, off, got, wantN, err)
		}
		if wantN < n && err != io.EOF {
			t.Fatalf("ReadAt past the end at %d: %v, want io.EOF", off, err)
		}
		if wantN == n && err != nil {
			t.Fatalf("ReadAt(%d bytes, %d): %v", n, off, err)
		}
		if wantN > 0 {
			equal(t, "range", p[:got], data[off:off+int64(got)])
		}
	}
	if _, err := rd.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset accepted")
	}

	for _, c := range []struct{ off, n int64 }{{0, -1}, {5, 100}, {1<<20 - 1, 2<<20 + 3}, {size - 1, 10}, {size, 10}} {
		seq := rd.NewSequential(c.off, c.n)
		b, err := io.ReadAll(seq)
		if err != nil {
			t.Fatalf("sequential %d+%d: %v", c.off, c.n, err)
		}
		end := size
		if c.n >= 0 {
			end = min(size, c.off+c.n)
		}
		equal(t, "sequential read", b, data[c.off:end])
		if err := seq.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// Closing a sequential reader early stops its reads.
	seq := rd.NewSequential(0, -1)
	if _, err := seq.Read(make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	if err := seq.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := seq.Read(make([]byte, 10)); err == nil {
		t.Fatal("read after close succeeded")
	}
}

// TestReaderChanged replaces an object under an open Reader: reads fail
// with ErrChanged rather than mixing two versions.
func TestReaderChanged(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "obj", []byte("version one")); err != nil {
		t.Fatal(err)
	}
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "obj", []byte("version two")); err != nil {
		t.Fatal(err)
	}
	_, err = rd.ReadAt(make([]byte, 4), 0)
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("read of a replaced object: %v", err)
	}
	_, err = io.ReadAll(rd.NewSequential(0, -1))
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("sequential read of a replaced object: %v", err)
	}
}
