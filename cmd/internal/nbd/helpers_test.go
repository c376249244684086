package nbd_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
)

var seedFlag = flag.Int64("seed", 0, "seed for random tests (0: from THINBACK_SEED or the clock)")

// testRand returns a generator for a random test: its seed is logged,
// and -seed N or THINBACK_SEED=N replays it.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v := os.Getenv("THINBACK_SEED"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Fatalf("THINBACK_SEED=%q: %v", v, err)
			}
			seed = n
		}
	}
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("random seed %d (replay with -seed %d or THINBACK_SEED=%d)", seed, seed, seed)
	return rand.New(rand.NewSource(seed))
}

// memExports are exports of bytes in memory, by name; "" is "mem".
type memExports map[string][]byte

type memExport struct{ *bytes.Reader }

func (memExport) Close() error { return nil }

func (m memExports) List() ([]string, error) {
	var names []string
	for name := range m {
		names = append(names, name)
	}
	return names, nil
}

func (m memExports) Open(name string) (nbd.Export, error) {
	if name == "" {
		name = "mem"
	}
	b, ok := m[name]
	if !ok {
		return nil, nil
	}
	return memExport{bytes.NewReader(b)}, nil
}

// fuzzData is the export "mem" of fuzzExports: bytes that differ from
// offset to offset, so that a read of the wrong range shows.
var fuzzData = func() []byte {
	b := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(b)
	return b
}()

var fuzzExports = memExports{"mem": fuzzData}

// socketPair returns the two ends of a connected unix stream socket: a
// real socket, whose client end can stop writing and go on reading.
func socketPair(t testing.TB) (client *net.UnixConn, server net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0].(*net.UnixConn), conns[1]
}

// syncBuffer is a buffer written and read by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) logf(format string, args ...any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fmt.Fprintf(&b.b, format+"\n", args...)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// listenTest serves exports on a unix socket with opts until the end of
// the test, which checks that Serve returned nil.
func listenTest(t *testing.T, exports nbd.Exports, opts nbd.Options) (sock string, srv *nbd.Server, log *syncBuffer) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	log = &syncBuffer{}
	opts.Logf = log.logf
	srv = nbd.NewServer(exports, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if s := log.String(); s != "" {
			t.Logf("the server said:\n%s", s)
		}
	})
	return sock, srv, log
}

// closedByServer checks that the server closes c without sending more
// than upto bytes (the greeting, or nothing).
func closedByServer(t *testing.T, c net.Conn, upto int) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	b, err := io.ReadAll(io.LimitReader(c, int64(upto)+1))
	if err != nil || len(b) > upto {
		t.Fatalf("the server sent %d bytes and %v; want it to close the connection after at most %d", len(b), err, upto)
	}
}
