package s3

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestUploadSizes(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "up")
	ctx := testCtx(t)
	r := newRand(t)
	ps := int(minPartSize)
	for _, size := range []int{0, 1, 1000, ps - 1, ps, ps + 1, 2 * ps, 3*ps + 12345} {
		data := randBytes(r, size)
		u, err := s.NewUpload(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		// Writes of random sizes, from one byte to more than a part.
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), 1+r.IntN(ps+ps/2))
			if r.IntN(4) == 0 {
				n = min(len(rest), 1+r.IntN(100))
			}
			if m, err := u.Write(rest[:n]); err != nil || m != n {
				t.Fatalf("size %d: write %d: %d, %v", size, n, m, err)
			}
			rest = rest[n:]
		}
		info, err := u.Complete()
		if err != nil {
			t.Fatalf("size %d: complete: %v", size, err)
		}
		if err := u.Abort(); err != nil {
			t.Fatalf("abort after complete: %v", err)
		}
		if info.Size != int64(size) || u.Size() != int64(size) {
			t.Fatalf("size %d: info %+v", size, info)
		}
		if u.Buffers() > s.opts.Uploads+1 {
			t.Fatalf("size %d: %d buffers, more than %d", size, u.Buffers(), s.opts.Uploads+1)
		}
		if size > ps && info.ETag != multipartETag(u.parts) {
			// Complete recognises a lost answer by this ETag.
			t.Fatalf("size %d: ETag %s, parts make %s", size, info.ETag, multipartETag(u.parts))
		}
		equal(t, "uploaded object", mustGet(t, s, "obj"), data)
		st, err := s.Stat(ctx, "obj")
		if err != nil || st.ETag != info.ETag {
			t.Fatalf("stat: %+v, complete said %+v, %v", st, info, err)
		}
		if _, err := u.Write([]byte("x")); err == nil {
			t.Fatal("write after complete succeeded")
		}
	}
	noUploads(t, srv)
}

// TestUploadBoundedBuffers writes many parts through few buffers: memory
// is (Uploads+1) parts whatever the size.
func TestUploadBoundedBuffers(t *testing.T) {
	srv := s3test.Start(t)
	o := testOptions()
	o.Uploads = 2
	s := openAt(t, srv.Addr, srv.Bucket, "", o)
	ctx := testCtx(t)
	u, err := s.NewUpload(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer u.Abort()
	const size = 20*minPartSize + 7
	chunk := make([]byte, 1<<20)
	for i := range chunk {
		chunk[i] = byte(i * 7)
	}
	var written int64
	for written < size {
		n := int(min(int64(len(chunk)), size-written))
		if _, err := u.Write(chunk[:n]); err != nil {
			t.Fatal(err)
		}
		written += int64(n)
		if u.Buffers() > 3 {
			t.Fatalf("%d buffers after %d bytes", u.Buffers(), written)
		}
	}
	info, err := u.Complete()
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != size {
		t.Fatalf("size %d", info.Size)
	}
	rd, err := s.OpenObject(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	seq := rd.NewSequential(0, -1)
	defer seq.Close()
	buf := make([]byte, len(chunk))
	for off := int64(0); off < size; {
		n, err := io.ReadFull(seq, buf[:min(int64(len(buf)), size-off)])
		if err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
		equal(t, "part of object", buf[:n], chunk[:n])
		off += int64(n)
	}
	if _, err := seq.Read(buf); err != io.EOF {
		t.Fatalf("read past the end: %v", err)
	}
}

func TestUploadAbort(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "x")
	ctx := testCtx(t)
	r := newRand(t)
	for _, size := range []int{100, 3*int(minPartSize) + 5} {
		u, err := s.NewUpload(ctx, "obj")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.Write(randBytes(r, size)); err != nil {
			t.Fatal(err)
		}
		if err := u.Abort(); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Complete(); err == nil {
			t.Fatal("complete after abort succeeded")
		}
		if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
			t.Fatalf("size %d: visible after abort: %v", size, keys)
		}
		noUploads(t, srv)
	}
}

// TestUploadCancel cancels the context while parts are in flight: the
// writer gets the context's error, and the multipart upload is aborted
// on the server although the context is done.
func TestUploadCancel(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx, cancel := context.WithCancel(testCtx(t))
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	data := randBytes(newRand(t), 2*int(minPartSize)+1)
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	cancel()
	var werr error
	for range 100 {
		if _, werr = u.Write(data); werr != nil {
			break
		}
	}
	if !errors.Is(werr, context.Canceled) {
		t.Fatalf("write after cancel: %v", werr)
	}
	if _, err := u.Complete(); !errors.Is(err, context.Canceled) {
		t.Fatalf("complete after cancel: %v", err)
	}
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("visible after cancel: %v", keys)
	}
	noUploads(t, srv)
}

func TestAbortUploads(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "pre")
	ctx := testCtx(t)
	// Pending uploads as a killed writer leaves them.
	var ids []string
	for _, n := range []string{"volumes/a/1.tbk", "volumes/a/2.tbk", "volumes/b/1.tbk"} {
		id, err := s.core.NewMultipartUpload(ctx, s.loc.Bucket, s.key(n), minioPutOpts())
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	o := testOptions()
	o.ListPageSize = 1
	paged := openAt(t, srv.Addr, srv.Bucket, "pre", o)
	var seen []PendingUpload
	if err := paged.ListUploads(ctx, "volumes/", func(u PendingUpload) error { seen = append(seen, u); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 {
		t.Fatalf("listed %d uploads one a page: %+v", len(seen), seen)
	}
	// A second upload of one key: versitygw's pagination may skip it
	// (see ListUploads), AbortUploads must not.
	if _, err := s.core.NewMultipartUpload(ctx, s.loc.Bucket, s.key("volumes/a/1.tbk"), minioPutOpts()); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AbortUploads(ctx, "volumes/", time.Hour); err != nil || len(got) != 0 {
		t.Fatalf("abort of uploads older than an hour: %v, %v", got, err)
	}
	got, err := paged.AbortUploads(ctx, "volumes/a/", 0)
	if err != nil || len(got) != 3 {
		t.Fatalf("abort volumes/a/: %+v, %v", got, err)
	}
	if left := srv.Uploads(srv.Bucket); len(left) != 1 || left[0] != "pre/volumes/b/1.tbk "+ids[2] {
		t.Fatalf("left: %v", left)
	}
	if err := s.AbortUpload(ctx, got[0]); err != nil {
		t.Fatalf("abort again: %v", err)
	}
}
