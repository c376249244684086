package s3

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestWrongCredentials(t *testing.T) {
	srv := s3test.Start(t)
	loc, _ := ParseLocation(srv.Location("p"))
	for _, c := range []struct{ key, secret string }{
		{s3test.AccessKey, "wrong-secret"},
		{"nosuchkey", s3test.SecretKey},
	} {
		o := testOptions()
		o.AccessKey, o.SecretKey = c.key, c.secret
		_, err := Open(testCtx(t), loc, o)
		if !errors.Is(err, ErrCredentials) {
			t.Fatalf("open with key %s secret %s: %v", c.key, c.secret, err)
		}
		if !strings.Contains(err.Error(), loc.String()) || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
			t.Fatalf("message names neither store nor what to do: %v", err)
		}
	}
}

func TestMissingBucket(t *testing.T) {
	srv := s3test.Start(t)
	loc := Location{Insecure: true, Host: srv.Addr, Bucket: "no-such-bucket", Prefix: "p"}
	_, err := Open(testCtx(t), loc, testOptions())
	if !errors.Is(err, ErrNoBucket) || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Fatalf("open of a missing bucket: %v", err)
	}
	// A store opened before its bucket went away says so on every call.
	srv.MakeBucket("soon-gone")
	s := openAt(t, srv.Addr, "soon-gone", "", nil)
	if err := srv.Client().RemoveBucket(testCtx(t), "soon-gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(testCtx(t), "x", []byte("x")); !errors.Is(err, ErrNoBucket) {
		t.Fatalf("put into a removed bucket: %v", err)
	}
}

// clearCredentialEnv makes the test see no credentials of the machine.
func clearCredentialEnv(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	for _, v := range []string{"AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY", "AWS_SECRET_KEY",
		"AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
}

func TestCredentialSources(t *testing.T) {
	srv := s3test.Start(t)
	loc, _ := ParseLocation(srv.Location(""))
	fromEnv := func() *Options {
		o := testOptions()
		o.AccessKey, o.SecretKey = "", ""
		return o
	}

	t.Run("none", func(t *testing.T) {
		clearCredentialEnv(t)
		_, err := Open(testCtx(t), loc, fromEnv())
		if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), "no credentials") {
			t.Fatalf("open without credentials: %v", err)
		}
	})
	t.Run("environment", func(t *testing.T) {
		clearCredentialEnv(t)
		t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
		t.Setenv("AWS_SECRET_ACCESS_KEY", s3test.SecretKey)
		if _, err := Open(testCtx(t), loc, fromEnv()); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		if _, err := Open(testCtx(t), loc, fromEnv()); !errors.Is(err, ErrCredentials) {
			t.Fatalf("half a key pair: %v", err)
		}
	})
	t.Run("profile", func(t *testing.T) {
		clearCredentialEnv(t)
		file := filepath.Join(t.TempDir(), "credentials")
		content := fmt.Sprintf("[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n[backup]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
			s3test.AccessKey, s3test.SecretKey)
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", file)
		t.Setenv("AWS_PROFILE", "backup")
		if _, err := Open(testCtx(t), loc, fromEnv()); err != nil {
			t.Fatalf("profile from AWS_PROFILE: %v", err)
		}
		t.Setenv("AWS_PROFILE", "")
		if _, err := Open(testCtx(t), loc, fromEnv()); !errors.Is(err, ErrCredentials) {
			t.Fatalf("default profile has wrong keys: %v", err)
		}
		o := fromEnv()
		o.Profile = "backup"
		if _, err := Open(testCtx(t), loc, o); err != nil {
			t.Fatalf("profile from Options: %v", err)
		}
		o.Profile = "nosuch"
		_, err := Open(testCtx(t), loc, o)
		if !errors.Is(err, ErrCredentials) || !strings.Contains(err.Error(), `"nosuch"`) {
			t.Fatalf("missing profile: %v", err)
		}
	})
}

// cannedServer answers every request with one S3 error, as a server in
// that state would.
func cannedServer(t *testing.T, status int, code string) *Store {
	t.Helper()
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>canned %s</Message><RequestId>1</RequestId></Error>`, code, code)
		}
	}))
	t.Cleanup(hs.Close)
	o := testOptions()
	o.MaxRetries = 2
	s, err := newStore(Location{Insecure: true, Host: strings.TrimPrefix(hs.URL, "http://"), Bucket: "bucket", Prefix: "p"}, o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServerErrors: the errors people meet, as servers send them, come
// out as the sentinels, naming store and object.
func TestServerErrors(t *testing.T) {
	for _, c := range []struct {
		status int
		code   string
		want   error
	}{
		{403, "InvalidAccessKeyId", ErrCredentials},
		{403, "SignatureDoesNotMatch", ErrCredentials},
		{400, "ExpiredToken", ErrCredentials},
		{404, "NoSuchBucket", ErrNoBucket},
		{403, "RequestTimeTooSkewed", ErrClockSkew},
		{403, "AccessDenied", ErrDenied},
		{403, "QuotaExceeded", ErrQuota},
		{507, "XMinioStorageFull", ErrQuota},
		{404, "NoSuchKey", ErrNotFound},
		{503, "SlowDown", ErrUnavailable},
		{500, "InternalError", ErrUnavailable},
	} {
		t.Run(c.code, func(t *testing.T) {
			s := cannedServer(t, c.status, c.code)
			ctx := testCtx(t)
			_, err := s.Put(ctx, "volumes/v/1.tbk", []byte("x"))
			if !errors.Is(err, c.want) {
				t.Fatalf("put: %v, want %v", err, c.want)
			}
			var e *Error
			if !errors.As(err, &e) || e.Object != "volumes/v/1.tbk" || e.Code != c.code || !strings.Contains(err.Error(), s.String()) {
				t.Fatalf("put error does not name store, object and code: %#v", err)
			}
			if _, _, err := s.Get(ctx, "rec", 100); !errors.Is(err, c.want) {
				t.Fatalf("get: %v, want %v", err, c.want)
			}
			if err := s.check(ctx); c.want != ErrNotFound && !errors.Is(err, c.want) {
				t.Fatalf("open: %v, want %v", err, c.want)
			}
		})
	}
}

// frontProxy is an HTTP proxy before versitygw that can rewrite
// answers.
func frontProxy(t *testing.T, srv *s3test.Server, modify func(*http.Response) error, intercept func(http.ResponseWriter, *http.Request) bool) string {
	t.Helper()
	target, _ := url.Parse("http://" + srv.Addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = modify
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept != nil && intercept(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}

// TestSlowDownRetried: 503 SlowDown is retried with backoff, and a
// server that keeps throttling gives ErrUnavailable.
func TestSlowDownRetried(t *testing.T) {
	srv := s3test.Start(t)
	var throttle, throttled atomic.Int64
	addr := frontProxy(t, srv, nil, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || throttle.Add(-1) < 0 {
			return false
		}
		throttled.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
		return true
	})
	s := openAt(t, addr, srv.Bucket, "", nil)
	ctx := testCtx(t)
	throttle.Store(2)
	if _, err := s.Put(ctx, "x", []byte("data")); err != nil {
		t.Fatalf("put after two SlowDowns: %v", err)
	}
	if throttled.Load() != 2 {
		t.Fatalf("%d requests throttled, want 2", throttled.Load())
	}
	if string(mustGet(t, s, "x")) != "data" {
		t.Fatal("object differs")
	}
	throttle.Store(1 << 30)
	if _, err := s.Put(ctx, "y", []byte("data")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("put to a server that keeps throttling: %v", err)
	}
}

// TestIgnoredCondition: a server that ignores If-None-Match (simulated
// by turning versitygw's 412 into 200) is detected, and locks and
// creates refuse to work on it.
func TestIgnoredCondition(t *testing.T) {
	srv := s3test.Start(t)
	addr := frontProxy(t, srv, func(r *http.Response) error {
		if r.Request.Method == http.MethodPut && r.StatusCode == http.StatusPreconditionFailed {
			r.StatusCode, r.Status = http.StatusOK, "200 OK"
			r.Body = io.NopCloser(strings.NewReader(""))
			r.ContentLength = 0
			r.Header.Set("Content-Length", "0")
			r.Header.Set("ETag", `"d41d8cd98f00b204e9800998ecf8427e"`)
		}
		return nil
	}, nil)
	s := openAt(t, addr, srv.Bucket, "", nil)
	ctx := testCtx(t)
	err := s.ProbeConditional(ctx)
	if !errors.Is(err, ErrNoConditional) || !strings.Contains(err.Error(), "If-None-Match") {
		t.Fatalf("probe of a server that ignores If-None-Match: %v", err)
	}
	if _, err := s.Create(ctx, "rec", []byte("x")); !errors.Is(err, ErrNoConditional) {
		t.Fatalf("create: %v", err)
	}
	if _, err := s.Lock(ctx, "lk", time.Minute); !errors.Is(err, ErrNoConditional) {
		t.Fatalf("lock: %v", err)
	}
	if keys := srv.Objects(srv.Bucket); len(keys) != 0 {
		t.Fatalf("left behind: %v", keys)
	}
}

// TestTLS: a server whose certificate nobody signed is refused, trusted
// with a CA file, and accepted unchecked only when asked.
func TestTLS(t *testing.T) {
	srv := s3test.StartWith(t, s3test.Config{TLS: true})
	loc, err := ParseLocation(srv.Location("tls"))
	if err != nil || loc.Insecure {
		t.Fatalf("location %s: %+v %v", srv.Location("tls"), loc, err)
	}
	ctx := testCtx(t)
	_, err = Open(ctx, loc, testOptions())
	if !errors.Is(err, ErrCertificate) || !strings.Contains(err.Error(), "CA file") || !strings.Contains(err.Error(), loc.String()) {
		t.Fatalf("open of a server with an unknown certificate: %v", err)
	}
	o := testOptions()
	o.CAFile = srv.CAFile
	s, err := Open(ctx, loc, o)
	if err != nil {
		t.Fatalf("open with the CA file: %v", err)
	}
	if _, err := s.Put(ctx, "x", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if string(mustGet(t, s, "x")) != "over TLS" {
		t.Fatal("object differs")
	}
	o = testOptions()
	o.InsecureTLS = true
	if _, err := Open(ctx, loc, o); err != nil {
		t.Fatalf("open with InsecureTLS: %v", err)
	}
	o = testOptions()
	o.CAFile = filepath.Join(t.TempDir(), "missing.pem")
	if _, err := Open(ctx, loc, o); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Fatalf("open with a missing CA file: %v", err)
	}
}
