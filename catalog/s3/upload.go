package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
)

// abortTimeout bounds the cleanup requests of a failed upload, which run
// even when the caller's context is done.
const abortTimeout = time.Minute

// Upload writes one object of unknown size as it is produced: an
// io.Writer whose bytes go out as a multipart upload, Options.PartSize
// bytes a part, Options.Uploads parts at a time. Memory is bounded by
// (Uploads+1) × PartSize whatever the object's size: Write blocks while
// every buffer is in flight.
//
// Nothing is visible under the name until Complete returns nil. An object
// smaller than one part goes out as a single PUT at Complete. Every
// Upload must end with Complete or Abort; Abort after Complete does
// nothing, so `defer u.Abort()` is the idiom. Errors are sticky: after a
// failure every call returns the first error. An Upload is not safe for
// concurrent use.
type Upload struct {
	s      *Store
	name   string
	key    string
	parent context.Context
	ctx    context.Context
	cancel context.CancelCauseFunc

	buf  []byte      // the part being filled; len is what it holds
	free chan []byte // buffers whose part went out
	nbuf int         // buffers allocated so far
	max  int         // Uploads + 1

	uploadID string
	next     int // number of the next part
	size     int64
	wg       sync.WaitGroup

	mu    sync.Mutex
	parts []minio.CompletePart // by part number - 1
	err   error

	done bool
}

// NewUpload starts an upload of the object name. No request is made
// until the first part is full (or Complete).
func (s *Store) NewUpload(ctx context.Context, name string) (*Upload, error) {
	if err := validName(name); err != nil {
		return nil, s.op("upload", name, err)
	}
	uctx, cancel := context.WithCancelCause(ctx)
	return &Upload{
		s: s, name: name, key: s.key(name),
		parent: ctx, ctx: uctx, cancel: cancel,
		max:  s.opts.Uploads + 1,
		free: make(chan []byte, s.opts.Uploads+1),
		next: 1,
	}, nil
}

// Name returns the object's name.
func (u *Upload) Name() string { return u.name }

// Size returns the number of bytes written so far.
func (u *Upload) Size() int64 { return u.size }

// Buffers returns how many part buffers the upload has allocated, at most
// Options.Uploads+1: what its memory use is made of.
func (u *Upload) Buffers() int { return u.nbuf }

func (u *Upload) fail(err error) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err == nil {
		u.err = err
		u.cancel(err)
	}
	return u.err
}

func (u *Upload) sticky() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return u.err
	}
	if u.done {
		return &Error{Op: "upload", Store: u.s.loc.String(), Object: u.name, Err: errors.New("write after Complete or Abort")}
	}
	if cause := context.Cause(u.ctx); cause != nil {
		u.err = u.s.op("upload", u.name, cause)
		return u.err
	}
	return nil
}

// Write buffers p and sends every part that fills up.
func (u *Upload) Write(p []byte) (int, error) {
	if err := u.sticky(); err != nil {
		return 0, err
	}
	partSize := int(u.s.opts.PartSize)
	written := 0
	for len(p) > 0 {
		if u.size+int64(len(p)) > maxParts*u.s.opts.PartSize {
			return written, u.fail(&Error{Op: "upload", Store: u.s.loc.String(), Object: u.name, Kind: ErrTooLarge,
				Err: fmt.Errorf("more than %d parts of %d bytes", maxParts, partSize)})
		}
		if u.buf == nil {
			b, err := u.getBuf()
			if err != nil {
				return written, err
			}
			u.buf = b
		}
		room := partSize - len(u.buf)
		n := min(room, len(p))
		if cap(u.buf)-len(u.buf) < n {
			// The first buffer grows as it fills, so a small object
			// costs what it holds, not a whole part; past 1 MiB it
			// jumps to a whole part, leaving little garbage behind.
			c := max(2*cap(u.buf), len(u.buf)+n)
			if c > 1<<20 {
				c = partSize
			}
			grown := make([]byte, len(u.buf), min(partSize, c))
			copy(grown, u.buf)
			u.buf = grown
		}
		u.buf = append(u.buf, p[:n]...)
		p = p[n:]
		written += n
		u.size += int64(n)
		if len(u.buf) == partSize {
			if err := u.flush(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// getBuf returns a free part buffer, allocating one while fewer than max
// exist, else waiting for a part in flight to finish.
func (u *Upload) getBuf() ([]byte, error) {
	select {
	case b := <-u.free:
		return b[:0], nil
	default:
	}
	if u.nbuf < u.max {
		u.nbuf++
		if b := u.s.parts.get(); b != nil {
			return b[:0], nil
		}
		if u.nbuf == 1 {
			return make([]byte, 0, min(int(u.s.opts.PartSize), 64<<10)), nil
		}
		return make([]byte, 0, u.s.opts.PartSize), nil
	}
	select {
	case b := <-u.free:
		return b[:0], nil
	case <-u.ctx.Done():
		if err := u.sticky(); err != nil {
			return nil, err
		}
		return nil, u.fail(u.s.op("upload", u.name, context.Cause(u.ctx)))
	}
}

// flush sends the buffer as the next part, starting the multipart upload
// first if this is the first part.
func (u *Upload) flush() error {
	if u.uploadID == "" {
		id, err := u.s.core.NewMultipartUpload(u.ctx, u.s.loc.Bucket, u.key, minio.PutObjectOptions{})
		if err != nil {
			return u.fail(u.s.op("upload", u.name, err))
		}
		u.uploadID = id
	}
	num, buf := u.next, u.buf
	u.next++
	u.buf = nil
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		part, err := u.s.core.PutObjectPart(u.ctx, u.s.loc.Bucket, u.key, u.uploadID, num,
			bytes.NewReader(buf), int64(len(buf)), minio.PutObjectPartOptions{})
		if err != nil {
			u.fail(u.s.op("upload part "+fmt.Sprint(num)+" of", u.name, err))
			return
		}
		u.mu.Lock()
		for len(u.parts) < num {
			u.parts = append(u.parts, minio.CompletePart{})
		}
		u.parts[num-1] = minio.CompletePart{PartNumber: num, ETag: part.ETag}
		u.mu.Unlock()
		u.free <- buf
	}()
	return nil
}

// Complete sends what is left, waits for every part and makes the object
// appear. On any failure it aborts the upload, so nothing is left behind
// but what Abort reports.
func (u *Upload) Complete() (ObjectInfo, error) {
	if err := u.sticky(); err != nil {
		return ObjectInfo{}, errors.Join(err, u.Abort())
	}
	if u.uploadID == "" {
		// Smaller than one part: one PUT, which is atomic on its own.
		info, err := u.s.put(u.ctx, "upload", u.name, u.buf, minio.PutObjectOptions{})
		if err != nil {
			u.fail(err)
			return ObjectInfo{}, errors.Join(err, u.Abort())
		}
		u.finish()
		return info, nil
	}
	if len(u.buf) > 0 {
		if err := u.flush(); err != nil {
			return ObjectInfo{}, errors.Join(err, u.Abort())
		}
	}
	u.wg.Wait()
	if err := u.sticky(); err != nil {
		return ObjectInfo{}, errors.Join(err, u.Abort())
	}
	u.mu.Lock()
	parts := append([]minio.CompletePart(nil), u.parts...)
	u.mu.Unlock()
	var ui minio.UploadInfo
	err := retryDirRace(u.ctx, func() (err error) {
		ui, err = u.s.core.CompleteMultipartUpload(u.ctx, u.s.loc.Bucket, u.key, u.uploadID, parts, minio.PutObjectOptions{})
		return err
	})
	if err != nil {
		// minio-go retries a Complete whose answer was lost; the retry
		// then finds the upload gone. If the object is there with the
		// ETag these parts make, the first attempt did it.
		if errors.Is(u.s.op("upload", u.name, err), ErrNotFound) {
			if info, serr := u.s.Stat(u.ctx, u.name); serr == nil && info.Size == u.size && info.ETag == multipartETag(parts) {
				u.finish()
				return info, nil
			}
		}
		err = u.fail(u.s.op("complete upload of", u.name, err))
		return ObjectInfo{}, errors.Join(err, u.Abort())
	}
	u.finish()
	return ObjectInfo{Name: u.name, Size: u.size, ETag: strings.Trim(ui.ETag, `"`), Modified: ui.LastModified}, nil
}

func (u *Upload) finish() {
	u.mu.Lock()
	u.done = true
	u.mu.Unlock()
	u.cancel(nil)
	u.buf = nil
	u.drain()
}

// drain hands the part buffers to the Store's free list, so the next
// upload (a prune writes several) reuses them instead of making garbage
// that would double the heap before the collector runs.
func (u *Upload) drain() {
	for {
		select {
		case b := <-u.free:
			u.s.parts.put(b)
		default:
			return
		}
	}
}

// Abort stops the parts in flight and aborts the multipart upload on the
// server, so no part stays stored (and billed). It runs with its own
// timeout even when the Upload's context is done. An error means the
// server still holds the parts: AbortUploads removes them later.
func (u *Upload) Abort() error {
	u.mu.Lock()
	if u.done {
		u.mu.Unlock()
		return nil
	}
	u.done = true
	if u.err == nil {
		u.err = &Error{Op: "upload", Store: u.s.loc.String(), Object: u.name, Err: errors.New("aborted")}
	}
	u.mu.Unlock()
	u.cancel(errors.New("upload aborted"))
	u.wg.Wait()
	u.buf = nil
	u.drain()
	if u.uploadID == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.parent), abortTimeout)
	defer cancel()
	err := u.s.core.AbortMultipartUpload(ctx, u.s.loc.Bucket, u.key, u.uploadID)
	if err != nil && errors.Is(u.s.op("abort", u.name, err), ErrNotFound) {
		return nil
	}
	if err != nil {
		return u.s.op("abort upload "+u.uploadID+" of", u.name, err)
	}
	return nil
}

// multipartETag is the ETag S3 gives a multipart object: the MD5 of the
// parts' binary MD5s, a dash and the part count. Servers that use other
// ETags simply never match, and Complete reports its error.
func multipartETag(parts []minio.CompletePart) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(strings.Trim(p.ETag, `"`))
		if err != nil {
			return ""
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x-%d", h.Sum(nil), len(parts))
}
