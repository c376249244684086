package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// Reader reads one object by ranged GETs: an io.ReaderAt over the object
// as it was when OpenObject looked at it. Every range asks for that
// version (If-Match on its ETag), so an object replaced meanwhile fails
// with ErrChanged instead of mixing two versions. Every range is checked
// for its length and start, and a body cut mid-way is resumed from where
// it stopped, up to Options.MaxRetries times in a row without progress.
// A Reader is safe for concurrent use.
type Reader struct {
	s    *Store
	ctx  context.Context
	info ObjectInfo
}

// OpenObject looks up an object (one HEAD) and returns a Reader for it;
// ErrNotFound if it does not exist. ctx bounds every later read.
func (s *Store) OpenObject(ctx context.Context, name string) (*Reader, error) {
	info, err := s.Stat(ctx, name)
	if err != nil {
		return nil, err
	}
	return &Reader{s: s, ctx: ctx, info: info}, nil
}

// Size returns the object's size.
func (r *Reader) Size() int64 { return r.info.Size }

// Info returns what OpenObject found.
func (r *Reader) Info() ObjectInfo { return r.info }

// ReadAt reads len(p) bytes at off, as io.ReaderAt: fewer only at the end
// of the object, with io.EOF.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	return r.readAt(r.ctx, p, off)
}

func (r *Reader) readAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, r.s.op("read", r.info.Name, fmt.Errorf("negative offset %d", off))
	}
	if off >= r.info.Size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.info.Size-off))
	got, fails := 0, 0
	for got < want {
		n, err := r.fetch(ctx, p[got:want], off+int64(got))
		got += n
		if err == nil {
			continue
		}
		if !retryBody(ctx, err) {
			return got, err
		}
		if n > 0 {
			fails = 0
		}
		fails++
		if fails >= r.s.opts.MaxRetries {
			kind := ErrTruncated
			if isNetwork(err) {
				kind = ErrUnavailable
			}
			return got, &Error{Op: "read", Store: r.s.loc.String(), Object: r.info.Name, Kind: kind,
				Err: fmt.Errorf("at offset %d after %d tries: %w", off+int64(got), fails, err)}
		}
		if err := sleep(ctx, backoff(fails)); err != nil {
			return got, r.s.op("read", r.info.Name, err)
		}
	}
	if want < len(p) {
		return got, io.EOF
	}
	return got, nil
}

// bodyError is a failure while reading a response body: minio-go has
// already returned, so it retries nothing here; we do.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }

func retryBody(ctx context.Context, err error) bool {
	var be *bodyError
	return errors.As(err, &be) && ctx.Err() == nil
}

// fetch does one ranged GET of len(p) bytes at off and reads its body.
func (r *Reader) fetch(ctx context.Context, p []byte, off int64) (int, error) {
	var o minio.GetObjectOptions
	if err := o.SetRange(off, off+int64(len(p))-1); err != nil {
		return 0, r.s.op("read", r.info.Name, err)
	}
	if r.info.ETag != "" {
		if err := o.SetMatchETag(r.info.ETag); err != nil {
			return 0, r.s.op("read", r.info.Name, err)
		}
	}
	body, oi, hdr, err := r.s.core.GetObject(ctx, r.s.loc.Bucket, r.s.key(r.info.Name), o)
	if err != nil {
		resp := minio.ToErrorResponse(err)
		if resp.StatusCode == http.StatusPreconditionFailed || resp.Code == "PreconditionFailed" {
			return 0, &Error{Op: "read", Store: r.s.loc.String(), Object: r.info.Name, Code: resp.Code, Kind: ErrChanged,
				Err: fmt.Errorf("ETag is no longer %s: %w", r.info.ETag, err)}
		}
		return 0, r.s.op("read", r.info.Name, err)
	}
	defer body.Close()
	if oi.Size != int64(len(p)) {
		return 0, &Error{Op: "read", Store: r.s.loc.String(), Object: r.info.Name, Kind: ErrTruncated,
			Err: fmt.Errorf("asked for %d bytes at %d, the server answers with %d", len(p), off, oi.Size)}
	}
	if start, ok := rangeStart(hdr.Get("Content-Range")); ok && start != off {
		return 0, &Error{Op: "read", Store: r.s.loc.String(), Object: r.info.Name, Kind: ErrTruncated,
			Err: fmt.Errorf("asked for bytes at %d, the server sent bytes at %d", off, start)}
	}
	n, err := io.ReadFull(body, p)
	if err != nil {
		return n, &bodyError{err: fmt.Errorf("reading %d bytes at %d: %w", len(p), off, err)}
	}
	return n, nil
}

// rangeStart reads the first byte position of "bytes START-END/TOTAL".
func rangeStart(cr string) (int64, bool) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return 0, false
	}
	start, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(start, 10, 64)
	return n, err == nil
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	d = min(d, 2*time.Second)
	return d/2 + rand.N(d/2+1)
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// NewSequential returns a reader of the n bytes at off (to the end if n
// is negative) that keeps Options.ReadAhead ranged GETs of
// Options.ReadChunk bytes in flight ahead of the consumer, so a restore
// reading a delta file front to back waits for the network only when it
// outruns it. Memory is ReadAhead × ReadChunk. Close stops the GETs in
// flight; a sequential reader is not safe for concurrent use.
func (r *Reader) NewSequential(off, n int64) io.ReadCloser {
	end := r.info.Size
	if n >= 0 && off+n < end {
		end = off + n
	}
	off = min(max(off, 0), end)
	ctx, cancel := context.WithCancel(r.ctx)
	q := &seqReader{r: r, ctx: ctx, cancel: cancel, next: off, end: end,
		free: make(chan []byte, r.s.opts.ReadAhead)}
	for range r.s.opts.ReadAhead {
		q.schedule()
	}
	return q
}

type chunk struct {
	buf  []byte
	n    int
	err  error
	done chan struct{}
}

type seqReader struct {
	r      *Reader
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	next   int64 // offset of the next chunk to schedule
	end    int64
	queue  []*chunk
	free   chan []byte
	cur    *chunk
	pos    int
	err    error
}

func (q *seqReader) schedule() {
	if q.next >= q.end {
		return
	}
	size := int(min(q.r.s.opts.ReadChunk, q.end-q.next))
	var buf []byte
	select {
	case buf = <-q.free:
	default:
		if buf = q.r.s.chunks.get(); buf == nil {
			buf = make([]byte, q.r.s.opts.ReadChunk)
		}
	}
	c := &chunk{buf: buf[:size], done: make(chan struct{})}
	off := q.next
	q.next += int64(size)
	q.queue = append(q.queue, c)
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer close(c.done)
		c.n, c.err = q.r.readAt(q.ctx, c.buf, off)
		if c.err == io.EOF && c.n == len(c.buf) {
			c.err = nil
		}
		if c.err == nil && c.n < len(c.buf) {
			c.err = &Error{Op: "read", Store: q.r.s.loc.String(), Object: q.r.info.Name, Kind: ErrTruncated,
				Err: fmt.Errorf("object ends before offset %d", off+int64(len(c.buf)))}
		}
	}()
}

func (q *seqReader) Read(p []byte) (int, error) {
	if q.err != nil {
		return 0, q.err
	}
	for q.cur == nil || q.pos == q.cur.n {
		if q.cur != nil {
			q.free <- q.cur.buf[:cap(q.cur.buf)]
			q.cur = nil
			q.schedule()
		}
		if len(q.queue) == 0 {
			q.err = io.EOF
			return 0, io.EOF
		}
		c := q.queue[0]
		q.queue = q.queue[1:]
		select {
		case <-c.done:
		case <-q.ctx.Done():
			q.err = q.r.s.op("read", q.r.info.Name, q.ctx.Err())
			return 0, q.err
		}
		if c.err != nil {
			q.err = c.err
			return 0, q.err
		}
		q.cur, q.pos = c, 0
	}
	n := copy(p, q.cur.buf[q.pos:q.cur.n])
	q.pos += n
	return n, nil
}

// Close stops the reads in flight and waits for them.
func (q *seqReader) Close() error {
	q.cancel()
	q.wg.Wait()
	if q.err == nil {
		q.err = errors.New("s3: read after Close")
	}
	for _, c := range q.queue {
		q.r.s.chunks.put(c.buf)
	}
	if q.cur != nil {
		q.r.s.chunks.put(q.cur.buf)
	}
	for {
		select {
		case b := <-q.free:
			q.r.s.chunks.put(b)
			continue
		default:
		}
		break
	}
	q.queue, q.cur = nil, nil
	return nil
}
