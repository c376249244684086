package s3

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

// throughProxy opens the store behind a fault-injecting proxy.
func throughProxy(t *testing.T, o *Options) (*s3test.Server, *s3test.Proxy, *Store) {
	t.Helper()
	srv := s3test.Start(t)
	p := s3test.NewProxy(t, srv.Addr)
	return srv, p, openAt(t, p.Addr(), srv.Bucket, "f", o)
}

// TestReadResumesAfterReset: connections cut in the middle of download
// bodies; the ranged reads resume and return the right bytes.
func TestReadResumesAfterReset(t *testing.T) {
	_, p, s := throughProxy(t, nil)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 6<<20)
	if _, err := s.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 1 << 20, Count: 3, Action: s3test.Reset})
	got := make([]byte, len(data))
	if _, err := rd.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	equal(t, "ReadAt through resets", got, data)
	if p.Fired() != 3 {
		t.Fatalf("%d connections reset, want 3", p.Fired())
	}
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 2 << 20, Count: 2, Action: s3test.Reset})
	b, err := io.ReadAll(rd.NewSequential(0, -1))
	if err != nil {
		t.Fatal(err)
	}
	equal(t, "sequential read through resets", b, data)
	if p.Fired() != 5 {
		t.Fatalf("%d connections reset in all, want 5", p.Fired())
	}
}

// TestReadResumesAfterStall: a connection stops moving mid-body without
// closing; the stall timeout drops it and the read resumes.
func TestReadResumesAfterStall(t *testing.T) {
	o := testOptions()
	o.StallTimeout = time.Second
	_, p, s := throughProxy(t, o)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 3<<20)
	if _, err := s.Put(ctx, "obj", data); err != nil {
		t.Fatal(err)
	}
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 1 << 20, Count: 1, Action: s3test.Stall})
	got := make([]byte, len(data))
	if _, err := rd.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	equal(t, "ReadAt through a stall", got, data)
	if p.Fired() != 1 {
		t.Fatalf("%d connections stalled, want 1", p.Fired())
	}
}

// TestReadGivesUp: a store that cuts every connection makes a read fail
// with a clear error after the retries, not hang or return bad bytes.
func TestReadGivesUp(t *testing.T) {
	_, p, s := throughProxy(t, nil)
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "obj", make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 0, Count: -1, Action: s3test.Reset})
	_, err = rd.ReadAt(make([]byte, 1<<20), 0)
	var e *Error
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &e) || e.Object != "obj" {
		t.Fatalf("read from a store that resets everything: %v", err)
	}
}

// TestUploadSurvivesReset: a connection cut during a part is retried by
// minio-go (the part is in memory), and the object is whole.
func TestUploadSurvivesReset(t *testing.T) {
	srv, p, s := throughProxy(t, nil)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 3*int(minPartSize)+100)
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Up, After: 7 << 20, Count: 2, Action: s3test.Reset})
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	if p.Fired() != 2 {
		t.Fatalf("%d connections reset, want 2", p.Fired())
	}
	equal(t, "object uploaded through resets", mustGet(t, s, "obj"), data)
	noUploads(t, srv)
}

// TestUploadCutFails: the store goes away in the middle of an upload.
// The upload fails, nothing is visible, and once the store is back the
// pending upload that the failed abort left is found and removed.
func TestUploadCutFails(t *testing.T) {
	o := testOptions()
	o.MaxRetries = 2
	srv, p, s := throughProxy(t, o)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 4*int(minPartSize))
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Up, After: 7 << 20, Count: -1, Action: s3test.Reset})
	_, werr := u.Write(data)
	_, cerr := u.Complete()
	if werr == nil && cerr == nil {
		t.Fatal("upload through a dead store succeeded")
	}
	if cerr == nil || !errors.Is(cerr, ErrUnavailable) {
		t.Fatalf("complete: %v", cerr)
	}
	var e *Error
	if !errors.As(cerr, &e) || e.Object != "obj" {
		t.Fatalf("error does not name the object: %v", cerr)
	}
	p.Disarm()
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("visible after a failed upload: %v", keys)
	}
	// The abort went through the dead proxy too, so the parts may still
	// be on the server; the next writer cleans up.
	if _, err := s.AbortUploads(ctx, "", 0); err != nil {
		t.Fatal(err)
	}
	noUploads(t, srv)
}

// TestUploadServerKilled: the server dies mid-upload (SIGKILL) and comes
// back. The upload fails cleanly, no object is visible, and the pending
// upload is cleaned up afterwards.
func TestUploadServerKilled(t *testing.T) {
	srv := s3test.Start(t)
	o := testOptions()
	o.MaxRetries = 2
	s := openAt(t, srv.Addr, srv.Bucket, "k", o)
	ctx := testCtx(t)
	r := newRand(t)
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(randBytes(r, 2*int(minPartSize))); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	chunk := randBytes(r, 1<<20)
	var werr error
	for range 64 {
		if _, werr = u.Write(chunk); werr != nil {
			break
		}
	}
	_, cerr := u.Complete()
	if cerr == nil {
		t.Fatal("upload to a killed server succeeded")
	}
	if !errors.Is(cerr, ErrUnavailable) {
		t.Fatalf("complete: %v (write: %v)", cerr, werr)
	}
	srv.Restart()
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("visible after a killed upload: %v", keys)
	}
	pending := srv.Uploads(srv.Bucket)
	t.Logf("pending after the kill: %v", pending)
	got, err := s.AbortUploads(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(pending) {
		t.Fatalf("aborted %d of %d pending uploads", len(got), len(pending))
	}
	noUploads(t, srv)
	// And the store works again.
	if _, err := s.Put(ctx, "after", []byte("x")); err != nil {
		t.Fatal(err)
	}
}

// TestLockAnswerLost: the answer to the lock's create is cut, minio-go
// sends the create again and meets our own object; the token tells it
// is ours.
func TestLockAnswerLost(t *testing.T) {
	_, p, s := throughProxy(t, nil)
	ctx := testCtx(t)
	if err := s.ProbeConditional(ctx); err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 0, Count: 1, Action: s3test.Reset})
	l, err := s.Lock(ctx, "lk", time.Minute)
	if err != nil {
		t.Fatalf("lock whose first answer was lost: %v", err)
	}
	if p.Fired() != 1 {
		t.Fatalf("fault fired %d times", p.Fired())
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestCompleteAnswerLost: the answer to CompleteMultipartUpload is cut
// and minio-go sends it again. versitygw answers the repeated Complete
// with success, as AWS does; a server that answers NoSuchUpload instead
// is recognised by the multipart ETag (checked in TestUploadSizes).
func TestCompleteAnswerLost(t *testing.T) {
	srv, p, s := throughProxy(t, nil)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 2*int(minPartSize)+1)
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	// Let the parts finish, then cut the next answer: Complete's.
	u.flush()
	u.wg.Wait()
	p.Arm(s3test.Fault{Dir: s3test.Down, After: 0, Count: 1, Action: s3test.Reset})
	info, err := u.Complete()
	if err != nil {
		t.Fatalf("complete whose answer was lost: %v", err)
	}
	if p.Fired() != 1 {
		t.Fatalf("fault fired %d times", p.Fired())
	}
	if info.Size != int64(len(data)) {
		t.Fatalf("size %d", info.Size)
	}
	if !bytes.Equal(mustGet(t, s, "obj"), data) {
		t.Fatal("object differs")
	}
	noUploads(t, srv)
}

// TestUploadSurvivesStall: the server stops reading a part mid-way; the
// stall timeout drops the connection and the part is sent again.
func TestUploadSurvivesStall(t *testing.T) {
	o := testOptions()
	o.StallTimeout = time.Second
	srv, p, s := throughProxy(t, o)
	ctx := testCtx(t)
	data := randBytes(newRand(t), 2*int(minPartSize)+100)
	u, err := s.NewUpload(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	p.Arm(s3test.Fault{Dir: s3test.Up, After: 3 << 20, Count: 1, Action: s3test.Stall})
	if _, err := u.Write(data); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Complete(); err != nil {
		t.Fatal(err)
	}
	if p.Fired() != 1 {
		t.Fatalf("%d connections stalled, want 1", p.Fired())
	}
	equal(t, "object uploaded through a stall", mustGet(t, s, "obj"), data)
	noUploads(t, srv)
}
