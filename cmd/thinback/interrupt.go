package main

import (
	"context"
	"io"
	"os"
)

// A read of a pipe nobody writes to, or of a terminal, and a write to a
// pipe nobody reads, block in the kernel until the other end acts; a
// cancelled context cannot end them, and a signal's handler only cancels
// the context. So standard input and output, when they are not regular
// files, are read and written by goroutines of their own: Read and Write
// return the context's error as soon as it is cancelled, the blocked
// goroutine is left to the process's exit, and the command ends as it
// would on any other interruption (exit 130).

// stdinFor returns what commands read standard input through: f itself
// when it is a regular file (which never blocks, and which apply may seek
// and read twice), else a reader that gives up when ctx is cancelled.
func stdinFor(ctx context.Context, f *os.File) io.Reader {
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		return f
	}
	return &ctxReader{ctx: ctx, r: f}
}

const ctxBufSize = 256 << 10

type ctxChunk struct {
	buf []byte
	n   int
	err error
}

// ctxReader reads r in its own goroutine, started by the first Read, so
// that a command that never reads standard input never takes from it.
type ctxReader struct {
	ctx     context.Context
	r       io.Reader
	started bool
	full    chan ctxChunk
	free    chan []byte
	cur     ctxChunk
	off     int
	err     error
}

func (c *ctxReader) start() {
	c.started = true
	c.full = make(chan ctxChunk, 1)
	c.free = make(chan []byte, 2)
	c.free <- make([]byte, ctxBufSize)
	c.free <- make([]byte, ctxBufSize)
	go func() {
		for buf := range c.free {
			n, err := c.r.Read(buf)
			c.full <- ctxChunk{buf: buf, n: n, err: err}
			if err != nil {
				return
			}
		}
	}()
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if !c.started {
		c.start()
	}
	for c.off >= c.cur.n {
		if c.cur.err != nil {
			c.err = c.cur.err
			return 0, c.err
		}
		if c.cur.buf != nil {
			c.free <- c.cur.buf
			c.cur.buf = nil
		}
		select {
		case c.cur = <-c.full:
			c.off = 0
		case <-c.ctx.Done():
			c.err = c.ctx.Err()
			return 0, c.err
		}
	}
	n := copy(p, c.cur.buf[c.off:c.cur.n])
	c.off += n
	return n, nil
}

// ctxWriter writes to w in its own goroutine. Each Write waits for its
// data to be written, so errors (a broken pipe) come back from the Write
// that met them, and returns early only when ctx is cancelled; p is copied
// first, because the goroutine may still be writing it then.
type ctxWriter struct {
	ctx  context.Context
	w    io.Writer
	req  chan []byte
	res  chan ctxChunk
	buf  []byte
	dead error
}

func newCtxWriter(ctx context.Context, w io.Writer) *ctxWriter {
	return &ctxWriter{ctx: ctx, w: w}
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if c.dead != nil {
		return 0, c.dead
	}
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.req == nil {
		c.req, c.res = make(chan []byte), make(chan ctxChunk, 1)
		go func() {
			for b := range c.req {
				n, err := c.w.Write(b)
				c.res <- ctxChunk{n: n, err: err}
			}
		}()
	}
	c.buf = append(c.buf[:0], p...)
	c.req <- c.buf
	select {
	case r := <-c.res:
		return r.n, r.err
	case <-c.ctx.Done():
		c.dead = c.ctx.Err()
		c.buf = nil // the goroutine may still hold it
		return 0, c.dead
	}
}
