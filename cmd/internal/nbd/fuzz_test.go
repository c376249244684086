package nbd_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

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
	req := nbdtest.AppendRequest
	f.Add(req(req(nil, nbd.CmdRead, 0, 4096), nbd.CmdDisc, 0, 0))
	f.Add(req(req(req(nil, nbd.CmdRead, 100, 70000), nbd.CmdRead, 1<<20-10, 10), nbd.CmdRead, 1<<20-1, 2))
	f.Add(append(req(nil, nbd.CmdWrite, 0, 10), "0123456789"...))
	f.Add(req(req(req(nil, nbd.CmdFlush, 0, 0), nbd.CmdTrim, 0, 512), nbd.CmdWriteZeroes, 0, 512))
	f.Add(req(req(nil, nbd.CmdRead, 1<<20-1, 1<<30), nbd.CmdRead, 1<<63, 1))
	f.Add(req(req(nil, 9, 0, 0), nbd.CmdRead, 0, 1<<20))
	f.Add(append(req(nil, nbd.CmdRead, 5, 5), 1, 2, 3))
	exp := fuzzData
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
			if binary.BigEndian.Uint32(hdr) != nbd.RequestMagic {
				break // the server ends the connection here
			}
			typ, off, n := binary.BigEndian.Uint16(hdr[6:]), binary.BigEndian.Uint64(hdr[16:]), binary.BigEndian.Uint32(hdr[24:])
			switch typ {
			case nbd.CmdRead:
				if n <= nbd.MaxRead && off <= size && uint64(n) <= size-off {
					wants[handle] = want{off: off, n: n, hasData: n > 0}
				} else {
					wants[handle] = want{code: nbd.EINVAL}
				}
			case nbd.CmdWrite:
				if uint64(n) > uint64(len(in)) {
					stream = append(stream, in...) // the data ends early: so does the connection
					in = nil
					break requests
				}
				stream = append(stream, in[:n]...)
				in = in[n:]
				wants[handle] = want{code: nbd.EPERM}
			case nbd.CmdDisc:
				in = nil
				break requests
			case nbd.CmdFlush:
				wants[handle] = want{}
			case nbd.CmdTrim, nbd.CmdWriteZeroes:
				wants[handle] = want{code: nbd.EPERM}
			default:
				wants[handle] = want{code: nbd.EINVAL}
			}
		}
		stream = append(stream, in...) // a partial header, if any

		client, server := socketPair(t)
		defer client.Close()
		srv := nbd.NewServer(fuzzExports, nbd.Options{})
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), server); server.Close() }()
		client.SetDeadline(time.Now().Add(20 * time.Second))
		k := nbdtest.Hello(t, client)
		if final := k.Go("mem"); final != nbd.RepAck || k.Size != size || k.Flags&nbd.FlagReadOnly == 0 {
			t.Fatalf("NBD_OPT_GO: reply %#x, size %d, flags %#x", final, k.Size, k.Flags)
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
			if magic != nbd.ReplyMagic || !ok {
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
	nbdtest.PKI(f, pki)
	pair, err := tls.LoadX509KeyPair(filepath.Join(pki, "server-cert.pem"), filepath.Join(pki, "server-key.pem"))
	if err != nil {
		f.Fatal(err)
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	hello := binary.BigEndian.AppendUint32(nil, nbd.FlagCFixed|nbd.FlagCNoZeroes)
	opt := nbdtest.AppendOption
	req := nbdtest.AppendRequest
	goData := append(binary.BigEndian.AppendUint32(nil, 3), "mem\x00\x00"...)
	for _, withTLS := range []bool{false, true} {
		f.Add(withTLS, opt(append([]byte(nil), hello...), nbd.OptList, nil))
		f.Add(withTLS, req(req(opt(append([]byte(nil), hello...), nbd.OptGo, goData), nbd.CmdRead, 0, 4096), nbd.CmdDisc, 0, 0))
		f.Add(withTLS, req(opt(append([]byte(nil), hello...), nbd.OptExportName, []byte("mem")), nbd.CmdWrite, 0, 10))
		f.Add(withTLS, opt(append([]byte(nil), hello...), nbd.OptInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0}))
		f.Add(withTLS, req(opt(append([]byte(nil), hello...), nbd.OptGo, goData), nbd.CmdRead, 1<<20-1, 1<<30))
		f.Add(withTLS, opt(opt(append([]byte(nil), hello...), nbd.OptList, nil), nbd.OptStartTLS, nil))
		f.Add(withTLS, opt(opt(append([]byte(nil), hello...), nbd.OptStartTLS, []byte{1}), nbd.OptExportName, []byte("mem")))
		f.Add(withTLS, append(opt(append([]byte(nil), hello...), nbd.OptStartTLS, nil), 0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0))
	}
	f.Fuzz(func(t *testing.T, requireTLS bool, in []byte) {
		client, server := socketPair(t)
		defer client.Close()
		var opts nbd.Options
		if requireTLS {
			opts.TLS = tlsConf
		}
		srv := nbd.NewServer(fuzzExports, opts)
		done := make(chan error, 1)
		go func() { done <- srv.ServeConn(context.Background(), server); server.Close() }()
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
		want := binary.BigEndian.AppendUint64(binary.BigEndian.AppendUint64(nil, nbd.Magic), nbd.OptMagic)
		want = binary.BigEndian.AppendUint16(want, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
		if g := <-greeting; !bytes.Equal(g, want) {
			t.Fatalf("the server's greeting: %x, want %x", g, want)
		}
	})
}
