package s3

import (
	"bytes"
	"context"
	"flag"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

var seedFlag = flag.Uint64("seed", 0, "seed for random tests (0: from THINBACK_SEED or the clock)")

// newRand returns a generator whose seed the test prints, and takes back
// with -seed N or THINBACK_SEED=N.
func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v, err := strconv.ParseUint(os.Getenv("THINBACK_SEED"), 10, 64); err == nil {
			seed = v
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func newRandSeed(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)) }

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// testOptions are small parts and short timeouts, so tests move little
// data and fail fast.
func testOptions() *Options {
	return &Options{
		AccessKey:    s3test.AccessKey,
		SecretKey:    s3test.SecretKey,
		Region:       "us-east-1",
		Lookup:       LookupPath,
		PartSize:     minPartSize,
		Uploads:      3,
		ReadChunk:    1 << 20,
		ReadAhead:    3,
		MaxRetries:   4,
		StallTimeout: 30 * time.Second,
	}
}

// openAt opens the store at addr (the server or a proxy in front of it).
func openAt(t testing.TB, addr, bucket, prefix string, o *Options) *Store {
	t.Helper()
	if o == nil {
		o = testOptions()
	}
	loc := Location{Insecure: true, Host: addr, Bucket: bucket, Prefix: prefix}
	s, err := Open(testCtx(t), loc, o)
	if err != nil {
		t.Fatalf("open %s: %v", loc, err)
	}
	return s
}

func openTest(t testing.TB, srv *s3test.Server, prefix string) *Store {
	t.Helper()
	return openAt(t, srv.Addr, srv.Bucket, prefix, nil)
}

// mustGet reads a whole object.
func mustGet(t testing.TB, s *Store, name string) []byte {
	t.Helper()
	b, _, err := s.Get(testCtx(t), name, 1<<30)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	return b
}

func equal(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: got %d bytes, want %d; first difference at %d", what, len(got), len(want), i)
	}
}

// noUploads fails if the bucket holds a pending multipart upload.
func noUploads(t testing.TB, srv *s3test.Server) {
	t.Helper()
	if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
		t.Fatalf("pending multipart uploads left: %v", ups)
	}
}

func minioPutOpts() minio.PutObjectOptions { return minio.PutObjectOptions{} }
