// Package s3test runs a real S3 server for tests: versitygw with its
// posix back end, on 127.0.0.1 with a free port and a temporary
// directory, and a TCP proxy that breaks connections on purpose.
//
// The versitygw binary is found, in this order, at $THINBACK_VERSITYGW,
// in the cache that scripts/install-versitygw fills
// (${XDG_CACHE_HOME:-$HOME/.cache}/thinback/bin/versitygw-VERSION/versitygw),
// and on $PATH. Without it Start skips the test, unless
// THINBACK_REQUIRE_S3=1 (scripts/test and CI set it), where it fails.
package s3test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Version is the versitygw release the tests are written against; the
// install script builds exactly this one.
const Version = "v1.8.0"

// Root credentials of every test server.
const (
	AccessKey = "thinback-test"
	SecretKey = "thinback-test-secret-key"
)

// DefaultBucket is the bucket Start creates.
const DefaultBucket = "thinback-test"

// Binary returns the path of the versitygw binary, or an error saying
// where it was looked for.
func Binary() (string, error) {
	if p := os.Getenv("THINBACK_VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("THINBACK_VERSITYGW=%s: %w", p, err)
		}
		return p, nil
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache")
		}
	}
	var tried []string
	if cache != "" {
		p := filepath.Join(cache, "thinback", "bin", "versitygw-"+Version, "versitygw")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		tried = append(tried, p)
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p, nil
	}
	tried = append(tried, "versitygw on $PATH")
	return "", fmt.Errorf("versitygw %s not found (looked at $THINBACK_VERSITYGW, %s); run scripts/install-versitygw",
		Version, strings.Join(tried, ", "))
}

// Server is a running versitygw.
type Server struct {
	t      testing.TB
	bin    string
	Dir    string // the posix back end's root: one directory per bucket
	Addr   string // 127.0.0.1:PORT
	Bucket string
	log    string
	CAFile string // the certificate, when Config.TLS
	pool   *x509.CertPool

	keyFile string

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// Config chooses how a server runs.
type Config struct {
	// TLS serves HTTPS with a certificate made for the test, for
	// 127.0.0.1, signed by nobody; CAFile is its PEM file.
	TLS bool
}

// Start runs versitygw for the test, creates DefaultBucket and stops the
// server at cleanup. Without the binary it skips (or fails, under
// THINBACK_REQUIRE_S3=1).
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWith(t, Config{})
}

// StartWith is Start with a Config.
func StartWith(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("THINBACK_REQUIRE_S3") == "1" {
			t.Fatalf("THINBACK_REQUIRE_S3=1 but %v", err)
		}
		t.Skipf("skipping S3 test: %v (set THINBACK_REQUIRE_S3=1 to fail instead)", err)
	}
	dir := t.TempDir()
	s := &Server{t: t, bin: bin, Dir: filepath.Join(dir, "root"), log: filepath.Join(dir, "versitygw.log"), Bucket: DefaultBucket}
	if err := os.Mkdir(s.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if cfg.TLS {
		if err := s.makeCert(dir); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		// Killed rather than stopped: versitygw's graceful stop waits
		// for the clients' idle keep-alive connections, and the
		// directory goes anyway.
		s.Kill()
		if t.Failed() {
			if b, err := os.ReadFile(s.log); err == nil && len(b) > 0 {
				t.Logf("versitygw log:\n%s", tail(b, 4096))
			}
		}
	})
	// A free port can be taken by someone else between our probe and
	// versitygw's bind; then versitygw exits and we try another.
	for try := 0; ; try++ {
		addr, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		s.Addr = addr
		err = s.start()
		if err == nil {
			break
		}
		if try == 4 {
			t.Fatalf("versitygw does not start: %v", err)
		}
	}
	s.MakeBucket(DefaultBucket)
	return s
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

func (s *Server) start() error {
	logf, err := os.OpenFile(s.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := []string{"--port", s.Addr, "--keep-alive", "--quiet"}
	if s.CAFile != "" {
		args = append(args, "--cert", s.CAFile, "--key", s.keyFile)
	}
	cmd := exec.Command(s.bin, append(args, "posix", s.Dir)...)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exit := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exit) }()
	s.mu.Lock()
	s.cmd, s.exit = cmd, exit
	s.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exit:
			return fmt.Errorf("versitygw exited at start (%v); log %s", cmd.ProcessState, s.log)
		default:
		}
		if s.answers() {
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("versitygw does not answer on %s after 30s", s.Addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answers reports whether an S3 server answers on Addr: any response
// with versitygw's Server header, even an access denied.
func (s *Server) answers() bool {
	c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool}}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(s.scheme() + "://" + s.Addr + "/")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.Header.Get("Server") != ""
}

// Location returns the store address of prefix in the default bucket.
func (s *Server) Location(prefix string) string {
	loc := "s3:" + s.scheme() + "://" + s.Addr + "/" + s.Bucket
	if prefix != "" {
		loc += "/" + prefix
	}
	return loc
}

// Client returns a minio-go client with the root credentials, for tests
// that look at the bucket behind the store's back.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: s.pool}
	c, err := minio.New(s.Addr, &minio.Options{
		Creds:        credentials.NewStaticV4(AccessKey, SecretKey, ""),
		Secure:       s.CAFile != "",
		Transport:    tr,
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
	if err != nil {
		s.t.Fatal(err)
	}
	return c
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(name string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		s.t.Fatalf("create bucket %s: %v", name, err)
	}
}

// Kill stops the server with SIGKILL, as a crash would, and waits for it.
func (s *Server) Kill() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exit
}

// Restart starts the server again on the same port and directory after
// Kill: what a crash and a restart look like to a client.
func (s *Server) Restart() {
	s.t.Helper()
	s.Kill()
	var err error
	for range 50 {
		// The port may take a moment to be free again.
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("restart versitygw on %s: %v", s.Addr, err)
}

// Stop ends the server with SIGTERM, then SIGKILL after 10 s.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exit := s.cmd, s.exit
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exit:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exit
	}
}

// Objects lists every key in the bucket (all prefixes), for checks that
// nothing unexpected is visible.
func (s *Server) Objects(bucket string) []string {
	s.t.Helper()
	var keys []string
	for oi := range s.Client().ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			s.t.Fatalf("list %s: %v", bucket, oi.Err)
		}
		keys = append(keys, oi.Key)
	}
	return keys
}

// Uploads lists the pending multipart uploads of the bucket as
// "key uploadID".
func (s *Server) Uploads(bucket string) []string {
	s.t.Helper()
	var ups []string
	for u := range s.Client().ListIncompleteUploads(context.Background(), bucket, "", true) {
		if u.Err != nil {
			s.t.Fatalf("list uploads of %s: %v", bucket, u.Err)
		}
		ups = append(ups, u.Key+" "+u.UploadID)
	}
	return ups
}

func tail(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	b = b[len(b)-n:]
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[i+1:]
	}
	return b
}

func (s *Server) scheme() string {
	if s.CAFile != "" {
		return "https"
	}
	return "http"
}

// makeCert writes a self-signed certificate for 127.0.0.1 and its key.
func (s *Server) makeCert(dir string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "thinback test S3 server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	s.CAFile, s.keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(s.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	s.pool = x509.NewCertPool()
	s.pool.AddCert(cert)
	return os.WriteFile(s.keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
}
