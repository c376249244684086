package s3test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
)

// Direction is a direction of traffic through a Proxy.
type Direction int

const (
	// Up is client to server: request headers and upload bodies.
	Up Direction = iota
	// Down is server to client: responses and download bodies.
	Down
)

// Action is what a Fault does to the connection it hits.
type Action int

const (
	// Reset closes both sides at once with a TCP RST, as a crashed
	// middlebox or a server restart does.
	Reset Action = iota
	// Stall stops forwarding on the connection without closing it, as a
	// lost route does; the client must time out by itself.
	Stall
)

// Fault is armed on a Proxy: once After more bytes have passed in Dir
// (counted over all connections from the moment it is armed), the
// connection carrying the next byte gets Action, and so do the next
// connections that carry any byte in Dir, Count in all (Count < 0: every
// one, for as long as the fault stays armed).
type Fault struct {
	Dir    Direction
	After  int64
	Count  int
	Action Action
}

// Proxy forwards TCP connections from its own loopback port to a target
// and breaks them on demand, to test retries and clean failures against
// a real server.
type Proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu     sync.Mutex
	fault  *Fault
	passed int64 // bytes in fault.Dir since armed
	fired  int
	conns  map[*pconn]bool
	stalls chan struct{} // closed to release stalled connections
	wg     sync.WaitGroup
}

type pconn struct {
	client, server net.Conn
	once           sync.Once
}

func (c *pconn) reset() {
	c.once.Do(func() {
		for _, n := range []net.Conn{c.client, c.server} {
			if tc, ok := n.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = n.Close()
		}
	})
}

// NewProxy listens on 127.0.0.1 and forwards to target (host:port) until
// the test ends.
func NewProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{t: t, ln: ln, target: target, conns: map[*pconn]bool{}, stalls: make(chan struct{})}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Arm sets the fault (replacing any other) and restarts its byte count.
func (p *Proxy) Arm(f Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault, p.passed = &f, 0
}

// Disarm removes the fault and lets stalled connections go (they are
// reset: their clients gave up on them).
func (p *Proxy) Disarm() {
	p.mu.Lock()
	p.fault = nil
	close(p.stalls)
	p.stalls = make(chan struct{})
	p.mu.Unlock()
}

// Fired returns how many connections a fault has hit so far, so a test
// can tell that its fault really happened.
func (p *Proxy) Fired() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fired
}

// ResetAll resets every open connection.
func (p *Proxy) ResetAll() {
	p.mu.Lock()
	conns := make([]*pconn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

// Close stops the proxy and resets its connections.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Disarm()
	p.ResetAll()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			if tc, ok := client.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			_ = client.Close()
			continue
		}
		c := &pconn{client: client, server: server}
		p.mu.Lock()
		p.conns[c] = true
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(c, Up, server, client)
		go p.pipe(c, Down, client, server)
	}
}

// pipe copies src to dst in small steps, asking before each whether a
// fault hits this connection.
func (p *Proxy) pipe(c *pconn, dir Direction, dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		c.reset()
		p.mu.Lock()
		delete(p.conns, c)
		p.mu.Unlock()
	}()
	buf := make([]byte, 16<<10)
	hit := false // this connection has been hit in this direction
	for {
		n, err := src.Read(buf)
		if n > 0 {
			ok, stall := p.allow(dir, int64(n), &hit)
			if !ok {
				if stall != nil {
					<-stall
				}
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Half-close: let the other direction finish.
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
					return
				}
			}
			return
		}
	}
}

// allow counts n bytes in dir and says whether they may pass; when they
// may not and the fault stalls, it returns the channel to wait on.
func (p *Proxy) allow(dir Direction, n int64, hit *bool) (bool, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.fault
	if f == nil || f.Dir != dir {
		return true, nil
	}
	if p.passed+n <= f.After && !*hit {
		p.passed += n
		return true, nil
	}
	p.passed += n
	if !*hit {
		if f.Count == 0 {
			return true, nil
		}
		if f.Count > 0 {
			f.Count--
		}
		*hit = true
		p.fired++
	}
	if f.Action == Stall {
		return false, p.stalls
	}
	return false, nil
}

// HTTPProxy is an HTTP reverse proxy in front of a server, for tests that
// make the server answer what real ones answer at bad moments (SlowDown,
// QuotaExceeded, AccessDenied, RequestTimeTooSkewed...). intercept, if
// set, sees each request first and answers it itself by returning true;
// modify, if set, may change each answer of the server. It returns the
// proxy's host:port, to put in a store address.
func HTTPProxy(t testing.TB, target string, intercept func(http.ResponseWriter, *http.Request) bool, modify func(*http.Response) error) string {
	t.Helper()
	u, err := url.Parse("http://" + target)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = modify
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if intercept != nil && intercept(w, r) {
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}

// Answer writes an S3 error answer with its status and code.
func Answer(w http.ResponseWriter, r *http.Request, status int, code, message string) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
	}
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource></Error>`,
		code, message, r.URL.Path)
}
