package s3

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestPutGetListDelete(t *testing.T) {
	srv := s3test.Start(t)
	o := testOptions()
	o.ListPageSize = 2 // several pages for five objects
	s := openAt(t, srv.Addr, srv.Bucket, "store/one", o)
	other := openTest(t, srv, "store/other")
	ctx := testCtx(t)

	names := []string{"a", "b/c", "b/d", "volumes/vg0+vm1/1-x.tbk", "z"}
	for i, n := range names {
		info, err := s.Put(ctx, n, []byte(fmt.Sprintf("object %d", i)))
		if err != nil {
			t.Fatal(err)
		}
		if info.Name != n || info.Size != int64(len(fmt.Sprintf("object %d", i))) || info.ETag == "" {
			t.Errorf("put %s: info %+v", n, info)
		}
	}
	if _, err := other.Put(ctx, "a", []byte("not mine")); err != nil {
		t.Fatal(err)
	}
	var listed []string
	if err := s.List(ctx, "", func(oi ObjectInfo) error { listed = append(listed, oi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, names) {
		t.Fatalf("list: %q, want %q", listed, names)
	}
	listed = nil
	if err := s.List(ctx, "b/", func(oi ObjectInfo) error { listed = append(listed, oi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, []string{"b/c", "b/d"}) {
		t.Fatalf("list b/: %q", listed)
	}
	stop := errors.New("stop")
	n := 0
	if err := s.List(ctx, "", func(ObjectInfo) error { n++; return stop }); err != stop || n != 1 {
		t.Fatalf("list stopped by fn: %v after %d", err, n)
	}

	if got := string(mustGet(t, s, "b/d")); got != "object 2" {
		t.Fatalf("get b/d: %q", got)
	}
	if got := string(mustGet(t, other, "a")); got != "not mine" {
		t.Fatalf("prefixes mix: %q", got)
	}
	st, err := s.Stat(ctx, "z")
	if err != nil || st.Size != 8 {
		t.Fatalf("stat z: %+v %v", st, err)
	}
	if err := s.Delete(ctx, "z"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "z"); err != nil {
		t.Fatalf("second delete: %v", err)
	}
	_, _, err = s.Get(ctx, "z", 100)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Stat(ctx, "z"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("stat after delete: %v", err)
	}
	if _, err := s.OpenObject(ctx, "z"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("open after delete: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Object != "z" || e.Store != s.String() {
		t.Fatalf("error does not name store and object: %#v", err)
	}
	for _, bad := range []string{"", "/a", "a//b", "../x", "a/./b", "a\x00b", "a\\b"} {
		if _, err := s.Put(ctx, bad, nil); !errors.Is(err, ErrInvalidName) {
			t.Errorf("put %q: %v", bad, err)
		}
	}
}

func TestGetLimit(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "")
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "big", make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "big", 999); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("get over the limit: %v", err)
	}
	b, _, err := s.Get(ctx, "big", 1000)
	if err != nil || len(b) != 1000 {
		t.Fatalf("get at the limit: %d bytes, %v", len(b), err)
	}
	if _, err := s.Put(ctx, "empty", nil); err != nil {
		t.Fatal(err)
	}
	if b := mustGet(t, s, "empty"); len(b) != 0 {
		t.Fatalf("empty object: %d bytes", len(b))
	}
}

// TestConditional records what versitygw does with If-None-Match and
// If-Match on PUT: both are honoured, which the locks rely on.
func TestConditional(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "p")
	ctx := testCtx(t)
	if err := s.ProbeConditional(ctx); err != nil {
		t.Fatalf("probe: %v", err)
	}
	first, err := s.Create(ctx, "rec", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Create(ctx, "rec", []byte("two"))
	if !errors.Is(err, ErrExist) {
		t.Fatalf("second create: %v", err)
	}
	if got := string(mustGet(t, s, "rec")); got != "one" {
		t.Fatalf("second create changed the object: %q", got)
	}
	if _, err := s.Replace(ctx, "rec", "0123456789abcdef0123456789abcdef", []byte("three")); !errors.Is(err, ErrChanged) {
		t.Fatalf("replace with a wrong ETag: %v", err)
	}
	if _, err := s.Replace(ctx, "rec", first.ETag, []byte("four")); err != nil {
		t.Fatalf("replace with the right ETag: %v", err)
	}
	if got := string(mustGet(t, s, "rec")); got != "four" {
		t.Fatalf("after replace: %q", got)
	}
	// The probe cleans up after itself.
	for _, k := range srv.Objects(srv.Bucket) {
		if k != "p/rec" {
			t.Errorf("left behind: %s", k)
		}
	}
}

// TestEmptyObjects puts and gets empty objects over kept-alive
// connections: minio-go's streaming signature once left bytes of an
// empty PUT on the connection, and the next request on it failed with
// 400 "error when parsing the HTTP request", now and then.
func TestEmptyObjects(t *testing.T) {
	srv := s3test.Start(t)
	s := openTest(t, srv, "e")
	ctx := testCtx(t)
	for i := range 200 {
		if _, err := s.Put(ctx, "empty", nil); err != nil {
			t.Fatalf("round %d: put: %v", i, err)
		}
		if b, _, err := s.Get(ctx, "empty", 10); err != nil || len(b) != 0 {
			t.Fatalf("round %d: get: %d bytes, %v", i, len(b), err)
		}
	}
	u, err := s.NewUpload(ctx, "empty-upload")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := u.Complete(); err != nil || info.Size != 0 {
		t.Fatalf("empty upload: %+v, %v", info, err)
	}
}

// TestDirectoryRace writes and deletes objects of one "directory" from
// several clients at once. On versitygw's posix back end the last delete
// of a directory removes it while another write creates a file in it;
// such writes are retried (retryDirRace) and must all succeed.
func TestDirectoryRace(t *testing.T) {
	srv := s3test.Start(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		s := openTest(t, srv, "race")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 40 {
				name := fmt.Sprintf("locks/%d-%d", i, j)
				if _, err := s.Create(ctx, name, []byte("x")); err != nil {
					errs <- err
					return
				}
				if err := s.Delete(ctx, name); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
