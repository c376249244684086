package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
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
	nbdOptGo         = 7

	nbdRepAck        = 1
	nbdRepServer     = 2
	nbdRepInfo       = 3
	nbdRepErrUnsup   = 1<<31 + 1
	nbdRepErrInvalid = 1<<31 + 3
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
	// nbdInflight bounds the reads served at once per connection, in
	// units of nbdSlot bytes (a read takes one unit per started nbdSlot):
	// a client cannot make the server hold more than 64 MiB of reads.
	nbdInflight = 16
	nbdSlot     = 4 << 20
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

// serveNBD serves the connections of l until ctx is done, then closes
// them and returns once every one has ended.
func serveNBD(ctx context.Context, l net.Listener, exports nbdExports, logf func(string, ...any)) error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := make(map[net.Conn]bool)
	stop := context.AfterFunc(ctx, func() {
		l.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	defer stop()
	defer wg.Wait()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("nbd: accepting a connection: %w", err)
		}
		mu.Lock()
		conns[c] = true
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				c.Close()
			}()
			if err := serveNBDConn(c, exports); err != nil && !errors.Is(err, errNBDClosed) && ctx.Err() == nil {
				logf("nbd: %s: %v", c.RemoteAddr(), err)
			}
		}()
	}
}

// nbdConn is one client connection.
type nbdConn struct {
	c       net.Conn
	r       *bufio.Reader
	wmu     sync.Mutex // one reply at a time
	w       *bufio.Writer
	exports nbdExports
}

func serveNBDConn(c net.Conn, exports nbdExports) error {
	n := &nbdConn{c: c, r: bufio.NewReader(c), w: bufio.NewWriter(c), exports: exports}
	exp, err := n.handshake()
	if err != nil {
		return err
	}
	defer exp.Close()
	return n.transmit(exp)
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
		switch hdr.Option {
		case nbdOptExportName:
			exp, err := n.exports.Open(string(data))
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
			names, err := n.exports.List()
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
	exp, err := n.exports.Open(name)
	if err != nil {
		return nil, n.replyDone(opt, nbdRepErrUnknown, []byte(err.Error()))
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
// request's handle), up to nbdInflight at once.
func (n *nbdConn) transmit(exp nbdExport) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, nbdInflight)
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
			units := max(1, (int(req.Length)+nbdSlot-1)/nbdSlot)
			for range units { // only this goroutine takes units: no deadlock
				slots <- struct{}{}
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() {
					for range units {
						<-slots
					}
				}()
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
