package s3

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"

	"github.com/minio/minio-go/v7"
)

// Errors returned by a Store. Callers compare with errors.Is; the
// concrete type is *Error (or *LockedError for ErrLocked), which names the
// store, the object and what the server said.
var (
	// ErrCredentials: the server rejected the credentials (unknown access
	// key, wrong secret, expired or invalid session token), or none were
	// found.
	ErrCredentials = errors.New("credentials rejected")

	// ErrNoBucket: the bucket does not exist.
	ErrNoBucket = errors.New("bucket does not exist")

	// ErrClockSkew: the server refused the request because this machine's
	// clock differs too much from the server's (RequestTimeTooSkewed).
	ErrClockSkew = errors.New("clock skew too large")

	// ErrDenied: the credentials are valid but not allowed to do this, for
	// example a write to a bucket that is read-only for them.
	ErrDenied = errors.New("access denied")

	// ErrQuota: the bucket or account is full (QuotaExceeded and its
	// vendor spellings, 507 Insufficient Storage).
	ErrQuota = errors.New("storage quota exceeded")

	// ErrNotFound: the object or multipart upload does not exist.
	ErrNotFound = errors.New("object not found")

	// ErrExist: a conditional create found the object already there (a
	// lock or record object written by someone else, or by an earlier
	// attempt of the same request).
	ErrExist = errors.New("object already exists")

	// ErrChanged: a conditional request found the object replaced since it
	// was first read (its ETag changed).
	ErrChanged = errors.New("object changed on the server")

	// ErrNoConditional: the server ignores If-None-Match on PUT, so it
	// cannot make a create exclusive; locks and commit records would not
	// be safe on it.
	ErrNoConditional = errors.New("server does not support conditional writes")

	// ErrTruncated: the server sent fewer bytes than the object or range
	// holds, on every retry.
	ErrTruncated = errors.New("object data truncated")

	// ErrTooLarge: an object exceeds what one multipart upload can hold
	// (10 000 parts of Options.PartSize), or a small object read with Get
	// exceeds its limit.
	ErrTooLarge = errors.New("object too large")

	// ErrUnavailable: the server kept answering 5xx or SlowDown, or could
	// not be reached, through every retry.
	ErrUnavailable = errors.New("store unavailable")

	// ErrCertificate: the server's TLS certificate does not verify
	// (unknown authority, wrong host name, expired).
	ErrCertificate = errors.New("server certificate not trusted")

	// ErrInvalidName: an object name that thinback must never use (empty,
	// absolute, with . or .. segments, or control characters).
	ErrInvalidName = errors.New("invalid object name")

	// ErrLocked: a lock object is held by someone else. See LockedError.
	ErrLocked = errors.New("locked")

	// ErrStaleLock: the lock object found was not renewed within its time
	// to live, by the server's clock: its holder stopped renewing it, most
	// likely because it died. ErrLocked holds too; only an explicit
	// BreakLock removes it.
	ErrStaleLock = errors.New("stale lock")

	// ErrNotHolder: a Renew or Release of a lock that is no longer this
	// holder's (it was broken, and maybe taken by another).
	ErrNotHolder = errors.New("lock not held")
)

// Error is the error of one operation on a store. Kind is the sentinel it
// matches (nil when none fits); Err is what minio-go or the network said.
type Error struct {
	Op     string // "put", "create", "get", "stat", "list", "delete", "upload", "abort", ...
	Store  string // the store's location, as given to Open
	Object string // the object name under the store's prefix; "" for the bucket
	Code   string // the S3 error code, if the server sent one
	Kind   error
	Err    error
}

func (e *Error) Error() string {
	what := e.Op
	if e.Object != "" {
		what += " " + e.Object
	}
	msg := fmt.Sprintf("store %s: %s: ", e.Store, what)
	if e.Kind != nil {
		msg += e.Kind.Error()
		if hint := hint(e.Kind); hint != "" {
			msg += " (" + hint + ")"
		}
		if e.Err != nil {
			msg += ": "
		}
	}
	if e.Err != nil {
		msg += e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, e.Kind) true.
func (e *Error) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// hint says what the user can do about an error of this kind.
func hint(kind error) string {
	switch kind {
	case ErrCredentials:
		return "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and the shared credentials file"
	case ErrNoBucket:
		return "create the bucket first, or fix its name in the store address"
	case ErrClockSkew:
		return "set this machine's clock right, e.g. with NTP"
	case ErrDenied:
		return "the credentials may be read-only for this bucket or prefix"
	case ErrQuota:
		return "free space in the bucket or raise its quota"
	case ErrNoConditional:
		return "thinback needs If-None-Match on PUT to lock volumes and commit records safely; use a server that supports it"
	case ErrUnavailable:
		return "the server is overloaded or unreachable; try again later"
	case ErrCertificate:
		return "give the CA certificate of a private CA as a CA file, or check the host name in the store address"
	}
	return ""
}

// op builds the error of an operation from what minio-go returned. It
// returns nil for nil.
func (s *Store) op(op, name string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	e = &Error{Op: op, Store: s.loc.String(), Object: name, Err: err}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return e
	}
	if isCertificate(err) {
		e.Kind = ErrCertificate
		return e
	}
	resp := minio.ToErrorResponse(err)
	e.Code = resp.Code
	e.Kind = classify(resp)
	if e.Kind == nil && resp.Code == "" && resp.StatusCode == 0 && isNetwork(err) {
		// minio-go retried the request Options.MaxRetries times already.
		e.Kind = ErrUnavailable
	}
	return e
}

// classify maps an S3 error response to a sentinel. Servers disagree on
// codes, so both the code and the status count.
func classify(r minio.ErrorResponse) error {
	switch r.Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken",
		"InvalidSecurity", "AuthorizationHeaderMalformed", "MissingSecurityHeader", "TokenRefreshRequired",
		"XAdminUserNotFound": // versitygw's answer (404) to an unknown access key
		return ErrCredentials
	case "NoSuchBucket":
		return ErrNoBucket
	case "RequestTimeTooSkewed":
		return ErrClockSkew
	case "AccessDenied", "AllAccessDisabled", "AccountProblem", "InvalidObjectState":
		return ErrDenied
	case "QuotaExceeded", "XMinioAdminBucketQuotaExceeded", "XMinioStorageFull", "StorageFull",
		"InsufficientStorage", "ServiceQuotaExceeded", "NotEnoughSpace":
		return ErrQuota
	case "NoSuchKey", "NoSuchUpload", "NoSuchVersion":
		return ErrNotFound
	case "SlowDown", "SlowDownWrite", "SlowDownRead", "ServiceUnavailable", "InternalError",
		"RequestTimeout", "Throttling", "ThrottlingException", "RequestLimitExceeded":
		return ErrUnavailable
	}
	switch r.StatusCode {
	case http.StatusNotFound:
		return ErrNotFound
	case http.StatusInsufficientStorage:
		return ErrQuota
	case http.StatusTooManyRequests:
		return ErrUnavailable
	}
	if r.StatusCode >= 500 {
		return ErrUnavailable
	}
	return nil
}

// isNetwork tells a transport failure (no HTTP answer at all) from a
// client-side validation error of minio-go, which also has no status.
func isNetwork(err error) bool {
	var ue interface{ Timeout() bool }
	if errors.As(err, &ue) {
		return true
	}
	var ne interface{ Temporary() bool }
	return errors.As(err, &ne)
}

func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

func isCertificate(err error) bool {
	var (
		ua x509.UnknownAuthorityError
		he x509.HostnameError
		ci x509.CertificateInvalidError
		cv *tls.CertificateVerificationError
	)
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &cv)
}
