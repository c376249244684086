// Package nbdtest is the client side of the NBD protocol for tests, as
// the kernel's nbd driver and nbd-client speak it: the fixed newstyle
// handshake, then requests with handles; and the certificates of a test
// CA for TLS.
package nbdtest

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"math/rand"
	"net"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
)

// Client is a connection to an NBD server whose handshake is under way;
// it fails its test on any error of its own connection.
type Client struct {
	Conn  net.Conn
	T     testing.TB
	Flags uint16 // transmission flags of the export chosen
	Size  uint64 // its size
}

// Dial connects to an NBD server and says hello (the fixed newstyle
// handshake, no zeroes); the connection is closed at the end of the test.
func Dial(t testing.TB, network, addr string) *Client {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	t.Cleanup(func() { c.Close() })
	return Hello(t, c)
}

// Hello reads the server's greeting on c and sends the client's flags.
func Hello(t testing.TB, c net.Conn) *Client {
	t.Helper()
	k := &Client{Conn: c, T: t}
	var magic, opt uint64
	var hflags uint16
	k.Get(&magic, &opt, &hflags)
	if magic != nbd.Magic || opt != nbd.OptMagic || hflags&nbd.FlagFixedNewstyle == 0 {
		t.Fatalf("handshake %#x %#x %#x", magic, opt, hflags)
	}
	k.Put(uint32(nbd.FlagCFixed | nbd.FlagCNoZeroes))
	return k
}

// Put writes big-endian integers.
func (k *Client) Put(v ...any) {
	k.T.Helper()
	for _, x := range v {
		if err := binary.Write(k.Conn, binary.BigEndian, x); err != nil {
			k.T.Fatal(err)
		}
	}
}

// Get reads big-endian integers.
func (k *Client) Get(v ...any) {
	k.T.Helper()
	for _, x := range v {
		if err := binary.Read(k.Conn, binary.BigEndian, x); err != nil {
			k.T.Fatal(err)
		}
	}
}

// Option sends an option and reads its replies up to the final one
// (NBD_REP_ACK or an error), which it returns with the data of the
// others.
func (k *Client) Option(opt uint32, data []byte) (final uint32, replies [][]byte) {
	final, replies, _ = k.option(opt, data)
	return final, replies
}

func (k *Client) option(opt uint32, data []byte) (final uint32, replies [][]byte, last []byte) {
	k.T.Helper()
	k.Put(uint64(nbd.OptMagic), opt, uint32(len(data)))
	if len(data) > 0 {
		if _, err := k.Conn.Write(data); err != nil {
			k.T.Fatal(err)
		}
	}
	for {
		var magic uint64
		var o, typ, n uint32
		k.Get(&magic, &o, &typ, &n)
		if magic != nbd.RepMagic || o != opt {
			k.T.Fatalf("option reply %#x for %d", magic, o)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(k.Conn, b); err != nil {
			k.T.Fatal(err)
		}
		if typ == nbd.RepAck || typ&(1<<31) != 0 {
			return typ, replies, b
		}
		replies = append(replies, b)
	}
}

// List asks for the export names (NBD_OPT_LIST).
func (k *Client) List() (final uint32, names []string) {
	k.T.Helper()
	final, replies := k.Option(nbd.OptList, nil)
	for _, b := range replies {
		if len(b) < 4 || int(binary.BigEndian.Uint32(b)) != len(b)-4 {
			k.T.Fatalf("NBD_REP_SERVER %x: its name's length is wrong", b)
		}
		names = append(names, string(b[4:]))
	}
	return final, names
}

func infoData(name string) []byte {
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	return binary.BigEndian.AppendUint16(data, 0)
}

// Go chooses an export (NBD_OPT_GO) and returns the final reply; on
// success Size and Flags hold the export's.
func (k *Client) Go(name string) uint32 {
	k.T.Helper()
	final, infos := k.Option(nbd.OptGo, infoData(name))
	k.infos(infos)
	return final
}

func (k *Client) infos(infos [][]byte) {
	for _, b := range infos {
		if len(b) >= 12 && binary.BigEndian.Uint16(b) == nbd.InfoExport {
			k.Size, k.Flags = binary.BigEndian.Uint64(b[2:]), binary.BigEndian.Uint16(b[10:])
		}
	}
}

// Info asks about an export (NBD_OPT_INFO) and returns the final reply
// with its message; on success Size and Flags hold the export's.
func (k *Client) Info(name string) (final uint32, msg string) {
	k.T.Helper()
	final, infos, last := k.option(nbd.OptInfo, infoData(name))
	k.infos(infos)
	return final, string(last)
}

// StartTLS sends NBD_OPT_STARTTLS and runs the client's TLS handshake.
func (k *Client) StartTLS(conf *tls.Config) {
	k.T.Helper()
	if final, _ := k.Option(nbd.OptStartTLS, nil); final != nbd.RepAck {
		k.T.Fatalf("NBD_OPT_STARTTLS: reply %#x", final)
	}
	tc := tls.Client(k.Conn, conf)
	if err := tc.Handshake(); err != nil {
		k.T.Fatalf("TLS handshake: %v", err)
	}
	k.Conn = tc
}

// Request sends a request, with payload after it (a write's data).
func (k *Client) Request(typ uint16, handle, off uint64, n uint32, payload []byte) {
	k.T.Helper()
	k.Put(uint32(nbd.RequestMagic), uint16(0), typ, handle, off, n)
	if len(payload) == 0 {
		return // no empty write, which fails once the server closed the connection
	}
	if _, err := k.Conn.Write(payload); err != nil {
		k.T.Fatal(err)
	}
}

// Reply reads a simple reply, with n bytes of data if it succeeded.
func (k *Client) Reply(n uint32) (handle uint64, code uint32, data []byte) {
	k.T.Helper()
	var magic uint32
	k.Get(&magic, &code, &handle)
	if magic != nbd.ReplyMagic {
		k.T.Fatalf("reply magic %#x", magic)
	}
	if code == 0 && n > 0 {
		data = make([]byte, n)
		if _, err := io.ReadFull(k.Conn, data); err != nil {
			k.T.Fatal(err)
		}
	}
	return handle, code, data
}

// AppendRequest appends a request header with handle 0 to b.
func AppendRequest(b []byte, typ uint16, off uint64, n uint32) []byte {
	b = binary.BigEndian.AppendUint32(b, nbd.RequestMagic)
	b = binary.BigEndian.AppendUint16(b, 0)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, 0)
	b = binary.BigEndian.AppendUint64(b, off)
	return binary.BigEndian.AppendUint32(b, n)
}

// AppendOption appends an option with its data to b.
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, nbd.OptMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ReadMany sends n reads of random ranges of the export chosen, all in
// flight at once, then checks that each reply, matched by its handle,
// holds the bytes of want it asks for.
func (k *Client) ReadMany(r *rand.Rand, want []byte, n int) {
	k.T.Helper()
	type rq struct {
		off uint64
		n   uint32
	}
	reqs := map[uint64]rq{}
	for h := uint64(1); h <= uint64(n); h++ {
		q := rq{off: uint64(r.Int63n(int64(len(want))))}
		q.n = uint32(min(uint64(1+r.Intn(200000)), uint64(len(want))-q.off))
		reqs[h] = q
		k.Request(nbd.CmdRead, h, q.off, q.n, nil)
	}
	for range n {
		var magic, code uint32
		var h uint64
		k.Get(&magic, &code, &h)
		q, ok := reqs[h]
		if magic != nbd.ReplyMagic || !ok || code != 0 {
			k.T.Fatalf("reply %#x %d for handle %d", magic, code, h)
		}
		b := make([]byte, q.n)
		if _, err := io.ReadFull(k.Conn, b); err != nil {
			k.T.Fatal(err)
		}
		if !bytes.Equal(b, want[q.off:q.off+uint64(q.n)]) {
			k.T.Fatalf("read of %d bytes at %d returned other bytes", q.n, q.off)
		}
		delete(reqs, h)
	}
}
