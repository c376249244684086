package s3

import (
	"flag"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

// go test -run '^$' -bench . -benchtime 3x ./catalog/s3 -s3.benchsize 1024
var benchSize = flag.Int64("s3.benchsize", 256, "MiB moved per benchmark iteration")

// peakRSS returns the process's peak resident set size in MiB since the
// last resetPeakRSS.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// resetPeakRSS starts a new peak measurement (Linux: clear_refs 5).
// Garbage of the set-up is returned to the OS first, so the peak is the
// benchmark's own.
func resetPeakRSS() {
	runtime.GC() // twice: sync.Pool keeps what it held for one cycle
	debug.FreeOSMemory()
	_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0)
}

// source yields n incompressible bytes from a 1 MiB pattern, without
// holding n bytes.
type source struct {
	pat  []byte
	left int64
}

func newSource(n int64) *source {
	return &source{pat: randBytes(newRandSeed(1), 1<<20), left: n}
}

func (s *source) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	n := copy(p, s.pat[int(s.left)%len(s.pat):])
	n = int(min(int64(n), s.left))
	s.left -= int64(n)
	return n, nil
}

func benchStore(b *testing.B) (*s3test.Server, *Store) {
	srv := s3test.Start(b)
	o := testOptions()
	o.PartSize, o.Uploads, o.ReadChunk, o.ReadAhead = 0, 0, 0, 0 // production defaults
	return srv, openAt(b, srv.Addr, srv.Bucket, "bench", o)
}

// BenchmarkUpload streams an object of unknown size through Upload, with
// the default part size and parts in flight.
func BenchmarkUpload(b *testing.B) {
	_, s := benchStore(b)
	ctx := testCtx(b)
	size := *benchSize << 20
	b.SetBytes(size)
	resetPeakRSS()
	b.ResetTimer()
	for b.Loop() {
		u, err := s.NewUpload(ctx, "obj")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(u, newSource(size), make([]byte, 256<<10)); err != nil {
			b.Fatal(err)
		}
		if _, err := u.Complete(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}

// putBenchObject writes the object through a Store of its own, whose
// buffers are garbage once it returns, so they do not count in the read
// benchmarks' peak.
func putBenchObject(b *testing.B, srv *s3test.Server, size int64) {
	s := openAt(b, srv.Addr, srv.Bucket, "bench", nil)
	u, err := s.NewUpload(testCtx(b), "obj")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(u, newSource(size)); err != nil {
		b.Fatal(err)
	}
	if _, err := u.Complete(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkReadSequential reads the object front to back through
// NewSequential: ranged GETs with read-ahead, as a restore will.
func BenchmarkReadSequential(b *testing.B) {
	srv, s := benchStore(b)
	ctx := testCtx(b)
	size := *benchSize << 20
	putBenchObject(b, srv, size)
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(size)
	resetPeakRSS()
	b.ResetTimer()
	for b.Loop() {
		seq := rd.NewSequential(0, -1)
		n, err := io.CopyBuffer(io.Discard, seq, make([]byte, 256<<10))
		if err != nil || n != size {
			b.Fatalf("%d bytes, %v", n, err)
		}
		seq.Close()
	}
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}

// BenchmarkReadPlainGet is the reference: one GET of the whole object
// with minio-go, no ranges, no checks.
func BenchmarkReadPlainGet(b *testing.B) {
	srv, s := benchStore(b)
	ctx := testCtx(b)
	size := *benchSize << 20
	putBenchObject(b, srv, size)
	b.SetBytes(size)
	resetPeakRSS()
	b.ResetTimer()
	for b.Loop() {
		obj, err := srv.Client().GetObject(ctx, srv.Bucket, s.key("obj"), minio.GetObjectOptions{})
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.CopyBuffer(io.Discard, obj, make([]byte, 256<<10))
		if err != nil || n != size {
			b.Fatalf("%d bytes, %v", n, err)
		}
		obj.Close()
	}
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}

// BenchmarkReadAt reads 4 MiB ranges at random offsets, as verify of
// one record or a mount would.
func BenchmarkReadAt(b *testing.B) {
	srv, s := benchStore(b)
	ctx := testCtx(b)
	size := *benchSize << 20
	putBenchObject(b, srv, size)
	rd, err := s.OpenObject(ctx, "obj")
	if err != nil {
		b.Fatal(err)
	}
	r := newRandSeed(2)
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	for b.Loop() {
		off := r.Int64N(size - int64(len(buf)))
		if _, err := rd.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUploadMinioPutObject is the reference for BenchmarkUpload:
// minio-go's own streaming PutObject of unknown size with the same part
// size and parts in flight.
func BenchmarkUploadMinioPutObject(b *testing.B) {
	srv, s := benchStore(b)
	ctx := testCtx(b)
	size := *benchSize << 20
	b.SetBytes(size)
	resetPeakRSS()
	b.ResetTimer()
	for b.Loop() {
		_, err := srv.Client().PutObject(ctx, srv.Bucket, s.key("ref"), newSource(size), -1, minio.PutObjectOptions{
			PartSize: uint64(s.opts.PartSize), NumThreads: uint(s.opts.Uploads), ConcurrentStreamParts: true,
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(peakRSS(), "peak-RSS-MiB")
}
