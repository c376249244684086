// Package replica is thinback replicate's protocol and the logic of its two
// sides: the sender, on the host of the source volume, and the receiver,
// the agent run on the host of the replica (thinback agent replicate),
// speaking over the connection the remote package's handshake set up.
//
// # Protocol
//
// Messages are gob values, one encoder and one decoder per direction, in
// this order:
//
//	sender   → Query{Version}
//	receiver → Status{Version, Holding | Err}
//	sender   → Transfer            (or nothing: it closes, having decided not to send)
//	sender   → Chunk{Data}... Chunk{End}   the delta file's bytes
//	receiver → Reply{Holding, Applied | Err}
//
// Version is this package's protocol version, checked by both sides on top
// of the transport's own: a change to a message that an older peer would
// misread bumps it. The receiver decides nothing on the sender's word that
// it can check itself: it refuses an incremental whose base it does not
// hold and a modified target unless told to roll it back or to overwrite it
// with a full.
//
// # Caveats
//
// The delta bytes go as gob chunks of at most ChunkSize bytes, so the bytes
// on the wire are the delta file's plus a few bytes per chunk.
package replica

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
)

// Version is the replicate protocol's version.
const Version = 1

// ChunkSize bounds the delta bytes of one Chunk message.
const ChunkSize = 256 << 10

// Kind is what a replica target is.
type Kind string

// The kinds of target. A thin LV keeps replica snapshots that say what it
// holds; the others keep the state file of apply and receive --to.
const (
	KindThin    Kind = "thin LV"
	KindThick   Kind = "thick LV"
	KindDevice  Kind = "block device"
	KindFile    Kind = "file"
	KindMissing Kind = "missing"
)

// Query is the sender's first message.
type Query struct {
	Version int
}

// Status is the receiver's answer to Query.
type Status struct {
	Version int
	Err     *Failure
	Holding Holding
}

// Holding is what a target holds.
type Holding struct {
	Kind Kind
	// Target names the target on its host, for messages.
	Target string
	Size   int64
	// Snapshot is the source snapshot the target holds (a zero ID: none
	// known).
	Snapshot archive.Snapshot
	// Modified, when set, says how the target was changed since it was
	// last brought to Snapshot.
	Modified *Change
	// Partial is an interrupted transfer the target can continue.
	Partial *Partial
	// Replicas are a thin target's replica snapshots, oldest first.
	Replicas []Replica
}

// Change says how a target was modified since its snapshot.
type Change struct {
	// Reason says it in words ("its size changed", "written to").
	Reason string
	// Offset and Length are the first changed range, Bytes all changed
	// bytes, when known (a thin target compared with its replica
	// snapshot); Length is 0 when unknown.
	Offset, Length, Bytes int64
}

// String says the change for messages.
func (c *Change) String() string {
	if c.Length == 0 {
		return c.Reason
	}
	return fmt.Sprintf("%s; %d bytes changed, the first at offset %d", c.Reason, c.Bytes, c.Offset)
}

// Partial is an interrupted transfer: the target is partly at Snapshot,
// applied from Parent (zero: a full); every byte below Done holds
// Snapshot's data durably.
type Partial struct {
	Snapshot archive.Snapshot
	Parent   archive.ID
	Done     int64
}

// Replica is a snapshot of a thin target, which holds source snapshot
// Source.
type Replica struct {
	Name   string
	Source archive.ID
	Time   time.Time
}

// Mode is what a transfer sends.
type Mode string

// The modes of a transfer.
const (
	Full        Mode = "full"
	Incremental Mode = "incremental"
	Resumed     Mode = "resumed"
)

// Transfer announces the delta that follows.
type Transfer struct {
	Mode     Mode
	Snapshot archive.Snapshot // the source snapshot sent
	Parent   archive.ID       // its base; zero for a full
	Size     int64            // the volume's size
	// From is where a resumed transfer starts: the bytes below it are not
	// sent again.
	From int64
	// Rollback puts a modified thin target back to its replica snapshot
	// first; Overwrite lets a full replace a modified target of another
	// kind.
	Rollback, Overwrite bool
	// Create makes a missing target of Size bytes.
	Create bool
	// Keep is how many replica snapshots older than the new one a thin
	// target keeps.
	Keep int
}

// Chunk carries delta bytes; End closes the stream.
type Chunk struct {
	Data []byte
	End  bool
}

// Applied is what the receiver did with a transfer.
type Applied struct {
	DataBytes, ZeroBytes int64
	// Rolled is set when the target was rolled back first, Created when it
	// was created.
	Rolled, Created bool
	// Removed names the replica snapshots rotation removed; Warnings are
	// failures that did not fail the run.
	Removed  []string
	Warnings []string
	// Snapback names the receiver's snapback file, if it kept one.
	Snapback string
	// The receiver's phases.
	ApplySeconds, CommitSeconds float64
}

// Reply ends a transfer.
type Reply struct {
	Err     *Failure
	Holding Holding
	Applied Applied
}

// Failure is an error of the receiver: its message and the exit code the
// receiving thinback gives it.
type Failure struct {
	Code int
	Msg  string
}

// RemoteError is the receiver's failure as the sender reports it.
type RemoteError struct {
	Host string // "" on this machine
	Code int
	Msg  string
}

func (e *RemoteError) Error() string {
	if e.Host == "" {
		return "receiver: " + e.Msg
	}
	return e.Host + ": " + e.Msg
}

// ExitCode is the code the receiver would have exited with.
func (e *RemoteError) ExitCode() int { return e.Code }

// ErrProtocol is a peer that does not speak this protocol, or broke it.
var ErrProtocol = errors.New("replicate protocol error")

// chunkWriter sends what is written to it as Chunk messages.
type chunkWriter struct {
	enc interface{ Encode(any) error }
	buf []byte
	n   int64 // delta bytes sent
}

func (w *chunkWriter) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(len(p), ChunkSize-len(w.buf))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		if len(w.buf) == ChunkSize {
			if err := w.flush(); err != nil {
				return total - len(p) - k, err
			}
		}
	}
	return total, nil
}

func (w *chunkWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	if err := w.enc.Encode(Chunk{Data: w.buf}); err != nil {
		return err
	}
	w.n += int64(len(w.buf))
	w.buf = w.buf[:0]
	return nil
}

// close sends what is buffered and the end of the stream.
func (w *chunkWriter) close() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.enc.Encode(Chunk{End: true})
}

// chunkReader reads the delta bytes of Chunk messages; the end of the
// stream is io.EOF, a connection closed before it io.ErrUnexpectedEOF.
type chunkReader struct {
	dec  interface{ Decode(any) error }
	buf  []byte
	done bool
	n    int64
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		var c Chunk
		if err := r.dec.Decode(&c); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return 0, fmt.Errorf("the delta stream from the sender: %w", err)
		}
		if c.End {
			r.done = true
		}
		r.buf = c.Data
		r.n += int64(len(c.Data))
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// drain reads to the end of the stream, which must hold nothing more.
func (r *chunkReader) drain() error {
	n, err := io.Copy(io.Discard, r)
	if err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("%d bytes after the end of the delta file: %w", n, ErrProtocol)
	}
	return nil
}

// countingConn counts the bytes that pass a connection both ways.
type countingConn struct {
	rw      io.ReadWriter
	in, out int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.rw.Read(p)
	c.in += int64(n)
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.rw.Write(p)
	c.out += int64(n)
	return n, err
}
