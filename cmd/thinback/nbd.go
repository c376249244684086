package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// A read-only NBD server (the Network Block Device protocol of Linux's nbd
// driver, nbd-client and QEMU: github.com/NetworkBlockDevice/nbd,
// doc/proto.md), for the same points in time as thinback mount. It speaks
// the fixed newstyle handshake with the options NBD_OPT_EXPORT_NAME,
// NBD_OPT_LIST, NBD_OPT_INFO, NBD_OPT_GO and NBD_OPT_ABORT, and simple
// replies to NBD_CMD_READ, NBD_CMD_DISC (and NBD_CMD_FLUSH, a no-op);
// every write, trim or zeroing request is refused with EPERM, and the
// export is flagged read-only.

// Protocol constants (doc/proto.md). All integers are big-endian.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic     = 0x3e889045565a9
	nbdRequestMagic = 0x25609513
	nbdReplyMagic   = 0x67446698

	nbdFlagFixedNewstyle = 1 << 0 // handshake flags
	nbdFlagNoZeroes      = 1 << 1
	nbdFlagCFixed        = 1 << 0 // client flags
	nbdFlagCNoZeroes     = 1 << 1

	nbdFlagHasFlags  = 1 << 0 // transmission flags
	nbdFlagReadOnly  = 1 << 1
	nbdFlagSendFlush = 1 << 2
	nbdFlagMultiConn = 1 << 8

	nbdOptExportName = 1
	nbdOptAbort      = 2
	nbdOptList       = 3
	nbdOptInfo       = 6
	nbdOptStartTLS   = 5
	nbdOptGo         = 7

	nbdRepAck        = 1
	nbdRepServer     = 2
	nbdRepInfo       = 3
	nbdRepErrUnsup   = 1<<31 + 1
	nbdRepErrInvalid = 1<<31 + 3
	nbdRepErrTLSReqd = 1<<31 + 5
	nbdRepErrUnknown = 1<<31 + 6

	nbdInfoExport    = 0
	nbdInfoBlockSize = 3

	nbdCmdRead  = 0
	nbdCmdWrite = 1
	nbdCmdDisc  = 2
	nbdCmdFlush = 3

	nbdEPERM  = 1
	nbdEIO    = 5
	nbdEINVAL = 22

	// nbdMaxOption bounds an option's data: a name and a few requests.
	nbdMaxOption = 64 << 10
	// nbdMaxRead bounds one read request (and so the memory of one).
	nbdMaxRead = 32 << 20
	// nbdSlot is the unit of the read budget: a read takes one per
	// started nbdSlot of its length, at least one, so that a read also
	// pays for the record (at most archive.MaxDataLen) it decodes.
	nbdSlot = 4 << 20
	// nbdDefaultBudget is the read budget of the whole server, shared by
	// every connection: however many clients there are and whatever they
	// ask, the server holds at most this much of reads being served
	// (their buffers), and so at most nbdDefaultBudget/nbdSlot reads at
	// once, each decoding one record at a time.
	nbdDefaultBudget = 64 << 20
	// nbdDefaultConns is how many connections are served at once unless
	// told otherwise (--max-connections); one more is closed at once.
	nbdDefaultConns = 64
	// nbdDefaultHandshake is how long a client has to negotiate its
	// export (--handshake-timeout), so that connections that say nothing
	// do not hold their places.
	nbdDefaultHandshake = 30 * time.Second
	// nbdReplyTimeout is how long a reply may wait for the client to
	// take it: a client that asks and never reads would otherwise hold
	// its share of the read budget forever.
	nbdReplyTimeout = 60 * time.Second
)

// errNBDClosed marks the end of a connection the client asked for.
var errNBDClosed = errors.New("nbd: the client closed the connection")

// nbdExport is one point in time served.
type nbdExport interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// nbdExports are the exports a server offers.
type nbdExports interface {
	// List returns the export names.
	List() ([]string, error)
	// Open opens an export; (nil, nil) means there is no such export.
	Open(name string) (nbdExport, error)
}

// nbdOptions tune a server; the zero value is good.
type nbdOptions struct {
	MaxConns         int           // 0: nbdDefaultConns
	HandshakeTimeout time.Duration // 0: nbdDefaultHandshake
	ReplyTimeout     time.Duration // 0: nbdReplyTimeout
	ReadBudget       int64         // bytes; 0: nbdDefaultBudget
	// TLS, if set, is required: a client must start TLS (NBD_OPT_STARTTLS)
	// before any other option but NBD_OPT_ABORT.
	TLS *tls.Config
}

// nbdServer is what every connection of a server shares: its exports,
// its read budget and its limits.
type nbdServer struct {
	exports nbdExports
	logf    func(string, ...any)
	opts    nbdOptions
	budget  *readBudget

	mu    sync.Mutex
	conns map[net.Conn]bool
}

func newNBDServer(exports nbdExports, opts nbdOptions, logf func(string, ...any)) *nbdServer {
	if opts.MaxConns <= 0 {
		opts.MaxConns = nbdDefaultConns
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = nbdDefaultHandshake
	}
	if opts.ReplyTimeout <= 0 {
		opts.ReplyTimeout = nbdReplyTimeout
	}
	if opts.ReadBudget <= 0 {
		opts.ReadBudget = nbdDefaultBudget
	}
	// A read of nbdMaxRead must fit, or it would wait forever.
	opts.ReadBudget = max(opts.ReadBudget, nbdMaxRead)
	return &nbdServer{exports: exports, logf: logf, opts: opts,
		budget: newReadBudget(opts.ReadBudget / nbdSlot), conns: make(map[net.Conn]bool)}
}

// connections returns how many connections are being served.
func (srv *nbdServer) connections() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.conns)
}

// serve serves the connections of l until ctx is done, then closes them
// and returns once every one has ended. A failing accept (too many open
// files, a connection reset before it was taken) is logged and tried
// again after a pause that grows up to a second, as net/http does;
// connections over the limit are closed at once.
func (srv *nbdServer) serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		srv.mu.Lock()
		for c := range srv.conns {
			c.Close()
		}
		srv.mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	var delay time.Duration
	full := false // the limit was reached and said so
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("nbd: accepting a connection: %w", err)
			}
			if delay == 0 {
				delay = 5 * time.Millisecond
				srv.logf("nbd: accepting a connection: %v; trying again (%d connections open)", err, srv.connections())
			} else {
				delay = min(2*delay, time.Second)
			}
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		delay = 0
		srv.mu.Lock()
		if ctx.Err() != nil {
			// Accepted as the server stopped, perhaps after stop
			// closed the others: not served.
			srv.mu.Unlock()
			c.Close()
			return nil
		}
		n := len(srv.conns)
		if n < srv.opts.MaxConns {
			srv.conns[c] = true
		}
		srv.mu.Unlock()
		if n >= srv.opts.MaxConns {
			if !full {
				full = true
				srv.logf("nbd: %d connections open, the most served at once (--max-connections): closing new ones until one ends", n)
			}
			c.Close()
			continue
		}
		full = false
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				// Forgotten before closed: a client that sees its
				// connection end can count on its place being free.
				srv.mu.Lock()
				delete(srv.conns, c)
				srv.mu.Unlock()
				c.Close()
			}()
			if err := srv.serveConn(ctx, c); err != nil && !errors.Is(err, errNBDClosed) && ctx.Err() == nil {
				srv.logf("nbd: %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// nbdConn is one client connection.
type nbdConn struct {
	srv *nbdServer
	ctx context.Context
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex // one reply at a time
	w   *bufio.Writer
	// deadline is when the handshake must be done.
	deadline time.Time
	tls      bool // TLS started
}

// serveConn serves one connection until it ends, or ctx is done.
func (srv *nbdServer) serveConn(ctx context.Context, c net.Conn) error {
	n := &nbdConn{srv: srv, ctx: ctx, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c),
		deadline: time.Now().Add(srv.opts.HandshakeTimeout)}
	c.SetDeadline(n.deadline)
	exp, err := n.handshake()
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("no export chosen within %v of connecting (--handshake-timeout): closing the connection", srv.opts.HandshakeTimeout)
		}
		return err
	}
	defer exp.Close()
	c.SetDeadline(time.Time{})
	return n.transmit(exp)
}

// open opens an export for the handshake, whose deadline moves by the
// time that takes (building a large snapshot's index): the client is
// timed, not the server.
func (n *nbdConn) open(name string) (nbdExport, error) {
	start := time.Now()
	exp, err := n.srv.exports.Open(name)
	n.deadline = n.deadline.Add(time.Since(start))
	n.c.SetDeadline(n.deadline)
	return exp, err
}

// readBudget is a counting semaphore of read units shared by the
// connections of a server, taken whole (a read takes all of its units at
// once, never some while waiting for the rest, which could deadlock two
// connections) and first come, first served.
type readBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	peak    int64
	waiters []*budgetWaiter
	// onWait, if set, is called (with mu held) when a read must wait
	// (tests).
	onWait func()
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newReadBudget(limit int64) *readBudget { return &readBudget{limit: limit} }

// acquire takes n units (at most the limit), waiting for them until done
// is closed; it reports whether it took them.
func (b *readBudget) acquire(n int64, done <-chan struct{}) bool {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.take(n)
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	if b.onWait != nil {
		b.onWait()
	}
	b.mu.Unlock()
	select {
	case <-w.ready:
		return true
	case <-done:
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.used -= n
			b.grant()
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			b.grant() // the first waiter may fit now
		}
		return false
	}
}

func (b *readBudget) take(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

// release gives back n units.
func (b *readBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.grant()
}

// grant hands units to the waiters first in line, while they fit.
func (b *readBudget) grant() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.limit {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.take(w.n)
		close(w.ready)
	}
}

// state returns the units in use, the most ever in use at once, and how
// many reads wait.
func (b *readBudget) state() (used, peak int64, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.peak, len(b.waiters)
}

func (n *nbdConn) flush() error { return n.w.Flush() }

func (n *nbdConn) put(v ...any) error {
	for _, x := range v {
		if err := binary.Write(n.w, binary.BigEndian, x); err != nil {
			return err
		}
	}
	return nil
}

// handshake runs the fixed newstyle negotiation and returns the export
// chosen.
func (n *nbdConn) handshake() (nbdExport, error) {
	if err := n.put(uint64(nbdMagic), uint64(nbdOptMagic), uint16(nbdFlagFixedNewstyle|nbdFlagNoZeroes)); err != nil {
		return nil, err
	}
	if err := n.flush(); err != nil {
		return nil, err
	}
	var cflags uint32
	if err := binary.Read(n.r, binary.BigEndian, &cflags); err != nil {
		return nil, fmt.Errorf("reading the client's flags: %w", err)
	}
	if cflags&nbdFlagCFixed == 0 || cflags&^(nbdFlagCFixed|nbdFlagCNoZeroes) != 0 {
		return nil, fmt.Errorf("the client does not speak the fixed newstyle handshake (flags %#x)", cflags)
	}
	noZeroes := cflags&nbdFlagCNoZeroes != 0
	for {
		var hdr struct {
			Magic  uint64
			Option uint32
			Length uint32
		}
		if err := binary.Read(n.r, binary.BigEndian, &hdr); err != nil {
			return nil, fmt.Errorf("reading an option: %w", err)
		}
		if hdr.Magic != nbdOptMagic {
			return nil, fmt.Errorf("an option with the magic %#x", hdr.Magic)
		}
		if hdr.Length > nbdMaxOption {
			return nil, fmt.Errorf("option %d of %d bytes", hdr.Option, hdr.Length)
		}
		data := make([]byte, hdr.Length)
		if _, err := io.ReadFull(n.r, data); err != nil {
			return nil, fmt.Errorf("reading option %d: %w", hdr.Option, err)
		}
		if n.srv.opts.TLS != nil && !n.tls {
			switch hdr.Option {
			case nbdOptStartTLS:
				if err := n.startTLS(data); err != nil {
					return nil, err
				}
				continue
			case nbdOptExportName: // no error reply: the connection ends
				return nil, errors.New("NBD_OPT_EXPORT_NAME before TLS, which this server requires")
			case nbdOptAbort:
			default:
				if err := n.replyDone(hdr.Option, nbdRepErrTLSReqd, []byte("this server requires TLS: start it first (NBD_OPT_STARTTLS)")); err != nil {
					return nil, err
				}
				continue
			}
		}
		switch hdr.Option {
		case nbdOptStartTLS:
			msg := "TLS is already on"
			if n.srv.opts.TLS == nil {
				msg = "this server has no TLS (thinback serve --tls-cert)"
			}
			if err := n.replyDone(hdr.Option, nbdRepErrInvalid, []byte(msg)); err != nil {
				return nil, err
			}
		case nbdOptExportName:
			exp, err := n.open(string(data))
			if err != nil || exp == nil {
				// This option has no error reply: the connection ends.
				if err == nil {
					err = fmt.Errorf("no export %q", data)
				}
				return nil, err
			}
			if err := n.put(uint64(exp.Size()), uint16(nbdTransmitFlags)); err != nil {
				exp.Close()
				return nil, err
			}
			if !noZeroes {
				n.w.Write(make([]byte, 124))
			}
			if err := n.flush(); err != nil {
				exp.Close()
				return nil, err
			}
			return exp, nil
		case nbdOptAbort:
			n.reply(hdr.Option, nbdRepAck, nil)
			n.flush()
			return nil, errNBDClosed
		case nbdOptList:
			if len(data) != 0 {
				if err := n.replyDone(hdr.Option, nbdRepErrInvalid, []byte("NBD_OPT_LIST takes no data")); err != nil {
					return nil, err
				}
				continue
			}
			names, err := n.srv.exports.List()
			if err != nil {
				return nil, err
			}
			for _, name := range names {
				b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
				if err := n.reply(hdr.Option, nbdRepServer, append(b, name...)); err != nil {
					return nil, err
				}
			}
			if err := n.replyDone(hdr.Option, nbdRepAck, nil); err != nil {
				return nil, err
			}
		case nbdOptInfo, nbdOptGo:
			exp, err := n.info(hdr.Option, data)
			if err != nil || exp == nil {
				if err != nil {
					return nil, err
				}
				continue
			}
			if hdr.Option == nbdOptInfo {
				exp.Close()
				continue
			}
			return exp, nil
		default:
			if err := n.replyDone(hdr.Option, nbdRepErrUnsup, []byte("option not supported")); err != nil {
				return nil, err
			}
		}
	}
}

// startTLS answers NBD_OPT_STARTTLS and runs the TLS handshake; the
// rest of the connection is then over TLS.
func (n *nbdConn) startTLS(data []byte) error {
	if len(data) != 0 {
		return n.replyDone(nbdOptStartTLS, nbdRepErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	}
	if n.r.Buffered() > 0 {
		// Sent before the server's answer: it would be read as plain
		// text, outside the TLS session.
		return errors.New("the client sent data after NBD_OPT_STARTTLS before its answer")
	}
	if err := n.replyDone(nbdOptStartTLS, nbdRepAck, nil); err != nil {
		return err
	}
	tc := tls.Server(n.c, n.srv.opts.TLS)
	if err := tc.HandshakeContext(n.ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	n.c, n.r, n.w, n.tls = tc, bufio.NewReader(tc), bufio.NewWriter(tc), true
	return nil
}

const nbdTransmitFlags = nbdFlagHasFlags | nbdFlagReadOnly | nbdFlagSendFlush | nbdFlagMultiConn

// info answers NBD_OPT_INFO and NBD_OPT_GO: the export's size, flags and
// block sizes, or an error reply; it returns the export opened (nil after
// an error reply).
func (n *nbdConn) info(opt uint32, data []byte) (nbdExport, error) {
	if len(data) < 6 {
		return nil, n.replyDone(opt, nbdRepErrInvalid, []byte("option too short"))
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+6 > uint64(len(data)) {
		return nil, n.replyDone(opt, nbdRepErrInvalid, []byte("name longer than the option"))
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := binary.BigEndian.Uint16(rest)
	if len(rest) != 2+2*int(nreq) {
		return nil, n.replyDone(opt, nbdRepErrInvalid, []byte("information requests do not match their count"))
	}
	exp, err := n.open(name)
	if err != nil {
		// The error, logged by the server, names the store's files: the
		// client, who may be anyone who can connect, learns only that
		// the export cannot be read.
		return nil, n.replyDone(opt, nbdRepErrUnknown, []byte(fmt.Sprintf("export %q cannot be read: the server's log says why", name)))
	}
	if exp == nil {
		return nil, n.replyDone(opt, nbdRepErrUnknown, []byte("no export "+name+" (thinback serve lists them: nbd-client -l)"))
	}
	var b []byte
	b = binary.BigEndian.AppendUint16(b, nbdInfoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(exp.Size()))
	b = binary.BigEndian.AppendUint16(b, nbdTransmitFlags)
	err = n.reply(opt, nbdRepInfo, b)
	if err == nil {
		b = binary.BigEndian.AppendUint16(nil, nbdInfoBlockSize)
		b = binary.BigEndian.AppendUint32(b, 1)          // minimum
		b = binary.BigEndian.AppendUint32(b, 64<<10)     // preferred: a block of the store
		b = binary.BigEndian.AppendUint32(b, nbdMaxRead) // maximum
		err = n.reply(opt, nbdRepInfo, b)
	}
	if err == nil {
		err = n.replyDone(opt, nbdRepAck, nil)
	}
	if err != nil {
		exp.Close()
		return nil, err
	}
	return exp, nil
}

func (n *nbdConn) reply(opt, typ uint32, data []byte) error {
	if err := n.put(uint64(nbdRepMagic), opt, typ, uint32(len(data))); err != nil {
		return err
	}
	_, err := n.w.Write(data)
	return err
}

func (n *nbdConn) replyDone(opt, typ uint32, data []byte) error {
	if err := n.reply(opt, typ, data); err != nil {
		return err
	}
	return n.flush()
}

// transmit serves requests until NBD_CMD_DISC or the end of the
// connection. Reads are served concurrently (their replies carry the
// request's handle), as many as the server's read budget allows.
func (n *nbdConn) transmit(exp nbdExport) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	size := exp.Size()
	for {
		var req struct {
			Magic  uint32
			Flags  uint16
			Type   uint16
			Handle uint64
			Offset uint64
			Length uint32
		}
		if err := binary.Read(n.r, binary.BigEndian, &req); err != nil {
			if errors.Is(err, io.EOF) {
				return errNBDClosed
			}
			return fmt.Errorf("reading a request: %w", err)
		}
		if req.Magic != nbdRequestMagic {
			return fmt.Errorf("a request with the magic %#x", req.Magic)
		}
		switch req.Type {
		case nbdCmdRead:
			if req.Length > nbdMaxRead || req.Offset > uint64(size) || uint64(req.Length) > uint64(size)-req.Offset {
				if err := n.simple(req.Handle, nbdEINVAL, nil); err != nil {
					return err
				}
				continue
			}
			units := max(1, (int64(req.Length)+nbdSlot-1)/nbdSlot)
			if !n.srv.budget.acquire(units, n.ctx.Done()) {
				return n.ctx.Err()
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer n.srv.budget.release(units)
				buf := make([]byte, req.Length)
				code := uint32(0)
				if _, err := exp.ReadAt(buf, int64(req.Offset)); err != nil && !errors.Is(err, io.EOF) {
					code, buf = nbdEIO, nil // the reader logged the damaged record
				}
				if err := n.simple(req.Handle, code, buf); err != nil {
					n.c.Close() // the next request read fails and ends the connection
				}
			}()
		case nbdCmdDisc:
			return errNBDClosed
		case nbdCmdFlush:
			if err := n.simple(req.Handle, 0, nil); err != nil {
				return err
			}
		case nbdCmdWrite:
			// Read and drop the data, so the stream stays in step.
			if _, err := io.CopyN(io.Discard, n.r, int64(req.Length)); err != nil {
				return fmt.Errorf("reading a write request's data: %w", err)
			}
			if err := n.simple(req.Handle, nbdEPERM, nil); err != nil {
				return err
			}
		default: // trim, write zeroes, cache, block status...: not here
			code := uint32(nbdEINVAL)
			if req.Type == 4 || req.Type == 6 { // NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES
				code = nbdEPERM
			}
			if err := n.simple(req.Handle, code, nil); err != nil {
				return err
			}
		}
	}
}

// simple writes a simple reply, with data for a successful read.
func (n *nbdConn) simple(handle uint64, code uint32, data []byte) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	n.c.SetWriteDeadline(time.Now().Add(n.srv.opts.ReplyTimeout))
	if err := n.put(uint32(nbdReplyMagic), code, handle); err != nil {
		return err
	}
	if code == 0 && len(data) > 0 {
		if _, err := n.w.Write(data); err != nil {
			return err
		}
	}
	return n.flush()
}
