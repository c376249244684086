// Package nbd is a read-only NBD server (the Network Block Device
// protocol of Linux's nbd driver, nbd-client, QEMU and libnbd:
// github.com/NetworkBlockDevice/nbd, doc/proto.md), for the points in time
// thinback serve exports. It speaks the fixed newstyle handshake with the
// options NBD_OPT_EXPORT_NAME, NBD_OPT_LIST, NBD_OPT_INFO, NBD_OPT_GO,
// NBD_OPT_ABORT and NBD_OPT_STARTTLS, and simple replies to NBD_CMD_READ,
// NBD_CMD_DISC (and NBD_CMD_FLUSH, a no-op); every write, trim or zeroing
// request is refused with EPERM, and the export is flagged read-only.
//
// # Basics
//
// A Server serves Exports (names, each opened as an Export: an
// io.ReaderAt with a size) on a net.Listener until its context is done.
// Every connection shares the server's read budget (DefaultReadBudget of
// reads in flight, whatever the clients ask), its connection cap and the
// handshake timeout that closes connections that never choose an export.
// Shared makes Exports of points in time opened once for all the clients
// that read them.
//
// # Caveats
//
// Without TLS (Options.TLS) there is no authentication: whoever can
// connect reads every export. Error replies to a client never carry the
// error of an export that cannot be opened (it may name files); the
// server's log does.
package nbd

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

// errClosed marks the end of a connection the client asked for.
var errClosed = errors.New("nbd: the client closed the connection")

// Export is one point in time served.
type Export interface {
	io.ReaderAt
	Size() int64
	Close() error
}

// Exports are the exports a server offers.
type Exports interface {
	// List returns the export names.
	List() ([]string, error)
	// Open opens an export; (nil, nil) means there is no such export.
	Open(name string) (Export, error)
}

// Options tune a server; the zero value is good.
type Options struct {
	MaxConns         int           // 0: DefaultConns
	HandshakeTimeout time.Duration // 0: DefaultHandshakeTimeout
	ReplyTimeout     time.Duration // 0: DefaultReplyTimeout
	ReadBudget       int64         // bytes; 0: DefaultReadBudget
	// TLS, if set, is required: a client must start TLS (NBD_OPT_STARTTLS)
	// before any other option but NBD_OPT_ABORT.
	TLS *tls.Config
	// Logf, if set, is given what the server has to say: connections
	// refused or failed, accepts that failed.
	Logf func(format string, args ...any)
	// OnReadWait, if set, is called each time a read must wait for the
	// read budget (tests, metrics).
	OnReadWait func()
}

// Server is what every connection of a server shares: its exports, its
// read budget and its limits.
type Server struct {
	exports Exports
	logf    func(string, ...any)
	opts    Options
	budget  *readBudget

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// NewServer returns a server of exports.
func NewServer(exports Exports, opts Options) *Server {
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultConns
	}
	if opts.HandshakeTimeout <= 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.ReplyTimeout <= 0 {
		opts.ReplyTimeout = DefaultReplyTimeout
	}
	if opts.ReadBudget <= 0 {
		opts.ReadBudget = DefaultReadBudget
	}
	// A read of MaxRead must fit, or it would wait forever.
	opts.ReadBudget = max(opts.ReadBudget, MaxRead)
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Server{exports: exports, logf: logf, opts: opts,
		budget: newReadBudget(opts.ReadBudget/ReadSlot, opts.OnReadWait), conns: make(map[net.Conn]bool)}
}

// Connections returns how many connections are being served.
func (srv *Server) Connections() int {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return len(srv.conns)
}

// ReadBudget returns the state of the read budget all connections share.
func (srv *Server) ReadBudget() BudgetState { return srv.budget.state() }

// Serve serves the connections of l until ctx is done, then closes them
// and returns once every one has ended. A failing accept (too many open
// files, a connection reset before it was taken) is logged and tried
// again after a pause that grows up to a second, as net/http does;
// connections over the limit are closed at once.
func (srv *Server) Serve(ctx context.Context, l net.Listener) error {
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
				srv.logf("nbd: accepting a connection: %v; trying again (%d connections open)", err, srv.Connections())
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
			if err := srv.serveConn(ctx, c); err != nil && !errors.Is(err, errClosed) && ctx.Err() == nil {
				srv.logf("nbd: %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// ServeConn serves one connection until it ends, or ctx is done, outside
// the connection cap. It returns nil when the client ended it (NBD_CMD_DISC,
// NBD_OPT_ABORT, the end of its stream between requests); it does not
// close c.
func (srv *Server) ServeConn(ctx context.Context, c net.Conn) error {
	if err := srv.serveConn(ctx, c); !errors.Is(err, errClosed) {
		return err
	}
	return nil
}

// conn is one client connection.
type conn struct {
	srv *Server
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
func (srv *Server) serveConn(ctx context.Context, c net.Conn) error {
	n := &conn{srv: srv, ctx: ctx, c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c),
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
func (n *conn) open(name string) (Export, error) {
	start := time.Now()
	exp, err := n.srv.exports.Open(name)
	n.deadline = n.deadline.Add(time.Since(start))
	n.c.SetDeadline(n.deadline)
	return exp, err
}

func (n *conn) flush() error { return n.w.Flush() }

func (n *conn) put(v ...any) error {
	for _, x := range v {
		if err := binary.Write(n.w, binary.BigEndian, x); err != nil {
			return err
		}
	}
	return nil
}

// handshake runs the fixed newstyle negotiation and returns the export
// chosen.
func (n *conn) handshake() (Export, error) {
	if err := n.put(uint64(Magic), uint64(OptMagic), uint16(FlagFixedNewstyle|FlagNoZeroes)); err != nil {
		return nil, err
	}
	if err := n.flush(); err != nil {
		return nil, err
	}
	var cflags uint32
	if err := binary.Read(n.r, binary.BigEndian, &cflags); err != nil {
		return nil, fmt.Errorf("reading the client's flags: %w", err)
	}
	if cflags&FlagCFixed == 0 || cflags&^(FlagCFixed|FlagCNoZeroes) != 0 {
		return nil, fmt.Errorf("the client does not speak the fixed newstyle handshake (flags %#x)", cflags)
	}
	noZeroes := cflags&FlagCNoZeroes != 0
	for {
		var hdr struct {
			Magic  uint64
			Option uint32
			Length uint32
		}
		if err := binary.Read(n.r, binary.BigEndian, &hdr); err != nil {
			return nil, fmt.Errorf("reading an option: %w", err)
		}
		if hdr.Magic != OptMagic {
			return nil, fmt.Errorf("an option with the magic %#x", hdr.Magic)
		}
		if hdr.Length > maxOption {
			return nil, fmt.Errorf("option %d of %d bytes", hdr.Option, hdr.Length)
		}
		data := make([]byte, hdr.Length)
		if _, err := io.ReadFull(n.r, data); err != nil {
			return nil, fmt.Errorf("reading option %d: %w", hdr.Option, err)
		}
		if n.srv.opts.TLS != nil && !n.tls {
			switch hdr.Option {
			case OptStartTLS:
				if err := n.startTLS(data); err != nil {
					return nil, err
				}
				continue
			case OptExportName: // no error reply: the connection ends
				return nil, errors.New("NBD_OPT_EXPORT_NAME before TLS, which this server requires")
			case OptAbort:
			default:
				if err := n.replyDone(hdr.Option, RepErrTLSReqd, []byte("this server requires TLS: start it first (NBD_OPT_STARTTLS)")); err != nil {
					return nil, err
				}
				continue
			}
		}
		switch hdr.Option {
		case OptStartTLS:
			msg := "TLS is already on"
			if n.srv.opts.TLS == nil {
				msg = "this server has no TLS (thinback serve --tls-cert)"
			}
			if err := n.replyDone(hdr.Option, RepErrInvalid, []byte(msg)); err != nil {
				return nil, err
			}
		case OptExportName:
			exp, err := n.open(string(data))
			if err != nil || exp == nil {
				// This option has no error reply: the connection ends.
				if err == nil {
					err = fmt.Errorf("no export %q", data)
				}
				return nil, err
			}
			if err := n.put(uint64(exp.Size()), uint16(transmitFlags)); err != nil {
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
		case OptAbort:
			n.reply(hdr.Option, RepAck, nil)
			n.flush()
			return nil, errClosed
		case OptList:
			if len(data) != 0 {
				if err := n.replyDone(hdr.Option, RepErrInvalid, []byte("NBD_OPT_LIST takes no data")); err != nil {
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
				if err := n.reply(hdr.Option, RepServer, append(b, name...)); err != nil {
					return nil, err
				}
			}
			if err := n.replyDone(hdr.Option, RepAck, nil); err != nil {
				return nil, err
			}
		case OptInfo, OptGo:
			exp, err := n.info(hdr.Option, data)
			if err != nil || exp == nil {
				if err != nil {
					return nil, err
				}
				continue
			}
			if hdr.Option == OptInfo {
				exp.Close()
				continue
			}
			return exp, nil
		default:
			if err := n.replyDone(hdr.Option, RepErrUnsup, []byte("option not supported")); err != nil {
				return nil, err
			}
		}
	}
}

// startTLS answers NBD_OPT_STARTTLS and runs the TLS handshake; the
// rest of the connection is then over TLS.
func (n *conn) startTLS(data []byte) error {
	if len(data) != 0 {
		return n.replyDone(OptStartTLS, RepErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	}
	if n.r.Buffered() > 0 {
		// Sent before the server's answer: it would be read as plain
		// text, outside the TLS session.
		return errors.New("the client sent data after NBD_OPT_STARTTLS before its answer")
	}
	if err := n.replyDone(OptStartTLS, RepAck, nil); err != nil {
		return err
	}
	tc := tls.Server(n.c, n.srv.opts.TLS)
	if err := tc.HandshakeContext(n.ctx); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	n.c, n.r, n.w, n.tls = tc, bufio.NewReader(tc), bufio.NewWriter(tc), true
	return nil
}

// info answers NBD_OPT_INFO and NBD_OPT_GO: the export's size, flags and
// block sizes, or an error reply; it returns the export opened (nil after
// an error reply).
func (n *conn) info(opt uint32, data []byte) (Export, error) {
	if len(data) < 6 {
		return nil, n.replyDone(opt, RepErrInvalid, []byte("option too short"))
	}
	nameLen := binary.BigEndian.Uint32(data)
	if uint64(nameLen)+6 > uint64(len(data)) {
		return nil, n.replyDone(opt, RepErrInvalid, []byte("name longer than the option"))
	}
	name := string(data[4 : 4+nameLen])
	rest := data[4+nameLen:]
	nreq := binary.BigEndian.Uint16(rest)
	if len(rest) != 2+2*int(nreq) {
		return nil, n.replyDone(opt, RepErrInvalid, []byte("information requests do not match their count"))
	}
	exp, err := n.open(name)
	if err != nil {
		// The error, logged by the server, names the store's files: the
		// client, who may be anyone who can connect, learns only that
		// the export cannot be read.
		return nil, n.replyDone(opt, RepErrUnknown, []byte(fmt.Sprintf("export %q cannot be read: the server's log says why", name)))
	}
	if exp == nil {
		return nil, n.replyDone(opt, RepErrUnknown, []byte("no export "+name+" (thinback serve lists them: nbd-client -l)"))
	}
	var b []byte
	b = binary.BigEndian.AppendUint16(b, InfoExport)
	b = binary.BigEndian.AppendUint64(b, uint64(exp.Size()))
	b = binary.BigEndian.AppendUint16(b, transmitFlags)
	err = n.reply(opt, RepInfo, b)
	if err == nil {
		b = binary.BigEndian.AppendUint16(nil, InfoBlockSize)
		b = binary.BigEndian.AppendUint32(b, 1)       // minimum
		b = binary.BigEndian.AppendUint32(b, 64<<10)  // preferred: a block of the store
		b = binary.BigEndian.AppendUint32(b, MaxRead) // maximum
		err = n.reply(opt, RepInfo, b)
	}
	if err == nil {
		err = n.replyDone(opt, RepAck, nil)
	}
	if err != nil {
		exp.Close()
		return nil, err
	}
	return exp, nil
}

func (n *conn) reply(opt, typ uint32, data []byte) error {
	if err := n.put(uint64(RepMagic), opt, typ, uint32(len(data))); err != nil {
		return err
	}
	_, err := n.w.Write(data)
	return err
}

func (n *conn) replyDone(opt, typ uint32, data []byte) error {
	if err := n.reply(opt, typ, data); err != nil {
		return err
	}
	return n.flush()
}

// transmit serves requests until NBD_CMD_DISC or the end of the
// connection. Reads are served concurrently (their replies carry the
// request's handle), as many as the server's read budget allows.
func (n *conn) transmit(exp Export) error {
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
				return errClosed
			}
			return fmt.Errorf("reading a request: %w", err)
		}
		if req.Magic != RequestMagic {
			return fmt.Errorf("a request with the magic %#x", req.Magic)
		}
		switch req.Type {
		case CmdRead:
			if req.Length > MaxRead || req.Offset > uint64(size) || uint64(req.Length) > uint64(size)-req.Offset {
				if err := n.simple(req.Handle, EINVAL, nil); err != nil {
					return err
				}
				continue
			}
			units := max(1, (int64(req.Length)+ReadSlot-1)/ReadSlot)
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
					code, buf = EIO, nil // the reader logged the damaged record
				}
				if err := n.simple(req.Handle, code, buf); err != nil {
					n.c.Close() // the next request read fails and ends the connection
				}
			}()
		case CmdDisc:
			return errClosed
		case CmdFlush:
			if err := n.simple(req.Handle, 0, nil); err != nil {
				return err
			}
		case CmdWrite:
			// Read and drop the data, so the stream stays in step.
			if _, err := io.CopyN(io.Discard, n.r, int64(req.Length)); err != nil {
				return fmt.Errorf("reading a write request's data: %w", err)
			}
			if err := n.simple(req.Handle, EPERM, nil); err != nil {
				return err
			}
		default: // trim, write zeroes, cache, block status...: not here
			code := uint32(EINVAL)
			if req.Type == CmdTrim || req.Type == CmdWriteZeroes {
				code = EPERM
			}
			if err := n.simple(req.Handle, code, nil); err != nil {
				return err
			}
		}
	}
}

// simple writes a simple reply, with data for a successful read.
func (n *conn) simple(handle uint64, code uint32, data []byte) error {
	n.wmu.Lock()
	defer n.wmu.Unlock()
	n.c.SetWriteDeadline(time.Now().Add(n.srv.opts.ReplyTimeout))
	if err := n.put(uint32(ReplyMagic), code, handle); err != nil {
		return err
	}
	if code == 0 && len(data) > 0 {
		if _, err := n.w.Write(data); err != nil {
			return err
		}
	}
	return n.flush()
}
