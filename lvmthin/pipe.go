package lvmthin

import (
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Reading a thin tool's output. thin_dump 0.9 writes every line of its
// output with a write(2) of its own, a million of them for a million
// mappings, and what a write costs depends on the reader:
//   - a pipe that has been polled wakes its poller at every write (Linux
//     keeps EPOLLET users working that way), and Go polls the pipes it
//     makes (os.Pipe, exec's StdoutPipe): its poller thread is woken a
//     million times, even while the reader does something else;
//   - a reader that is faster than the tool, as thinxml.Scan is, waits in read
//     on an empty pipe and is woken by nearly every write.
//
// Measured with thin_dump of 2 M mappings (79 MB) on 2 CPUs: 0.95 s to
// /dev/null; 1.5 to 1.8 s into a pipe from os.Pipe (the tool's system time
// triples); 1.1 to 1.2 s into a pipe that Go does not poll, read in batches.
const (
	// toolPipeSize is the pipe capacity asked for (the unprivileged limit,
	// /proc/sys/fs/pipe-max-size): it holds about 12 ms of thin_dump
	// output, so the tool does not block while the reader waits.
	toolPipeSize = 1 << 20
	// shortRead is a read small enough that the reader had better wait
	// for more before the next one.
	shortRead = 32 << 10
	// batchWait is how long it waits: long enough for the tool to write
	// hundreds of lines, short next to the tool's run time.
	batchWait = 500 * time.Microsecond
)

// toolPipe makes a pipe for a tool's standard output that Go's poller
// never sees: the file descriptors stay blocking (os.NewFile leaves
// blocking descriptors out of the poller), so reads block a thread
// instead. The command's end must be closed in this process once the
// command has started.
func toolPipe() (r, w *os.File, err error) {
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, fmt.Errorf("pipe: %w", err)
	}
	// Best effort: where the kernel refuses, batches are smaller.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, toolPipeSize)
	return os.NewFile(uintptr(fds[0]), "|0"), os.NewFile(uintptr(fds[1]), "|1"), nil
}

// batchReader waits a moment before a read that follows a short one, so
// that the pipe fills instead of waking the reader for every small write.
type batchReader struct {
	r     io.Reader
	short bool                // the last read was short
	sleep func(time.Duration) // time.Sleep; tests count the waits
}

func (b *batchReader) Read(p []byte) (int, error) {
	if b.short {
		b.sleep(batchWait)
	}
	n, err := b.r.Read(p)
	b.short = n < shortRead && n < len(p)
	return n, err
}
