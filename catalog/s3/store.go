package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Lookup says how requests name the bucket.
type Lookup int

const (
	// LookupAuto lets minio-go choose: virtual-host style for Amazon and
	// for names it knows support it, path style otherwise.
	LookupAuto Lookup = iota
	// LookupDNS is virtual-host style: https://BUCKET.HOST/KEY.
	LookupDNS
	// LookupPath is path style: https://HOST/BUCKET/KEY. MinIO, Ceph RGW,
	// Garage, SeaweedFS and versitygw all accept it.
	LookupPath
)

// ParseLookup reads the spellings restic uses for its s3.bucket-lookup
// option: "auto", "dns" (or "virtual-host"), "path".
func ParseLookup(s string) (Lookup, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return LookupAuto, nil
	case "dns", "virtual-host", "virtual":
		return LookupDNS, nil
	case "path":
		return LookupPath, nil
	}
	return 0, fmt.Errorf("s3: bucket lookup %q: use auto, dns or path", s)
}

// Options tune a Store. The zero value works: credentials and region come
// from the environment, TLS is verified against the system's roots.
type Options struct {
	// Credentials. When AccessKey is empty they come, in this order, from
	// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then
	// from the shared credentials file (CredentialsFile, else
	// AWS_SHARED_CREDENTIALS_FILE, else ~/.aws/credentials and
	// ~/.aws/config) under Profile (else AWS_PROFILE, else "default").
	AccessKey, SecretKey, SessionToken string
	Profile, CredentialsFile           string

	// Region; empty means AWS_DEFAULT_REGION, then AWS_REGION, then ask the
	// server (GetBucketLocation), as restic does.
	Region string

	Lookup Lookup

	// CAFile is a PEM file of certificates to trust in addition to the
	// system's. InsecureTLS skips certificate verification altogether; it
	// is never implied by anything else.
	CAFile      string
	InsecureTLS bool

	// PartSize is the size of one part of a streaming upload (default 16
	// MiB, at least 5 MiB). Uploads is how many parts are sent at once
	// (default 2: two parts in flight cover the bandwidth-delay product
	// of a 1 Gbit/s link with 100 ms of round trip). An Upload holds at
	// most Uploads+1 part buffers, so 48 MiB by default; one object holds
	// at most 10 000 parts, so 156 GiB at the default part size.
	PartSize int64
	Uploads  int

	// ReadChunk is the size of one ranged GET of a sequential reader
	// (default 8 MiB) and ReadAhead how many it keeps in flight (default
	// 4).
	ReadChunk int64
	ReadAhead int

	// MaxRetries is how many times one request is tried (default 6).
	// minio-go retries transport errors, 5xx and SlowDown with exponential
	// backoff and jitter; a Reader resumes a body cut mid-way the same
	// number of times.
	MaxRetries int

	// StallTimeout is how long a connection may move no byte in either
	// direction before it is dropped and the request retried (default 2
	// minutes). It catches servers and middleboxes that stop answering
	// without closing the connection.
	StallTimeout time.Duration

	// ListPageSize is the number of keys asked for per list request
	// (default 1000, the S3 maximum).
	ListPageSize int
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.PartSize == 0 {
		r.PartSize = 16 << 20
	}
	if r.Uploads <= 0 {
		r.Uploads = 2
	}
	if r.ReadChunk <= 0 {
		r.ReadChunk = 8 << 20
	}
	if r.ReadAhead <= 0 {
		r.ReadAhead = 4
	}
	if r.MaxRetries <= 0 {
		r.MaxRetries = 6
	}
	if r.StallTimeout <= 0 {
		r.StallTimeout = 2 * time.Minute
	}
	if r.ListPageSize <= 0 || r.ListPageSize > 1000 {
		r.ListPageSize = 1000
	}
	if r.Region == "" {
		r.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if r.Region == "" {
		r.Region = os.Getenv("AWS_REGION")
	}
	return r
}

// Limits of S3 multipart uploads that every implementation shares.
const (
	minPartSize = 5 << 20
	maxPartSize = 5 << 30
	maxParts    = 10000
)

// Store is a prefix in a bucket, reached through one minio-go client. Its
// methods are safe for concurrent use.
type Store struct {
	loc  Location
	opts Options
	mc   *minio.Client
	core minio.Core

	parts  *bufList // part buffers of finished uploads, see Upload.drain
	chunks *bufList // read-ahead buffers of closed sequential readers

	condMu sync.Mutex
	cond   error // result of the conditional-write probe; nil until it succeeds
	probed bool
}

// Open connects to the store at loc and checks that the bucket exists
// and the credentials are accepted (one HEAD of the bucket). Errors are
// *Error matching ErrCredentials, ErrNoBucket, ErrClockSkew, ErrDenied or
// ErrUnavailable.
func Open(ctx context.Context, loc Location, o *Options) (*Store, error) {
	s, err := newStore(loc, o)
	if err != nil {
		return nil, err
	}
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// newStore sets up the client without a request.
func newStore(loc Location, o *Options) (*Store, error) {
	opts := o.withDefaults()
	s := &Store{loc: loc, opts: opts,
		parts:  newBufList(opts.Uploads+1, int(opts.PartSize)),
		chunks: newBufList(opts.ReadAhead, int(opts.ReadChunk))}
	if opts.PartSize < minPartSize || opts.PartSize > maxPartSize {
		return nil, &Error{Op: "open", Store: loc.String(),
			Err: fmt.Errorf("part size %d is outside S3's limits of %d to %d bytes", opts.PartSize, minPartSize, maxPartSize)}
	}
	creds, err := resolveCredentials(opts)
	if err != nil {
		return nil, &Error{Op: "open", Store: loc.String(), Kind: ErrCredentials, Err: err}
	}
	tr, err := s.transport()
	if err != nil {
		return nil, &Error{Op: "open", Store: loc.String(), Err: err}
	}
	lookup := minio.BucketLookupAuto
	switch opts.Lookup {
	case LookupDNS:
		lookup = minio.BucketLookupDNS
	case LookupPath:
		lookup = minio.BucketLookupPath
	}
	mc, err := minio.New(loc.Host, &minio.Options{
		Creds:        creds,
		Secure:       !loc.Insecure,
		Transport:    certFailFast{tr},
		Region:       opts.Region,
		BucketLookup: lookup,
		MaxRetries:   opts.MaxRetries,
	})
	if err != nil {
		return nil, &Error{Op: "open", Store: loc.String(), Err: err}
	}
	s.mc = mc
	s.core = minio.Core{Client: mc}
	return s, nil
}

// check makes sure the bucket exists and the credentials work.
func (s *Store) check(ctx context.Context) error {
	loc := s.loc
	ok, err := s.mc.BucketExists(ctx, loc.Bucket)
	if err != nil {
		err = s.op("open", "", err)
		var e *Error
		// HEAD has no body, so minio-go only sees the status: a 403 on
		// HEAD is wrong credentials as often as a denied bucket.
		// ListObjects with one key tells them apart.
		if errors.As(err, &e) && (e.Kind == nil || e.Kind == ErrDenied) {
			if lerr := s.probeList(ctx); lerr != nil {
				return lerr
			}
		}
		return err
	}
	if !ok {
		// HEAD answers carry no error code, and servers differ in the
		// status they give unknown keys (versitygw: 404). A listing has
		// a body that says which it is.
		if lerr := s.probeList(ctx); lerr != nil {
			return lerr
		}
		return &Error{Op: "open", Store: loc.String(), Kind: ErrNoBucket, Code: "NoSuchBucket",
			Err: fmt.Errorf("bucket %q not found at %s", loc.Bucket, loc.Host)}
	}
	return nil
}

// probeList lists at most one key under the prefix, to get an error with
// a body (and so a code) where HEAD gave only a status.
func (s *Store) probeList(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	obj, ok := <-s.mc.ListObjects(ctx, s.loc.Bucket, minio.ListObjectsOptions{Prefix: s.key(""), MaxKeys: 1})
	if ok && obj.Err != nil {
		return s.op("open", "", obj.Err)
	}
	return nil
}

// Location returns where the store is.
func (s *Store) Location() Location { return s.loc }

// String returns the store's address.
func (s *Store) String() string { return s.loc.String() }

// key maps a name relative to the prefix to the bucket's key. key("") is
// the prefix itself, ending in a slash (or "" at the bucket's root).
func (s *Store) key(name string) string {
	if s.loc.Prefix == "" {
		return name
	}
	return s.loc.Prefix + "/" + name
}

// name maps a key back to a name; ok is false for keys outside the prefix.
func (s *Store) name(key string) (string, bool) {
	if s.loc.Prefix == "" {
		return key, key != ""
	}
	n, ok := strings.CutPrefix(key, s.loc.Prefix+"/")
	return n, ok && n != ""
}

// resolveCredentials picks the first source that has a key, and says
// clearly when none has one rather than sending anonymous requests that
// would fail later with a puzzling AccessDenied. The EC2/ECS metadata
// service is deliberately not asked: it lives on a link-local address
// that a backup tool should only talk to when told.
func resolveCredentials(o Options) (*credentials.Credentials, error) {
	if o.AccessKey != "" || o.SecretKey != "" {
		if o.AccessKey == "" || o.SecretKey == "" {
			return nil, errors.New("an access key needs both its id and its secret")
		}
		return credentials.NewStaticV4(o.AccessKey, o.SecretKey, o.SessionToken), nil
	}
	env := &credentials.EnvAWS{}
	if v, _ := env.Retrieve(); v.AccessKeyID != "" || v.SecretAccessKey != "" {
		if v.AccessKeyID == "" || v.SecretAccessKey == "" {
			return nil, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must both be set")
		}
		return credentials.New(env), nil
	}
	file := &credentials.FileAWSCredentials{Filename: o.CredentialsFile, Profile: o.Profile}
	v, err := file.RetrieveWithCredContext(&credentials.CredContext{Client: http.DefaultClient})
	if err == nil && v.AccessKeyID != "" && v.SecretAccessKey != "" {
		return credentials.New(file), nil
	}
	profile := o.Profile
	if profile == "" {
		profile = os.Getenv("AWS_PROFILE")
	}
	where := o.CredentialsFile
	if where == "" {
		where = os.Getenv("AWS_SHARED_CREDENTIALS_FILE")
	}
	if where == "" {
		where = "~/.aws/credentials"
	}
	if profile != "" || o.CredentialsFile != "" {
		// The user asked for a profile or file: its failure is the news.
		if err == nil {
			err = errors.New("no aws_access_key_id and aws_secret_access_key in it")
		}
		return nil, fmt.Errorf("profile %q in %s: %w", cmp(profile, "default"), where, err)
	}
	return nil, fmt.Errorf("no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with a profile in %s", where)
}

func cmp(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// transport is http.DefaultTransport's settings plus our TLS roots and a
// dialer whose connections fail when they stall.
func (s *Store) transport() (*http.Transport, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 2 * (s.opts.Uploads + s.opts.ReadAhead)
	tr.ResponseHeaderTimeout = s.opts.StallTimeout
	// minio-go signs payloads itself; transparent gzip would only cost CPU
	// on already compressed delta files.
	tr.DisableCompression = true
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	stall := s.opts.StallTimeout
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &stallConn{Conn: c, timeout: stall}, nil
	}
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if s.opts.CAFile != "" {
		pem, err := os.ReadFile(s.opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificate in it", s.opts.CAFile)
		}
		tlsConf.RootCAs = pool
	}
	tlsConf.InsecureSkipVerify = s.opts.InsecureTLS
	tr.TLSClientConfig = tlsConf
	return tr, nil
}

// stallConn pushes its deadline forward on every read and write, so a
// connection that moves bytes in either direction lives on, and one that
// moves none for timeout fails with a timeout that minio-go retries. A
// slow link is not a stall: a part uploading at a few KiB/s keeps its
// connection alive.
type stallConn struct {
	net.Conn
	timeout time.Duration
}

func (c *stallConn) Read(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.timeout))
	return c.Conn.Read(p)
}

func (c *stallConn) Write(p []byte) (int, error) {
	_ = c.Conn.SetDeadline(time.Now().Add(c.timeout))
	return c.Conn.Write(p)
}

// bufList keeps up to n buffers of one size for reuse. Unlike a
// sync.Pool it survives garbage collections, so a process that uploads
// one object after another allocates its part buffers once; it holds at
// most n of them while idle.
type bufList struct {
	size int
	c    chan []byte
}

func newBufList(n, size int) *bufList { return &bufList{size: size, c: make(chan []byte, n)} }

// get returns a buffer of the list's size (len 0 up to its full cap) or
// nil if none is free.
func (l *bufList) get() []byte {
	select {
	case b := <-l.c:
		return b
	default:
		return nil
	}
}

// put keeps b if it has the list's size and the list has room.
func (l *bufList) put(b []byte) {
	if cap(b) != l.size {
		return
	}
	select {
	case l.c <- b[:cap(b)]:
	default:
	}
}

// certFailFast hands minio-go an unknown-authority error unwrapped from
// crypto/tls's CertificateVerificationError: minio-go knows not to retry
// the former but not the latter, and a certificate does not get better
// by asking again.
type certFailFast struct{ http.RoundTripper }

func (t certFailFast) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.RoundTripper.RoundTrip(r)
	var ua x509.UnknownAuthorityError
	if err != nil && errors.As(err, &ua) {
		return nil, ua
	}
	return resp, err
}
