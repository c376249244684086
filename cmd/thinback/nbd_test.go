package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// seededRand returns a generator for a random test: its seed is logged,
// and THINBACK_SEED=N replays it.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if v := os.Getenv("THINBACK_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// nbdClient is the client side of the protocol, as the kernel's nbd
// driver and nbd-client speak it: the fixed newstyle handshake, then
// requests with handles.
type nbdClient struct {
	c  net.Conn
	t  *testing.T
	fl uint16 // transmission flags
	sz uint64
}

func (k *nbdClient) put(v ...any) {
	k.t.Helper()
	for _, x := range v {
		if err := binary.Write(k.c, binary.BigEndian, x); err != nil {
			k.t.Fatal(err)
		}
	}
}

func (k *nbdClient) get(v ...any) {
	k.t.Helper()
	for _, x := range v {
		if err := binary.Read(k.c, binary.BigEndian, x); err != nil {
			k.t.Fatal(err)
		}
	}
}

func dialNBD(t *testing.T, sock string) *nbdClient {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	k := &nbdClient{c: c, t: t}
	var magic, opt uint64
	var hflags uint16
	k.get(&magic, &opt, &hflags)
	if magic != nbdMagic || opt != nbdOptMagic || hflags&nbdFlagFixedNewstyle == 0 {
		t.Fatalf("handshake %#x %#x %#x", magic, opt, hflags)
	}
	k.put(uint32(nbdFlagCFixed | nbdFlagCNoZeroes))
	return k
}

// option sends an option and reads its replies up to the final one.
func (k *nbdClient) option(opt uint32, data []byte) (final uint32, replies [][]byte) {
	k.t.Helper()
	k.put(uint64(nbdOptMagic), opt, uint32(len(data)))
	k.c.Write(data)
	for {
		var magic uint64
		var o, typ, n uint32
		k.get(&magic, &o, &typ, &n)
		if magic != nbdRepMagic || o != opt {
			k.t.Fatalf("option reply %#x for %d", magic, o)
		}
		b := make([]byte, n)
		io.ReadFull(k.c, b)
		if typ == nbdRepAck || typ&(1<<31) != 0 {
			return typ, replies
		}
		replies = append(replies, b)
	}
}

func (k *nbdClient) goExport(name string) uint32 {
	k.t.Helper()
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	final, infos := k.option(nbdOptGo, data)
	for _, b := range infos {
		if binary.BigEndian.Uint16(b) == nbdInfoExport {
			k.sz, k.fl = binary.BigEndian.Uint64(b[2:]), binary.BigEndian.Uint16(b[10:])
		}
	}
	return final
}

func (k *nbdClient) request(typ uint16, handle, off uint64, n uint32, payload []byte) {
	k.t.Helper()
	k.put(uint32(nbdRequestMagic), uint16(0), typ, handle, off, n)
	k.c.Write(payload)
}

func (k *nbdClient) reply(n uint32) (handle uint64, code uint32, data []byte) {
	k.t.Helper()
	var magic uint32
	k.get(&magic, &code, &handle)
	if magic != nbdReplyMagic {
		k.t.Fatalf("reply magic %#x", magic)
	}
	if code == 0 && n > 0 {
		data = make([]byte, n)
		if _, err := io.ReadFull(k.c, data); err != nil {
			k.t.Fatal(err)
		}
	}
	return handle, code, data
}

// TestServeNBD: the exports of a store over NBD: listed; each point in
// time reads as the image held it, with many reads in flight at once
// answered by handle; writes are refused with EPERM and the export is
// flagged read-only; unknown exports are refused; ^C stops the server.
func TestServeNBD(t *testing.T) {
	work := t.TempDir()
	store := filepath.Join(work, "store")
	r := seededRand(t)
	img := make([]byte, 3<<20+777)
	r.Read(img[:2<<20])
	var states [][]byte
	for i := 0; i < 2; i++ {
		if i > 0 {
			r.Read(img[1<<20 : 1<<20+300000])
		}
		if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, work, "backup", "--file", "disk.img", "--store", store)
		states = append(states, append([]byte(nil), img...))
	}
	sock := filepath.Join(work, "nbd.sock")
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, e, serveOptions{store: store, addr: "unix:" + sock, quiet: true}) }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	k := dialNBD(t, sock)
	final, list := k.option(nbdOptList, nil)
	var names []string
	for _, b := range list {
		names = append(names, string(b[4:]))
	}
	if final != nbdRepAck || strings.Join(names, " ") != "disk.img disk.img@1 disk.img@2" {
		t.Fatalf("NBD_OPT_LIST: %d, %q", final, names)
	}
	if final := k.goExport("disk.img@9"); final != nbdRepErrUnknown {
		t.Fatalf("an unknown export: reply %#x", final)
	}
	for i, name := range []string{"disk.img@1", "disk.img"} {
		k := dialNBD(t, sock)
		if final := k.goExport(name); final != nbdRepAck {
			t.Fatalf("NBD_OPT_GO %s: reply %#x", name, final)
		}
		want := states[i]
		if k.sz != uint64(len(want)) || k.fl&nbdFlagReadOnly == 0 {
			t.Fatalf("%s: size %d, flags %#x", name, k.sz, k.fl)
		}
		// Many reads in flight, then their replies, matched by handle.
		type rq struct {
			off uint64
			n   uint32
		}
		reqs := map[uint64]rq{}
		for h := uint64(1); h <= 40; h++ {
			q := rq{off: uint64(r.Int63n(int64(len(want))))}
			q.n = uint32(min(uint64(1+r.Intn(200000)), uint64(len(want))-q.off))
			reqs[h] = q
			k.request(nbdCmdRead, h, q.off, q.n, nil)
		}
		for range 40 {
			var magic, code uint32
			var h uint64
			k.get(&magic, &code, &h)
			q, ok := reqs[h]
			if magic != nbdReplyMagic || !ok || code != 0 {
				t.Fatalf("%s: reply %#x %d for handle %d", name, magic, code, h)
			}
			b := make([]byte, q.n)
			io.ReadFull(k.c, b)
			if !bytes.Equal(b, want[q.off:q.off+uint64(q.n)]) {
				t.Fatalf("%s: read of %d bytes at %d returned other bytes", name, q.n, q.off)
			}
			delete(reqs, h)
		}
		// The whole device, in one read.
		k.request(nbdCmdRead, 99, 0, uint32(len(want)), nil)
		if _, code, b := k.reply(uint32(len(want))); code != 0 || !bytes.Equal(b, want) {
			at := -1
			for i := range b {
				if b[i] != want[i] {
					at = i
					break
				}
			}
			t.Fatalf("%s: a whole read: code %d, %d bytes, differs at %d: %x vs %x", name, code, len(b), at, b[:16], want[:16])
		}
		// Writes are refused, and the stream stays in step.
		k.request(nbdCmdWrite, 7, 0, 4096, make([]byte, 4096))
		if h, code, _ := k.reply(0); h != 7 || code != nbdEPERM {
			t.Fatalf("%s: a write: handle %d code %d, want EPERM", name, h, code)
		}
		k.request(nbdCmdRead, 8, uint64(len(want))-1, 2, nil)
		if _, code, _ := k.reply(0); code != nbdEINVAL {
			t.Fatalf("%s: a read past the end: code %d, want EINVAL", name, code)
		}
		k.request(nbdCmdRead, 9, 0, 10, nil)
		if _, code, b := k.reply(10); code != 0 || !bytes.Equal(b, want[:10]) {
			t.Fatalf("%s: a read after the refusals: code %d", name, code)
		}
		k.request(nbdCmdDisc, 10, 0, 0, nil)
		if _, err := k.c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: after NBD_CMD_DISC the connection is not closed: %v", name, err)
		}
	}
	// An open connection does not keep the server from stopping.
	idle := dialNBD(t, sock)
	idle.goExport("disk.img")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket is left behind: %v", err)
	}
	if stderr.Len() > 0 {
		t.Logf("serve said:\n%s", stderr.String())
	}
}

// memExports is one export of bytes in memory, for the fuzz tests.
type memExports struct{ data []byte }

type memExport struct{ *bytes.Reader }

func (memExport) Close() error { return nil }

func (m memExports) List() ([]string, error) { return []string{"mem"}, nil }

func (m memExports) Open(name string) (nbdExport, error) {
	if name != "mem" && name != "" {
		return nil, nil
	}
	return memExport{bytes.NewReader(m.data)}, nil
}

// fuzzExport is the export of the fuzz tests: bytes that differ from
// offset to offset, so that a read of the wrong range shows.
var fuzzExport = func() memExports {
	b := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(b)
	return memExports{data: b}
}()

// socketPair returns the two ends of a connected unix stream socket: a
// real socket, whose client end can stop writing and go on reading.
func socketPair(t *testing.T) (client *net.UnixConn, server net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0].(*net.UnixConn), conns[1]
}

func nbdRequest(b []byte, typ uint16, off uint64, n uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, nbdRequestMagic)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 0) // the handle: the test numbers them
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, n)
}

// FuzzNBDServer feeds requests to a connection that chose its export
// (what a client sends once the handshake is done) and checks every
// reply against what the requests ask: each reply answers a request
// sent, by its handle, once; with the code the protocol gives it
// (EPERM for a write, trim or zeroing, EINVAL for a read past the end or
// an unknown request); a read's data is the export's bytes at that
// offset; every request before the stream ends (NBD_CMD_DISC, a bad
// magic, the end of the input) is answered, and the server ends the
// connection. The input is taken 28 bytes at a time as request headers
// (their handles replaced by sequence numbers, so that each reply names
// one request), a write's data following its header.
func FuzzNBDServer(f *testing.F) {
	f.Add(nbdRequest(nbdRequest(nil, nbdCmdRead, 0, 4096), nbdCmdDisc, 0, 0))
	f.Add(nbdRequest(nbdRequest(nbdRequest(nil, nbdCmdRead, 100, 70000), nbdCmdRead, 1<<20-10, 10), nbdCmdRead, 1<<20-1, 2))
	f.Add(append(nbdRequest(nil, nbdCmdWrite, 0, 10), "0123456789"...))
	f.Add(nbdRequest(nbdRequest(nbdRequest(nil, nbdCmdFlush, 0, 0), 4, 0, 512), 6, 0, 512))
	f.Add(nbdRequest(nbdRequest(nil, nbdCmdRead, 1<<20-1, 1<<30), nbdCmdRead, 1<<63, 1))
	f.Add(nbdRequest(nbdRequest(nil, 9, 0, 0), nbdCmdRead, 0, 1<<20))
	f.Add(append(nbdRequest(nil, nbdCmdRead, 5, 5), 1, 2, 3))
	exp := fuzzExport.data
	size := uint64(len(exp))
	f.Fuzz(func(t *testing.T, in []byte) {
		type want struct {
			code    uint32
			off     uint64
			n       uint32
			hasData bool
		}
		wants := map[uint64]want{}
		var stream []byte
		handle := uint64(0)
	requests:
		for len(in) >= 28 {
			hdr := append([]byte(nil), in[:28]...)
			in = in[28:]
			handle++
			binary.BigEndian.PutUint64(hdr[8:], handle)
			stream = append(stream, hdr...)
			if binary.BigEndian.Uint32(hdr) != nbdRequestMagic {
				break // the server ends the connection here
			}
			typ, off, n := binary.BigEndian.Uint16(hdr[6:]), binary.BigEndian.Uint64(hdr[16:]), binary.BigEndian.Uint32(hdr[24:])
			switch typ {
			case nbdCmdRead:
				if n <= nbdMaxRead && off <= size && uint64(n) <= size-off {
					wants[handle] = want{off: off, n: n, hasData: n > 0}
				} else {
					wants[handle] = want{code: nbdEINVAL}
				}
			case nbdCmdWrite:
				if uint64(n) > uint64(len(in)) {
					stream = append(stream, in...) // the data ends early: so does the connection
					in = nil
					break requests
				}
				stream = append(stream, in[:n]...)
				in = in[n:]
				wants[handle] = want{code: nbdEPERM}
			case nbdCmdDisc:
				in = nil
				break requests
			case nbdCmdFlush:
				wants[handle] = want{}
			case 4, 6: // trim, write zeroes
				wants[handle] = want{code: nbdEPERM}
			default:
				wants[handle] = want{code: nbdEINVAL}
			}
		}
		stream = append(stream, in...) // a partial header, if any

		client, server := socketPair(t)
		defer client.Close()
		srv := newNBDServer(fuzzExport, nbdOptions{}, func(string, ...any) {})
		done := make(chan error, 1)
		go func() { done <- srv.serveConn(context.Background(), server); server.Close() }()
		client.SetDeadline(time.Now().Add(20 * time.Second))
		k := &nbdClient{c: client, t: t}
		var magic, opt uint64
		var hflags uint16
		k.get(&magic, &opt, &hflags)
		k.put(uint32(nbdFlagCFixed | nbdFlagCNoZeroes))
		if final := k.goExport("mem"); final != nbdRepAck || k.sz != size || k.fl&nbdFlagReadOnly == 0 {
			t.Fatalf("NBD_OPT_GO: reply %#x, size %d, flags %#x", final, k.sz, k.fl)
		}
		go func() {
			client.Write(stream)
			client.CloseWrite()
		}()
		r := bufio.NewReader(client)
		for {
			var hdr [16]byte
			if _, err := io.ReadFull(r, hdr[:]); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatalf("reading a reply: %v", err)
			}
			magic, code, h := binary.BigEndian.Uint32(hdr[:]), binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint64(hdr[8:])
			w, ok := wants[h]
			if magic != nbdReplyMagic || !ok {
				t.Fatalf("a reply with magic %#x for handle %d, which no request awaiting a reply has", magic, h)
			}
			delete(wants, h)
			if code != w.code {
				t.Fatalf("request %d: reply code %d, want %d", h, code, w.code)
			}
			if w.hasData {
				b := make([]byte, w.n)
				if _, err := io.ReadFull(r, b); err != nil {
					t.Fatalf("request %d: reading %d bytes of data: %v", h, w.n, err)
				}
				if !bytes.Equal(b, exp[w.off:w.off+uint64(w.n)]) {
					t.Fatalf("request %d: a read of %d bytes at %d returned other bytes", h, w.n, w.off)
				}
			}
		}
		if len(wants) > 0 {
			t.Fatalf("the connection ended with %d requests unanswered", len(wants))
		}
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("the server did not end the connection")
		}
	})
}

// FuzzNBDHandshake feeds what a client sends (after the server's
// greeting, from its flags on) to the server, with or without TLS
// required: whatever it is, the server neither panics nor hangs nor
// allocates beyond its bounds, and it ends the connection when the input
// ends.
func FuzzNBDHandshake(f *testing.F) {
	pki := f.TempDir()
	testPKI(f, pki)
	tlsConf, err := serveTLS(filepath.Join(pki, "server-cert.pem"), filepath.Join(pki, "server-key.pem"), "")
	if err != nil {
		f.Fatal(err)
	}
	hello := binary.BigEndian.AppendUint32(nil, nbdFlagCFixed|nbdFlagCNoZeroes)
	opt := func(b []byte, o uint32, data []byte) []byte {
		b = binary.BigEndian.AppendUint64(b, nbdOptMagic)
		b = binary.BigEndian.AppendUint32(b, o)
		b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
		return append(b, data...)
	}
	goData := append(binary.BigEndian.AppendUint32(nil, 3), "mem\x00\x00"...)
	f.Add(false, opt(append([]byte(nil), hello...), nbdOptList, nil))
	f.Add(true, opt(append([]byte(nil), hello...), nbdOptList, nil))
	f.Add(false, nbdRequest(nbdRequest(opt(append([]byte(nil), hello...), nbdOptGo, goData), nbdCmdRead, 0, 4096), nbdCmdDisc, 0, 0))
	f.Add(true, nbdRequest(nbdRequest(opt(append([]byte(nil), hello...), nbdOptGo, goData), nbdCmdRead, 0, 4096), nbdCmdDisc, 0, 0))
	f.Add(false, nbdRequest(opt(append([]byte(nil), hello...), nbdOptExportName, []byte("mem")), nbdCmdWrite, 0, 10))
	f.Add(true, nbdRequest(opt(append([]byte(nil), hello...), nbdOptExportName, []byte("mem")), nbdCmdWrite, 0, 10))
	f.Add(false, opt(append([]byte(nil), hello...), nbdOptInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0}))
	f.Add(true, opt(append([]byte(nil), hello...), nbdOptInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0}))
	f.Add(false, nbdRequest(opt(append([]byte(nil), hello...), nbdOptGo, goData), nbdCmdRead, 1<<20-1, 1<<30))
	f.Add(true, nbdRequest(opt(append([]byte(nil), hello...), nbdOptGo, goData), nbdCmdRead, 1<<20-1, 1<<30))
	f.Add(false, opt(opt(append([]byte(nil), hello...), nbdOptList, nil), nbdOptStartTLS, nil))
	f.Add(true, opt(opt(append([]byte(nil), hello...), nbdOptList, nil), nbdOptStartTLS, nil))
	f.Add(false, opt(opt(append([]byte(nil), hello...), nbdOptStartTLS, []byte{1}), nbdOptExportName, []byte("mem")))
	f.Add(true, opt(opt(append([]byte(nil), hello...), nbdOptStartTLS, []byte{1}), nbdOptExportName, []byte("mem")))
	f.Add(false, append(opt(append([]byte(nil), hello...), nbdOptStartTLS, nil), 0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0))
	f.Add(true, append(opt(append([]byte(nil), hello...), nbdOptStartTLS, nil), 0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0))
	f.Fuzz(func(t *testing.T, requireTLS bool, in []byte) {
		client, server := socketPair(t)
		defer client.Close()
		var opts nbdOptions
		if requireTLS {
			opts.TLS = tlsConf
		}
		srv := newNBDServer(fuzzExport, opts, func(string, ...any) {})
		done := make(chan error, 1)
		go func() { done <- srv.serveConn(context.Background(), server); server.Close() }()
		greeting := make(chan []byte, 1)
		go func() {
			b := make([]byte, 18)
			n, _ := io.ReadFull(client, b)
			greeting <- b[:n]
			io.Copy(io.Discard, client) // the other replies
		}()
		client.SetDeadline(time.Now().Add(10 * time.Second))
		client.Write(in)
		client.CloseWrite()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the server did not end the connection")
		}
		want := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, nbdMagic), nbdOptMagic)
		want = binary.BigEndian.AppendUint16(want, nbdFlagFixedNewstyle|nbdFlagNoZeroes)
		if g := <-greeting; !bytes.Equal(g, want) {
			t.Fatalf("the server's greeting: %x, want %x", g, want)
		}
	})
}
