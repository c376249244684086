package lvmthin

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/sys/unix"
)

// pieceReader returns its pieces one per Read.
type pieceReader struct{ pieces [][]byte }

func (p *pieceReader) Read(b []byte) (int, error) {
	if len(p.pieces) == 0 {
		return 0, io.EOF
	}
	n := copy(b, p.pieces[0])
	if p.pieces[0] = p.pieces[0][n:]; len(p.pieces[0]) == 0 {
		p.pieces = p.pieces[1:]
	}
	return n, nil
}

func TestBatchReader(t *testing.T) {
	small, large := bytes.Repeat([]byte("s"), 100), bytes.Repeat([]byte("L"), shortRead)
	src := &pieceReader{pieces: [][]byte{small, small, large, large, small, large}}
	var want []byte
	for _, p := range src.pieces {
		want = append(want, p...)
	}
	var waits []int // the number of reads done before each wait
	reads := 0
	b := &batchReader{r: readCounter{src, &reads}, sleep: func(d time.Duration) {
		if d != batchWait {
			t.Errorf("waited %v", d)
		}
		waits = append(waits, reads)
	}}
	var got []byte
	buf := make([]byte, 2*shortRead)
	for {
		n, err := b.Read(buf)
		got = append(got, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data changed on the way")
	}
	// Before the reads that follow a short one: of the second small
	// piece, the first large one and the large one after the last small
	// one; not before the read that finds the end after a large one.
	if wantWaits := []int{1, 2, 5}; !slices.Equal(waits, wantWaits) {
		t.Errorf("waited after reads %v, want %v", waits, wantWaits)
	}

	// A read that fills a small buffer is not short.
	waits = waits[:0]
	b = &batchReader{r: iotest.OneByteReader(strings.NewReader("abc")), sleep: func(time.Duration) { waits = append(waits, 0) }}
	if _, err := io.ReadAll(iotest.OneByteReader(b)); err != nil || len(waits) != 0 {
		t.Errorf("%d waits reading a byte at a time, %v", len(waits), err)
	}
}

type readCounter struct {
	r io.Reader
	n *int
}

func (c readCounter) Read(p []byte) (int, error) {
	*c.n++
	return c.r.Read(p)
}

// TestToolPipe checks that the pipe stays out of Go's poller (its
// descriptors are blocking) and was enlarged.
func TestToolPipe(t *testing.T) {
	r, w, err := toolPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The raw connection shows the descriptors as they are (Fd would make
	// a pollable file blocking).
	check := func(name string, fd int) {
		flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if flags&unix.O_NONBLOCK != 0 {
			t.Errorf("%s end is non-blocking: Go polls it", name)
		}
	}
	rc, _ := r.SyscallConn()
	_ = rc.Control(func(fd uintptr) {
		check("read", int(fd))
		size, err := unix.FcntlInt(fd, unix.F_GETPIPE_SZ, 0)
		if err != nil || size != toolPipeSize {
			t.Errorf("pipe size %d (%v), want %d", size, err, toolPipeSize)
		}
	})
	wc, _ := w.SyscallConn()
	_ = wc.Control(func(fd uintptr) { check("write", int(fd)) })
	go func() {
		_, _ = w.Write([]byte("hello"))
		w.Close()
	}()
	if b, err := io.ReadAll(r); err != nil || string(b) != "hello" {
		t.Errorf("read %q, %v", b, err)
	}
}

// TestRunCancelWhileConsuming checks that a command cancelled while its
// output is read stops, though the read blocks a thread and cannot be
// interrupted: the command's end of the pipe closes when it dies (and
// its child's, which holds the same pipe).
func TestRunCancelWhileConsuming(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	var got []byte
	err := runBounded(t, func() error {
		_, err := run(ctx, func(r io.Reader) (err error) {
			line := make([]byte, len("started\n"))
			if _, err := io.ReadFull(r, line); err != nil {
				return err
			}
			cancel() // while the command runs and its output is read
			rest, err := io.ReadAll(r)
			got = append(line, rest...)
			return err
		}, "sh", "-c", `sleep 100000 & echo $! > `+pidFile+`; echo started; wait`)
		return err
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want the cancellation", err)
	}
	if string(got) != "started\n" {
		t.Errorf("read %q", got)
	}
	waitGone(t, pidFile)
}
