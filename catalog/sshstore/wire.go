package sshstore

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"syscall"

	"github.com/thinback/thinback/catalog"
)

// Protocol names the store protocol and Version its version, exchanged
// first by both sides: a peer of another version is refused (ErrVersion)
// before anything else is said.
const (
	Protocol = "thinback-store"
	Version  = 1
)

// Sizes that bound what either side holds for one message.
const (
	// chunkSize is the most bytes of a file one message carries, and the
	// block in which a DeltaReader reads ahead: each block is one round
	// trip, so it is large.
	chunkSize = 1 << 20
	// listChunk is the most records one message of a list carries.
	listChunk = 256
	// maxMessage bounds the bytes read for one message: a peer that
	// sends more is cut off (ErrProtocol), whatever length it announced.
	maxMessage = 4 << 20
	// maxItems bounds the records of one list (files, snapshots,
	// problems), maxSlots the key slots of a store.
	maxItems = 1 << 22
	maxSlots = 1 << 10
	// maxOpen bounds the files, locks and writes one client has open.
	maxOpen = 256
)

var (
	// ErrProtocol: the peer sent something this protocol does not allow
	// (an unknown request, an oversized or malformed message, a handle
	// it was never given). The connection is unusable after it.
	ErrProtocol = errors.New("sshstore: protocol error")
	// ErrVersion: the peer speaks another version of the store protocol.
	ErrVersion = errors.New("sshstore: store protocol version not supported")
	// ErrClosed: the client was closed, or the connection failed before.
	ErrClosed = errors.New("sshstore: connection closed")
)

// op is a request's kind.
type op uint8

const (
	opHello op = iota + 1
	opView
	opLockVolume
	opLockKeySlots
	opUnlock
	opWriteDelta
	opWriteVolumeDelta
	opReplaceDelta
	opData
	opCommit
	opAbort
	opOpen
	opReadAt
	opCloseFile
	opFiles
	opRemove
	opSetRetention
	opRebuild
	opCleanTemp
	opRemoveOrphans
	opCheck
	opKeySlots
	opPutKeySlot
	opRemoveKeySlot
	opReply // every answer
	opLast
)

// msg is every message, both ways: gob leaves out the fields a message
// does not set. It holds no maps and no interfaces, so a decoder never
// allocates from a count the peer chose beyond what the message's bytes
// hold, and those are bounded by maxMessage.
type msg struct {
	Op      op
	Proto   string
	Version int

	Handle uint64 // a lock, write or open file of the client's
	Volume string
	ID     string
	File   string
	Names  []string // remove (ReplaceDelta), removed files (CleanTemp, RemoveOrphans)
	Vol    catalog.Volume
	Snap   catalog.Snapshot
	Snaps  []catalog.Snapshot
	Vols   []catalog.Volume
	Files  []catalog.DeltaFile
	Ret    catalog.Retention
	Slots  []slot
	Checks []wireCheck
	Data   []byte
	Off    int64
	Len    int
	Size   int64
	Gen    generation
	Same   bool // View: the client's copy is current
	More   bool // more messages of this list or file follow
	Err    *wireError
}

// slot is one key slot object.
type slot struct {
	ID   string
	Data []byte
}

// generation identifies a state of the server's catalog file: which file
// (a catalog removed and made again starts its transaction ids over) and
// its last committed transaction.
type generation struct {
	Dev, Ino uint64
	Tx       uint64
}

// kinds are the errors whose identity crosses the wire: a server's error
// arrives as its message and the indexes of the kinds it matches
// (errors.Is), and the client's copy matches the same ones. The order is
// part of the protocol: append only.
var kinds = []error{
	catalog.ErrBusy, catalog.ErrVersion, catalog.ErrInvalid, catalog.ErrDamaged, catalog.ErrFormat,
	catalog.ErrCorrupt, catalog.ErrInvalidRecord, catalog.ErrNotFound, catalog.ErrExist, catalog.ErrInUse,
	catalog.ErrReadOnly, catalog.ErrLocked, catalog.ErrNoSpace, catalog.ErrTooLarge, catalog.ErrLeftover,
	catalog.ErrNotOwn,
	catalog.ErrIndex, catalog.ErrUnknownVolume, catalog.ErrMissingParent, catalog.ErrParentVolume,
	catalog.ErrParentOrder, catalog.ErrParentSize, catalog.ErrCycle, catalog.ErrBrokenChain,
	catalog.ErrDuplicateSeq, catalog.ErrDuplicateFile, catalog.ErrNoDigest, catalog.ErrFileMissing,
	catalog.ErrFileSize, catalog.ErrFileDigest, catalog.ErrOrphan, catalog.ErrUnknownSnapshot,
	catalog.ErrTargetVolume,
	fs.ErrExist, fs.ErrNotExist, fs.ErrPermission, syscall.ENOSPC, syscall.EIO, syscall.EFBIG,
	ErrProtocol,
}

// wireError is an error as it crosses the wire.
type wireError struct {
	Msg   string
	Kinds []uint8
}

func toWire(err error) *wireError {
	if err == nil {
		return nil
	}
	w := &wireError{Msg: err.Error()}
	for i, k := range kinds {
		if errors.Is(err, k) {
			w.Kinds = append(w.Kinds, uint8(i))
		}
	}
	return w
}

// RemoteError is an error of the server's store, as the client receives
// it: its message, and errors.Is matches what the original matched among
// the catalog's errors and the file system's.
type RemoteError struct {
	Msg   string
	kinds []error
}

func (e *RemoteError) Error() string { return e.Msg }

// Is matches the errors the server's error matched.
func (e *RemoteError) Is(target error) bool {
	for _, k := range e.kinds {
		if k == target {
			return true
		}
	}
	return false
}

func (w *wireError) err() error {
	if w == nil {
		return nil
	}
	e := &RemoteError{Msg: w.Msg}
	for _, i := range w.Kinds {
		if int(i) < len(kinds) {
			e.kinds = append(e.kinds, kinds[i])
		}
	}
	return e
}

// wireCheck is a catalog.CheckError as it crosses the wire.
type wireCheck struct {
	Problem                                uint8
	Volume, Snapshot, Target, File, Detail string
	Err                                    *wireError
	Plain                                  *wireError // a problem that is not a CheckError
}

func checkToWire(p error) wireCheck {
	var ce *catalog.CheckError
	if !errors.As(p, &ce) {
		return wireCheck{Plain: toWire(p)}
	}
	w := wireCheck{Problem: 255, Volume: ce.Volume, Snapshot: ce.Snapshot, Target: ce.Target, File: ce.File,
		Detail: ce.Detail, Err: toWire(ce.Err)}
	for i, k := range kinds {
		if ce.Problem == k {
			w.Problem = uint8(i)
		}
	}
	return w
}

func (w wireCheck) problem() error {
	if w.Plain != nil {
		return w.Plain.err()
	}
	ce := &catalog.CheckError{Volume: w.Volume, Snapshot: w.Snapshot, Target: w.Target, File: w.File, Detail: w.Detail}
	if int(w.Problem) < len(kinds) {
		ce.Problem = kinds[w.Problem]
	} else {
		ce.Problem = catalog.ErrCorrupt
	}
	if w.Err != nil {
		ce.Err = w.Err.err()
	}
	return ce
}

// budget counts the bytes read from the connection for one message and
// fails the read past the limit: gob reads a message whole, as long as
// its sender said (up to gigabytes), so the bound must be below it.
type budget struct {
	r    io.Reader
	left int64
	err  error // the connection's own failure, other than EOF
}

func (b *budget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("%w: a message longer than %d bytes", ErrProtocol, maxMessage)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil && err != io.EOF && b.err == nil {
		b.err = err
	}
	return n, err
}

// codec reads and writes the messages of one connection. Reads and writes
// are each used by one goroutine at a time.
type codec struct {
	in  *budget
	dec *gob.Decoder
	enc *gob.Encoder
}

func newCodec(rw io.ReadWriter) *codec {
	in := &budget{r: rw}
	return &codec{in: in, dec: gob.NewDecoder(in), enc: gob.NewEncoder(rw)}
}

// recv reads one message. A message the decoder rejects, or that is too
// long, or whose op is unknown, is ErrProtocol; the connection's own
// failures (EOF when the peer went away) are returned as they are.
func (c *codec) recv() (*msg, error) {
	// The decoder reads through a bufio.Reader of 4 KiB, which may have
	// read that much of the next message ahead.
	c.in.left = maxMessage + 4096
	var m msg
	if err := c.dec.Decode(&m); err != nil {
		if c.in.err != nil {
			return nil, c.in.err
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrProtocol) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrProtocol, err)
	}
	if m.Op == 0 || m.Op >= opLast {
		return nil, fmt.Errorf("%w: unknown message %d", ErrProtocol, m.Op)
	}
	if len(m.Data) > chunkSize {
		return nil, fmt.Errorf("%w: %d bytes in one message, more than %d", ErrProtocol, len(m.Data), chunkSize)
	}
	return &m, nil
}

func (c *codec) send(m *msg) error {
	if m.Op == 0 {
		m.Op = opReply
	}
	return c.enc.Encode(m)
}
