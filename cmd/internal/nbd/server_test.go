package nbd_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// TestServer: the exports are listed; NBD_OPT_INFO and NBD_OPT_GO give
// an export's size and read-only flags, NBD_OPT_EXPORT_NAME chooses one
// too; an unknown export or option is refused, the connection going on;
// reads in flight at once are answered by handle with the export's
// bytes; writes, trims and zeroing are refused with EPERM, reads past
// the end and unknown requests with EINVAL, the stream staying in step;
// NBD_CMD_DISC and NBD_OPT_ABORT end the connection.
func TestServer(t *testing.T) {
	r := testRand(t)
	a := make([]byte, 3<<20+777)
	r.Read(a)
	exports := memExports{"vg0/a": a, "vg0/a@1": a[:5000], "mem": fuzzData}
	sock, _, _ := listenTest(t, exports, nbd.Options{})

	k := nbdtest.Dial(t, "unix", sock)
	final, names := k.List()
	slices.Sort(names)
	if final != nbd.RepAck || strings.Join(names, " ") != "mem vg0/a vg0/a@1" {
		t.Fatalf("NBD_OPT_LIST: %#x, %q", final, names)
	}
	if final, _ := k.Option(nbd.OptList, []byte{1}); final != nbd.RepErrInvalid {
		t.Fatalf("NBD_OPT_LIST with data: %#x, want NBD_REP_ERR_INVALID", final)
	}
	if final, _ := k.Option(99, []byte("x")); final != nbd.RepErrUnsup {
		t.Fatalf("an unknown option: %#x, want NBD_REP_ERR_UNSUP", final)
	}
	if final, msg := k.Option(nbd.OptStartTLS, nil); final != nbd.RepErrInvalid {
		t.Fatalf("NBD_OPT_STARTTLS on a server without TLS: %#x %q, want NBD_REP_ERR_INVALID", final, msg)
	}
	if final, msg := k.Info("vg0/b"); final != nbd.RepErrUnknown || !strings.Contains(msg, "vg0/b") {
		t.Fatalf("NBD_OPT_INFO of an unknown export: %#x %q", final, msg)
	}
	if final, _ := k.Option(nbd.OptInfo, []byte{0, 0, 0, 9, 'a', 0, 0}); final != nbd.RepErrInvalid {
		t.Fatalf("NBD_OPT_INFO whose name is longer than it: %#x, want NBD_REP_ERR_INVALID", final)
	}
	if final, _ := k.Info("vg0/a@1"); final != nbd.RepAck || k.Size != 5000 || k.Flags&nbd.FlagReadOnly == 0 {
		t.Fatalf("NBD_OPT_INFO vg0/a@1: %#x, size %d, flags %#x", final, k.Size, k.Flags)
	}
	if final := k.Go("vg0/a"); final != nbd.RepAck || k.Size != uint64(len(a)) || k.Flags&nbd.FlagReadOnly == 0 {
		t.Fatalf("NBD_OPT_GO vg0/a: %#x, size %d, flags %#x", final, k.Size, k.Flags)
	}

	k.ReadMany(r, a, 40) // in flight at once, answered by handle
	k.Request(nbd.CmdRead, 99, 0, uint32(len(a)), nil)
	if _, code, b := k.Reply(uint32(len(a))); code != 0 || !bytes.Equal(b, a) {
		t.Fatalf("a whole read: code %d, %d bytes", code, len(b))
	}
	for _, c := range []struct {
		typ     uint16
		off     uint64
		n       uint32
		payload []byte
		code    uint32
	}{
		{nbd.CmdWrite, 0, 4096, make([]byte, 4096), nbd.EPERM},
		{nbd.CmdTrim, 0, 4096, nil, nbd.EPERM},
		{nbd.CmdWriteZeroes, 0, 4096, nil, nbd.EPERM},
		{nbd.CmdRead, uint64(len(a)) - 1, 2, nil, nbd.EINVAL},
		{nbd.CmdRead, 1 << 63, 1, nil, nbd.EINVAL},
		{nbd.CmdRead, 0, nbd.MaxRead + 1, nil, nbd.EINVAL},
		{9, 0, 0, nil, nbd.EINVAL},
		{nbd.CmdFlush, 0, 0, nil, 0},
		{nbd.CmdRead, 0, 0, nil, 0},
	} {
		k.Request(c.typ, 7, c.off, c.n, c.payload)
		if h, code, _ := k.Reply(0); h != 7 || code != c.code {
			t.Fatalf("request %d at %d of %d bytes: handle %d code %d, want %d", c.typ, c.off, c.n, h, code, c.code)
		}
	}
	k.Request(nbd.CmdRead, 8, uint64(len(a))-10, 10, nil)
	if _, code, b := k.Reply(10); code != 0 || !bytes.Equal(b, a[len(a)-10:]) {
		t.Fatalf("a read after the refusals: code %d", code)
	}
	k.Request(nbd.CmdDisc, 10, 0, 0, nil)
	if _, err := k.Conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("after NBD_CMD_DISC the connection is not closed: %v", err)
	}

	// NBD_OPT_EXPORT_NAME: the size and flags, and no 124 zeroes (the
	// client said NBD_FLAG_C_NO_ZEROES).
	k = nbdtest.Dial(t, "unix", sock)
	k.Put(uint64(nbd.OptMagic), uint32(nbd.OptExportName), uint32(len("vg0/a@1")))
	k.Conn.Write([]byte("vg0/a@1"))
	var size uint64
	var flags uint16
	k.Get(&size, &flags)
	if size != 5000 || flags&nbd.FlagReadOnly == 0 {
		t.Fatalf("NBD_OPT_EXPORT_NAME: size %d, flags %#x", size, flags)
	}
	k.Request(nbd.CmdRead, 1, 4990, 10, nil)
	if _, code, b := k.Reply(10); code != 0 || !bytes.Equal(b, a[4990:5000]) {
		t.Fatalf("a read after NBD_OPT_EXPORT_NAME: code %d", code)
	}
	// NBD_OPT_EXPORT_NAME of an unknown export ends the connection.
	k = nbdtest.Dial(t, "unix", sock)
	k.Put(uint64(nbd.OptMagic), uint32(nbd.OptExportName), uint32(1))
	k.Conn.Write([]byte("x"))
	closedByServer(t, k.Conn, 0)
	// NBD_OPT_ABORT is acknowledged, and the connection ends.
	k = nbdtest.Dial(t, "unix", sock)
	if final, _ := k.Option(nbd.OptAbort, nil); final != nbd.RepAck {
		t.Fatalf("NBD_OPT_ABORT: %#x", final)
	}
	closedByServer(t, k.Conn, 0)
}

// TestServerZeroes: a client without NBD_FLAG_C_NO_ZEROES gets the 124
// zero bytes after NBD_OPT_EXPORT_NAME's reply; a client with unknown
// flags is refused.
func TestServerZeroes(t *testing.T) {
	sock, _, _ := listenTest(t, fuzzExports, nbd.Options{})
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 18)); err != nil {
		t.Fatal(err)
	}
	b := binary.BigEndian.AppendUint32(nil, nbd.FlagCFixed)
	c.Write(nbdtest.AppendOption(b, nbd.OptExportName, []byte("mem")))
	reply := make([]byte, 8+2+124)
	if _, err := io.ReadFull(c, reply); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint64(reply) != uint64(len(fuzzData)) || !bytes.Equal(reply[10:], make([]byte, 124)) {
		t.Fatalf("NBD_OPT_EXPORT_NAME without NBD_FLAG_C_NO_ZEROES: %x", reply)
	}

	c2, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, err := io.ReadFull(c2, make([]byte, 18)); err != nil {
		t.Fatal(err)
	}
	c2.Write(binary.BigEndian.AppendUint32(nil, nbd.FlagCFixed|1<<7))
	closedByServer(t, c2, 0)
}

// TestServeLimits: a client that does not choose its export within the
// handshake timeout is disconnected, one that did keeps its connection
// past it; connections over the limit are closed at once, and a place
// freed is given to the next client.
func TestServeLimits(t *testing.T) {
	sock, srv, log := listenTest(t, fuzzExports, nbd.Options{MaxConns: 2, HandshakeTimeout: 500 * time.Millisecond})
	a := nbdtest.Dial(t, "unix", sock)
	if final := a.Go("mem"); final != nbd.RepAck {
		t.Fatalf("NBD_OPT_GO: %#x", final)
	}
	idle, err := net.Dial("unix", sock) // connects after a: its deadline comes later
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.ReadFull(idle, make([]byte, 18)); err != nil { // the greeting: idle has its place
		t.Fatal(err)
	}
	over, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	closedByServer(t, over, 0)
	if !strings.Contains(log.String(), "--max-connections") {
		t.Fatalf("a connection over the limit closed without a word in the log:\n%s", log.String())
	}
	closedByServer(t, idle, 0) // the greeting was read above
	if !strings.Contains(log.String(), "--handshake-timeout") {
		t.Fatalf("the idle connection closed without a word in the log:\n%s", log.String())
	}
	// a's handshake deadline, earlier than idle's, has passed: it still
	// reads.
	a.Request(nbd.CmdRead, 1, 1000, 100, nil)
	if h, code, b := a.Reply(100); h != 1 || code != 0 || !bytes.Equal(b, fuzzData[1000:1100]) {
		t.Fatalf("a read after the handshake timeout: handle %d code %d", h, code)
	}
	next := nbdtest.Dial(t, "unix", sock) // idle's place
	if final := next.Go("mem"); final != nbd.RepAck {
		t.Fatalf("NBD_OPT_GO on the place freed: %#x", final)
	}
	if n := srv.Connections(); n != 2 {
		t.Fatalf("%d connections served, want 2", n)
	}
}

// gatedExport is an export of size bytes, byte i being byte(i*7), whose
// reads say they began on entered, then wait until gate is closed.
type gatedExport struct {
	size    int64
	entered chan struct{}
	gate    chan struct{}
}

func (g gatedExport) List() ([]string, error)              { return []string{"gated"}, nil }
func (g gatedExport) Open(name string) (nbd.Export, error) { return g, nil }
func (g gatedExport) Size() int64                          { return g.size }
func (g gatedExport) Close() error                         { return nil }

func (g gatedExport) ReadAt(b []byte, off int64) (int, error) {
	g.entered <- struct{}{}
	<-g.gate
	return copy(b, gatedBytes(off, len(b))), nil
}

// gatedPattern is byte i of gatedExport from 0 to ReadSlot+256: the
// pattern repeats every 256 bytes.
var gatedPattern = func() []byte {
	b := make([]byte, nbd.ReadSlot+256)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}()

// gatedBytes are the n bytes of gatedExport at off, n at most ReadSlot.
func gatedBytes(off int64, n int) []byte {
	return gatedPattern[off%256 : off%256+int64(n)]
}

// TestReadBudget: the reads of every connection share one budget: while
// the reads being served hold all of it, the others wait, taken from
// their sockets but not served; once the reads in progress end, every
// read is answered with its bytes, and the budget was never overdrawn.
func TestReadBudget(t *testing.T) {
	const clients, reads = 6, 4 // 24 reads of one slot each: more than the 16 of the budget
	exp := gatedExport{size: 128 << 20, entered: make(chan struct{}, clients*reads), gate: make(chan struct{})}
	waited := make(chan struct{}, 1)
	sock, srv, _ := listenTest(t, exp, nbd.Options{OnReadWait: func() {
		select {
		case waited <- struct{}{}:
		default:
		}
	}})
	var opened sync.Once
	open := func() { opened.Do(func() { close(exp.gate) }) }
	t.Cleanup(open) // before the server stops: its reads must end
	var ks []*nbdtest.Client
	for range clients {
		k := nbdtest.Dial(t, "unix", sock)
		if final := k.Go("gated"); final != nbd.RepAck {
			t.Fatalf("NBD_OPT_GO: %#x", final)
		}
		ks = append(ks, k)
	}
	for i, k := range ks {
		for j := range reads {
			k.Request(nbd.CmdRead, uint64(j), uint64(i*reads+j)*nbd.ReadSlot, nbd.ReadSlot, nil)
		}
	}
	for served := 0; ; {
		select {
		case <-exp.entered:
			if served++; served > nbd.DefaultReadBudget/nbd.ReadSlot {
				t.Fatalf("%d reads of %d bytes served at once, beyond the read budget", served, nbd.ReadSlot)
			}
			continue
		case <-waited:
		}
		break
	}
	if b := srv.ReadBudget(); b.Limit != nbd.DefaultReadBudget/nbd.ReadSlot || b.Used > b.Limit || b.Waiting == 0 {
		t.Fatalf("reads waiting for the budget: %+v", b)
	}
	open()
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range reads {
				var magic, code uint32
				var h uint64
				if err := binary.Read(k.Conn, binary.BigEndian, &magic); err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				binary.Read(k.Conn, binary.BigEndian, &code)
				binary.Read(k.Conn, binary.BigEndian, &h)
				if magic != nbd.ReplyMagic || code != 0 || h >= reads {
					t.Errorf("client %d: reply %#x code %d handle %d", i, magic, code, h)
					return
				}
				b := make([]byte, nbd.ReadSlot)
				if _, err := io.ReadFull(k.Conn, b); err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				off := int64(i*reads+int(h)) * nbd.ReadSlot
				if !bytes.Equal(b, gatedBytes(off, len(b))) {
					t.Errorf("client %d: the read at %d returned other bytes", i, off)
					return
				}
			}
		}()
	}
	wg.Wait()
	if b := srv.ReadBudget(); b.Peak != b.Limit {
		t.Fatalf("after every read: the budget was used up to %d units, limit %d", b.Peak, b.Limit)
	}
}

// TestServeStops: Serve returns once its context is done, closing the
// connections open, one in the middle of its handshake and one that
// chose its export; a listener closed under it is an error.
func TestServeStops(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := nbd.NewServer(fuzzExports, nbd.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	a := nbdtest.Dial(t, "unix", sock)
	a.Go("mem")
	b := nbdtest.Dial(t, "unix", sock)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	for _, c := range []net.Conn{a.Conn, b.Conn} {
		// b's flags may be left unread: then the close is a reset.
		if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("a connection after Serve returned: %d bytes, %v; want it closed", n, err)
		}
	}

	l, err = net.Listen("unix", filepath.Join(t.TempDir(), "nbd.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if err := nbd.NewServer(fuzzExports, nbd.Options{}).Serve(context.Background(), l); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Serve on a closed listener: %v", err)
	}
}

// serverTLS is the TLS configuration of a server with the certificates
// of nbdtest.PKI in dir, requiring a client certificate.
func serverTLS(t testing.TB, dir string, ca *x509.Certificate) *tls.Config {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

// TestServerTLS: with TLS required, every option before NBD_OPT_STARTTLS
// is refused with NBD_REP_ERR_TLS_REQD (NBD_OPT_EXPORT_NAME ends the
// connection); after it, the exports list and read as without, and a
// second NBD_OPT_STARTTLS is refused; a client without a certificate
// gets no further.
func TestServerTLS(t *testing.T) {
	pki := t.TempDir()
	ca := nbdtest.PKI(t, pki)
	sock, _, _ := listenTest(t, fuzzExports, nbd.Options{TLS: serverTLS(t, pki, ca)})
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	client, err := tls.LoadX509KeyPair(filepath.Join(pki, "client-cert.pem"), filepath.Join(pki, "client-key.pem"))
	if err != nil {
		t.Fatal(err)
	}

	k := nbdtest.Dial(t, "unix", sock)
	if final, _ := k.List(); final != nbd.RepErrTLSReqd {
		t.Fatalf("NBD_OPT_LIST before TLS: %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	if final := k.Go("mem"); final != nbd.RepErrTLSReqd {
		t.Fatalf("NBD_OPT_GO before TLS: %#x, want NBD_REP_ERR_TLS_REQD", final)
	}
	if final, _ := k.Option(nbd.OptStartTLS, []byte{1}); final != nbd.RepErrInvalid {
		t.Fatalf("NBD_OPT_STARTTLS with data: %#x, want NBD_REP_ERR_INVALID", final)
	}
	k.StartTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", Certificates: []tls.Certificate{client}})
	if final, names := k.List(); final != nbd.RepAck || len(names) != 1 || names[0] != "mem" {
		t.Fatalf("NBD_OPT_LIST over TLS: %#x, %q", final, names)
	}
	if final, _ := k.Option(nbd.OptStartTLS, nil); final != nbd.RepErrInvalid {
		t.Fatalf("NBD_OPT_STARTTLS over TLS: %#x, want NBD_REP_ERR_INVALID", final)
	}
	if final := k.Go("mem"); final != nbd.RepAck || k.Size != uint64(len(fuzzData)) {
		t.Fatalf("NBD_OPT_GO over TLS: %#x, size %d", final, k.Size)
	}
	k.Request(nbd.CmdRead, 5, 1000, 200000, nil)
	if h, code, b := k.Reply(200000); h != 5 || code != 0 || !bytes.Equal(b, fuzzData[1000:201000]) {
		t.Fatalf("a read over TLS: handle %d code %d", h, code)
	}

	k = nbdtest.Dial(t, "unix", sock)
	k.Put(uint64(nbd.OptMagic), uint32(nbd.OptExportName), uint32(3))
	k.Conn.Write([]byte("mem"))
	closedByServer(t, k.Conn, 0)

	// Without a client certificate: no further.
	k = nbdtest.Dial(t, "unix", sock)
	if final, _ := k.Option(nbd.OptStartTLS, nil); final != nbd.RepAck {
		t.Fatalf("NBD_OPT_STARTTLS: reply %#x", final)
	}
	tc := tls.Client(k.Conn, &tls.Config{RootCAs: roots, ServerName: "localhost"})
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	err = tc.Handshake()
	if err == nil {
		// TLS 1.3: the server's refusal of the missing certificate
		// comes with the first read.
		tc.Write(nbdtest.AppendOption(nil, nbd.OptList, nil))
		_, err = io.ReadFull(tc, make([]byte, 20))
	}
	if err == nil {
		t.Fatal("a client without a certificate got an answer over TLS")
	}
}

// TestServeConn: ServeConn serves one connection, and returns nil when
// the client ends it.
func TestServeConn(t *testing.T) {
	client, server := socketPair(t)
	defer client.Close()
	srv := nbd.NewServer(fuzzExports, nbd.Options{})
	done := make(chan error, 1)
	go func() { done <- srv.ServeConn(context.Background(), server); server.Close() }()
	client.SetDeadline(time.Now().Add(30 * time.Second))
	k := nbdtest.Hello(t, client)
	if final := k.Go(""); final != nbd.RepAck || k.Size != uint64(len(fuzzData)) {
		t.Fatalf("NBD_OPT_GO of the default export: %#x, size %d", final, k.Size)
	}
	k.Request(nbd.CmdDisc, 1, 0, 0, nil)
	if err := <-done; err != nil {
		t.Fatalf("ServeConn after NBD_CMD_DISC: %v", err)
	}
}
