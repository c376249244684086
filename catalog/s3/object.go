package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/minio/minio-go/v7"
)

// ObjectInfo describes one object of the store.
type ObjectInfo struct {
	Name     string // relative to the store's prefix
	Size     int64
	ETag     string    // without quotes
	Modified time.Time // Last-Modified, by the server's clock

	// Date is the server's clock when it answered (its Date header), so
	// Modified can be compared with it rather than with this machine's
	// clock; Get sets it, zero if the server sent none.
	Date time.Time
}

func (s *Store) info(oi minio.ObjectInfo) (ObjectInfo, bool) {
	name, ok := s.name(oi.Key)
	return ObjectInfo{Name: name, Size: oi.Size, ETag: oi.ETag, Modified: oi.LastModified}, ok
}

// Put writes a small object whole, replacing any object of that name.
// The object appears complete or not at all. Use an Upload for anything
// that does not fit comfortably in memory.
func (s *Store) Put(ctx context.Context, name string, data []byte) (ObjectInfo, error) {
	return s.put(ctx, "put", name, data, minio.PutObjectOptions{})
}

func (s *Store) put(ctx context.Context, op, name string, data []byte, po minio.PutObjectOptions) (ObjectInfo, error) {
	if err := validName(name); err != nil {
		return ObjectInfo{}, s.op(op, name, err)
	}
	sum := md5.Sum(data)
	sha := sha256.Sum256(data)
	// Core.PutObject sends exactly one PUT (no multipart, whatever the
	// size), so a conditional header applies to the object as a whole.
	// Content-MD5 makes the server reject a body damaged on the way, and
	// the payload's SHA-256 is signed. That also keeps minio-go from its
	// streaming signature, which over plain HTTP sends an empty object's
	// final chunk after a body-less request: the server then reads those
	// bytes as the next request on the connection and answers 400 to it.
	po.DisableContentSha256 = true
	var ui minio.UploadInfo
	err := retryDirRace(ctx, func() (err error) {
		ui, err = s.core.PutObject(ctx, s.loc.Bucket, s.key(name), bytes.NewReader(data), int64(len(data)),
			base64.StdEncoding.EncodeToString(sum[:]), hex.EncodeToString(sha[:]), po)
		return err
	})
	if err != nil {
		return ObjectInfo{}, s.putErr(op, name, err)
	}
	return ObjectInfo{Name: name, Size: ui.Size, ETag: ui.ETag, Modified: ui.LastModified}, nil
}

// retryDirRace runs a write again, a few times, when the server says
// "ExistingObjectIsDirectory". Stores on a filesystem (versitygw's posix
// back end) remove a directory when its last object goes and create it
// for the next one; a write racing a delete in the same "directory"
// fails with that code although nothing is wrong. The write is one that
// may be repeated (a whole PUT, conditional or not, or a Complete), and
// a real directory in the way still fails after the last try.
func retryDirRace(ctx context.Context, write func() error) error {
	var err error
	for try := range 4 {
		if err = write(); err == nil || minio.ToErrorResponse(err).Code != "ExistingObjectIsDirectory" {
			return err
		}
		if serr := sleep(ctx, backoff(try)); serr != nil {
			return err
		}
	}
	return err
}

// putErr maps a failed conditional PUT: 412 means the condition failed.
func (s *Store) putErr(op, name string, err error) error {
	r := minio.ToErrorResponse(err)
	if r.StatusCode == http.StatusPreconditionFailed || r.Code == "PreconditionFailed" {
		kind := ErrChanged
		if op == "create" {
			kind = ErrExist
		}
		return &Error{Op: op, Store: s.loc.String(), Object: name, Code: r.Code, Kind: kind, Err: err}
	}
	// AWS answers 409 ConditionalRequestConflict when two conditional
	// writes of one key race; the other one won.
	if r.StatusCode == http.StatusConflict && r.Code == "ConditionalRequestConflict" {
		kind := ErrChanged
		if op == "create" {
			kind = ErrExist
		}
		return &Error{Op: op, Store: s.loc.String(), Object: name, Code: r.Code, Kind: kind, Err: err}
	}
	return s.op(op, name, err)
}

// Create writes a small object only if no object of that name exists,
// with If-None-Match: *. If one exists the error matches ErrExist. The
// first Create of a Store checks that the server honours the condition
// (see ProbeConditional) and fails with ErrNoConditional if it does not.
//
// minio-go retries a PUT whose connection broke, so a Create that
// succeeded on the server but whose answer was lost comes back as
// ErrExist: callers that must know (locks) write a token into the object
// and read it back.
func (s *Store) Create(ctx context.Context, name string, data []byte) (ObjectInfo, error) {
	if err := s.ProbeConditional(ctx); err != nil {
		return ObjectInfo{}, err
	}
	return s.create(ctx, name, data)
}

func (s *Store) create(ctx context.Context, name string, data []byte) (ObjectInfo, error) {
	var po minio.PutObjectOptions
	po.SetMatchETagExcept("*")
	return s.put(ctx, "create", name, data, po)
}

// Replace overwrites an object only if its ETag is still etag (If-Match),
// so a holder that lost its lock cannot overwrite the next holder's. If
// the object changed the error matches ErrChanged; if it is gone,
// ErrNotFound or ErrChanged, depending on the server.
func (s *Store) Replace(ctx context.Context, name, etag string, data []byte) (ObjectInfo, error) {
	var po minio.PutObjectOptions
	po.SetMatchETag(etag)
	return s.put(ctx, "replace", name, data, po)
}

// ProbeName starts the names of the objects ProbeConditional writes and
// removes. Store layouts above this package must not use it.
const ProbeName = ".thinback-probe"

// ProbeConditional checks once per Store that the server refuses a second
// If-None-Match: * create of one object. Servers that ignore the header
// would let two hosts both "take" a lock; this is the only way to know.
// The answer is cached when it is definite; transient errors are not.
func (s *Store) ProbeConditional(ctx context.Context) error {
	s.condMu.Lock()
	defer s.condMu.Unlock()
	if s.probed {
		return s.cond
	}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	// Flat, not in a "directory" of its own: see retryDirRace.
	name := ProbeName + "-" + hex.EncodeToString(tok[:])
	if _, err := s.create(ctx, name, []byte("probe\n")); err != nil {
		return err
	}
	_, err := s.create(ctx, name, []byte("probe again\n"))
	derr := s.Delete(context.WithoutCancel(ctx), name)
	switch {
	case errors.Is(err, ErrExist):
		s.probed, s.cond = true, nil
	case err == nil:
		s.probed = true
		s.cond = &Error{Op: "probe conditional write", Store: s.loc.String(), Object: name, Kind: ErrNoConditional,
			Err: errors.New("a second PUT with If-None-Match: * of the same object succeeded")}
	default:
		return err
	}
	if derr != nil && s.cond == nil {
		return derr
	}
	return s.cond
}

// Get reads a whole small object. Objects larger than limit bytes are
// refused with ErrTooLarge before their body is read, and a body longer
// than announced is cut at limit+1 and refused too, so a damaged or
// hostile store cannot make Get allocate more than limit.
func (s *Store) Get(ctx context.Context, name string, limit int64) ([]byte, ObjectInfo, error) {
	if err := validName(name); err != nil {
		return nil, ObjectInfo{}, s.op("get", name, err)
	}
	body, oi, h, err := s.core.GetObject(ctx, s.loc.Bucket, s.key(name), minio.GetObjectOptions{})
	if err != nil {
		return nil, ObjectInfo{}, s.op("get", name, err)
	}
	defer body.Close()
	info, _ := s.info(oi)
	info.Name = name
	if d, err := http.ParseTime(h.Get("Date")); err == nil {
		info.Date = d
	}
	if oi.Size > limit {
		return nil, info, &Error{Op: "get", Store: s.loc.String(), Object: name, Kind: ErrTooLarge,
			Err: fmt.Errorf("%d bytes, more than the %d expected", oi.Size, limit)}
	}
	var buf bytes.Buffer
	if oi.Size > 0 {
		buf.Grow(int(oi.Size))
	}
	n, err := io.Copy(&buf, io.LimitReader(body, limit+1))
	if err != nil {
		return nil, info, s.op("get", name, err)
	}
	if n > limit {
		return nil, info, &Error{Op: "get", Store: s.loc.String(), Object: name, Kind: ErrTooLarge,
			Err: fmt.Errorf("body longer than %d bytes", limit)}
	}
	if oi.Size >= 0 && n != oi.Size {
		return nil, info, &Error{Op: "get", Store: s.loc.String(), Object: name, Kind: ErrTruncated,
			Err: fmt.Errorf("got %d of %d bytes", n, oi.Size)}
	}
	return buf.Bytes(), info, nil
}

// Stat returns an object's size, ETag and time; ErrNotFound if it does
// not exist.
func (s *Store) Stat(ctx context.Context, name string) (ObjectInfo, error) {
	if err := validName(name); err != nil {
		return ObjectInfo{}, s.op("stat", name, err)
	}
	oi, err := s.mc.StatObject(ctx, s.loc.Bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.op("stat", name, err)
	}
	info, _ := s.info(oi)
	info.Name = name
	return info, nil
}

// Delete removes an object. Deleting one that does not exist is not an
// error (S3 answers 204 either way), so a cleanup can be run again.
func (s *Store) Delete(ctx context.Context, name string) error {
	if err := validName(name); err != nil {
		return s.op("delete", name, err)
	}
	return s.op("delete", name, s.mc.RemoveObject(ctx, s.loc.Bucket, s.key(name), minio.RemoveObjectOptions{}))
}

// List calls fn for every object whose name starts with prefix (relative
// to the store's prefix; "" for all), in key order, page by page
// (Options.ListPageSize keys per request). An error from fn stops the
// listing and is returned as is.
func (s *Store) List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine if fn stops early
	ch := s.mc.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{
		Prefix:    s.key(prefix),
		Recursive: true,
		MaxKeys:   s.opts.ListPageSize,
	})
	for oi := range ch {
		if oi.Err != nil {
			return s.op("list", prefix, oi.Err)
		}
		info, ok := s.info(oi)
		if !ok {
			continue
		}
		if err := fn(info); err != nil {
			return err
		}
	}
	return s.op("list", prefix, ctx.Err())
}
