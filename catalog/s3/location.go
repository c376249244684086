package s3

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Location is where a store lives: an endpoint, a bucket and a prefix
// inside it. Its text form follows restic's:
//
//	s3:https://HOST[:PORT]/BUCKET[/PREFIX]
//	s3:http://HOST[:PORT]/BUCKET[/PREFIX]     (plain HTTP, for loopback tests)
//	s3:HOST[:PORT]/BUCKET[/PREFIX]            (https)
type Location struct {
	Insecure bool   // plain HTTP instead of HTTPS
	Host     string // host or host:port, as given
	Bucket   string
	Prefix   string // no leading or trailing slash; "" for the bucket's root
}

// ErrLocation: a store address that does not parse. See ParseLocation.
var ErrLocation = errors.New("invalid s3 store address")

// IsLocation reports whether s is meant as an S3 store address (it starts
// with "s3:"), so a caller can tell it from a directory name before
// parsing it.
func IsLocation(s string) bool { return strings.HasPrefix(s, "s3:") }

// ParseLocation parses an s3: store address. Errors match ErrLocation and
// say what is wrong.
func ParseLocation(s string) (Location, error) {
	bad := func(format string, a ...any) (Location, error) {
		return Location{}, fmt.Errorf("%w %q: %s (the form is s3:https://HOST[:PORT]/BUCKET[/PREFIX])",
			ErrLocation, s, fmt.Sprintf(format, a...))
	}
	rest, ok := strings.CutPrefix(s, "s3:")
	if !ok {
		return bad("it does not start with s3:")
	}
	var loc Location
	switch {
	case strings.HasPrefix(rest, "https://"):
		rest = rest[len("https://"):]
	case strings.HasPrefix(rest, "http://"):
		rest = rest[len("http://"):]
		loc.Insecure = true
	case strings.HasPrefix(rest, "//"):
		return bad("use s3:https://HOST/BUCKET, not s3://")
	case strings.Contains(rest, "://"):
		return bad("only http and https are supported")
	}
	if !utf8.ValidString(rest) {
		return bad("not valid UTF-8")
	}
	if strings.ContainsAny(rest, "?#") {
		return bad("query strings and fragments are not allowed")
	}
	for _, r := range rest {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return bad("control characters and backslashes are not allowed")
		}
	}
	host, path, _ := strings.Cut(rest, "/")
	if host == "" {
		return bad("no host")
	}
	if strings.Contains(host, "@") {
		return bad("credentials do not go in the address; use AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	if err := validHost(host); err != nil {
		return bad("%v", err)
	}
	loc.Host = host
	bucket, prefix, _ := strings.Cut(path, "/")
	if bucket == "" {
		return bad("no bucket")
	}
	if err := validBucket(bucket); err != nil {
		return bad("%v", err)
	}
	loc.Bucket = bucket
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		for seg := range strings.SplitSeq(prefix, "/") {
			if seg == "" || seg == "." || seg == ".." {
				return bad("the prefix has an empty, . or .. segment")
			}
		}
	}
	loc.Prefix = prefix
	return loc, nil
}

// String returns the address in the form ParseLocation reads.
func (l Location) String() string {
	scheme := "https"
	if l.Insecure {
		scheme = "http"
	}
	s := "s3:" + scheme + "://" + l.Host + "/" + l.Bucket
	if l.Prefix != "" {
		s += "/" + l.Prefix
	}
	return s
}

func validHost(host string) error {
	h, port := host, ""
	if strings.HasPrefix(host, "[") {
		end := strings.Index(host, "]")
		if end < 0 {
			return errors.New("unclosed [ in the host")
		}
		h = host[1:end]
		if after := host[end+1:]; after != "" {
			p, ok := strings.CutPrefix(after, ":")
			if !ok || p == "" {
				return fmt.Errorf("junk or empty port after ] in %q", host)
			}
			port = p
		}
		if ip := net.ParseIP(h); ip == nil || !strings.Contains(h, ":") {
			return fmt.Errorf("%q is not an IPv6 address", h)
		}
	} else {
		if i := strings.LastIndex(host, ":"); i >= 0 {
			h, port = host[:i], host[i+1:]
			if port == "" {
				return errors.New("empty port")
			}
		}
		if h == "" {
			return errors.New("no host before the port")
		}
		for _, r := range h {
			if !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
				return fmt.Errorf("bad character %q in host %q", r, h)
			}
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
			return fmt.Errorf("port %q is not a number from 1 to 65535", port)
		}
	}
	return nil
}

// validBucket checks the rules every S3 implementation shares (3 to 63
// characters of lower-case letters, digits, dots and hyphens), plus
// underscores and capitals that some servers allow in path-style names.
func validBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return fmt.Errorf("bucket name %q must have 3 to 63 characters", b)
	}
	for _, r := range b {
		if !(r == '.' || r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return fmt.Errorf("bad character %q in bucket name %q", r, b)
		}
	}
	if strings.Contains(b, "..") {
		return fmt.Errorf("bucket name %q has two dots in a row", b)
	}
	return nil
}

// validName checks an object name given to a Store method: relative to
// the prefix, slash-separated, with no empty, . or .. segment and no
// control characters, so every name maps to exactly one key and no key
// escapes the prefix.
func validName(name string) error {
	if name == "" || len(name) > 900 {
		return fmt.Errorf("%w %q: empty or longer than 900 bytes", ErrInvalidName, name)
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w %q: empty, . or .. segment", ErrInvalidName, name)
		}
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f || r == '\\' || r == 0xfffd {
			return fmt.Errorf("%w %q: control character, backslash or invalid UTF-8", ErrInvalidName, name)
		}
	}
	return nil
}
