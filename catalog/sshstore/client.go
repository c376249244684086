package sshstore

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/thinback/thinback/catalog"
)

// Client is a store served by Serve at the other end of a connection
// (thinback's agent on another host, over ssh). It implements
// catalog.Repository: records are read from a local copy of the server's
// catalog, fetched again whenever the server's has changed; delta files
// are streamed both ways; locks are held by the server for as long as the
// client holds them, or the connection lives.
//
// A Client's methods are safe for concurrent use: requests are answered
// one at a time, in order.
type Client struct {
	name string
	conn io.ReadWriteCloser

	mu     sync.Mutex // one request and its answer at a time
	c      *codec
	err    error // sticky: the connection is unusable after it
	closed bool

	viewMu sync.Mutex // the catalog copy
	dir    string     // the copy's temp directory, made on first View
	gen    generation
	have   bool // the copy is of gen
}

var _ catalog.Repository = (*Client)(nil)

// NewClient says hello to the server at the other end of conn, and
// returns the store it serves. name names the store in messages (its
// address). Close closes conn.
func NewClient(conn io.ReadWriteCloser, name string) (*Client, error) {
	cl := &Client{name: name, conn: conn, c: newCodec(conn)}
	m, err := cl.call(&msg{Op: opHello, Proto: Protocol, Version: Version})
	if err == nil && (m.Op != opHello || m.Proto != Protocol) {
		err = fmt.Errorf("%w: the server did not answer with the store protocol's hello", ErrProtocol)
	}
	if err == nil && m.Version != Version {
		err = fmt.Errorf("%w: %s speaks version %d, this thinback %d: use the same thinback on both hosts", ErrVersion, name, m.Version, Version)
	}
	if m != nil && m.Err != nil {
		// The server refused, saying why: its exit says no more.
		_ = conn.Close()
		return nil, fmt.Errorf("store %s: %w", name, err)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("store %s: %w", name, err), conn.Close())
	}
	return cl, nil
}

// String returns the store's address as given to NewClient.
func (cl *Client) String() string { return cl.name }

// fail makes err the connection's sticky error.
func (cl *Client) fail(err error) error {
	if cl.err == nil {
		cl.err = fmt.Errorf("store %s: %w", cl.name, err)
	}
	return cl.err
}

// send sends one message without waiting for an answer; cl.mu is held.
func (cl *Client) send(m *msg) error {
	if cl.err != nil {
		return cl.err
	}
	if err := cl.c.send(m); err != nil {
		return cl.fail(fmt.Errorf("the connection failed: %w: %v", ErrClosed, err))
	}
	return nil
}

// recv reads one answer; cl.mu is held. The answer's error is returned
// as the server's error (a RemoteError) with the message.
func (cl *Client) recv() (*msg, error) {
	if cl.err != nil {
		return nil, cl.err
	}
	m, err := cl.c.recv()
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, cl.fail(fmt.Errorf("the connection closed: %w", ErrClosed))
	}
	if err != nil && !errors.Is(err, ErrProtocol) {
		return nil, cl.fail(fmt.Errorf("the connection failed: %w: %v", ErrClosed, err))
	}
	if err != nil {
		return nil, cl.fail(err)
	}
	if m.Op != opReply && m.Op != opHello {
		return nil, cl.fail(fmt.Errorf("%w: a request (%d) where an answer was due", ErrProtocol, m.Op))
	}
	return m, m.Err.err()
}

// call sends a request and reads its answer.
func (cl *Client) call(m *msg) (*msg, error) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(m); err != nil {
		return nil, err
	}
	return cl.recv()
}

// callList sends a request and reads the messages of its answer until
// one has More unset, giving each to add.
func (cl *Client) callList(m *msg, add func(*msg) error) error {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if err := cl.send(m); err != nil {
		return err
	}
	for {
		a, err := cl.recv()
		if a == nil {
			return err
		}
		if aerr := add(a); aerr != nil {
			return cl.fail(aerr)
		}
		if err != nil || !a.More {
			return err
		}
	}
}

// Close releases the store: the server releases the client's locks and
// ends when the connection closes. The local copy of the catalog is
// removed.
func (cl *Client) Close() error {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return nil
	}
	cl.closed = true
	if cl.err == nil {
		cl.err = fmt.Errorf("store %s: %w", cl.name, ErrClosed)
	}
	cl.mu.Unlock()
	err := cl.conn.Close()
	cl.viewMu.Lock()
	defer cl.viewMu.Unlock()
	if cl.dir != "" {
		err = errors.Join(err, os.RemoveAll(cl.dir))
		cl.dir = ""
	}
	return err
}

// LocalFiles returns the local copy of the catalog: the store's own files
// are on another host.
func (cl *Client) LocalFiles([]catalog.Snapshot) []catalog.LocalFile {
	cl.viewMu.Lock()
	defer cl.viewMu.Unlock()
	if cl.dir == "" {
		return nil
	}
	return []catalog.LocalFile{{What: "catalog cache", Path: cl.dir, Dir: true}}
}

// LockVolume takes the volume's lock in the server's store. The server
// holds it until unlock, or until the connection ends.
func (cl *Client) LockVolume(volume string) (func() error, error) {
	return cl.lock(&msg{Op: opLockVolume, Volume: volume})
}

// LockKeySlots takes the lock of the server's key slots, as LockVolume.
func (cl *Client) LockKeySlots() (func() error, error) { return cl.lock(&msg{Op: opLockKeySlots}) }

func (cl *Client) lock(m *msg) (func() error, error) {
	a, err := cl.call(m)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	var uerr error
	return func() error {
		once.Do(func() {
			_, uerr = cl.call(&msg{Op: opUnlock, Handle: a.Handle})
		})
		return uerr
	}, nil
}

// WriteDelta implements catalog.DeltaWriter: the bytes write writes go to
// the server in chunks, where the store writes them to a temp file; its
// record follows them, and the server's store commits.
func (cl *Client) WriteDelta(volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return cl.write(&msg{Op: opWriteDelta, Volume: volume, ID: id}, write)
}

// WriteVolumeDelta implements catalog.DeltaWriter, as WriteDelta.
func (cl *Client) WriteVolumeDelta(vol catalog.Volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return cl.write(&msg{Op: opWriteVolumeDelta, Vol: vol, Volume: vol.Name, ID: id}, write)
}

// ReplaceDelta implements catalog.DeltaWriter, as WriteDelta.
func (cl *Client) ReplaceDelta(volume, id string, remove []string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	if len(remove) > listChunk {
		return catalog.Snapshot{}, fmt.Errorf("store %s: a replace that removes %d snapshots at once, more than %d", cl.name, len(remove), listChunk)
	}
	return cl.write(&msg{Op: opReplaceDelta, Volume: volume, ID: id, Names: remove}, write)
}

func (cl *Client) write(start *msg, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	a, err := cl.call(start)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	h := a.Handle
	cw := &chunkWriter{send: func(p []byte, _ bool) error {
		if len(p) == 0 {
			return nil
		}
		cl.mu.Lock()
		defer cl.mu.Unlock()
		return cl.send(&msg{Op: opData, Handle: h, Data: p})
	}}
	rec, werr := write(cw)
	if werr == nil {
		werr = cw.finish()
	}
	if werr != nil {
		if _, aerr := cl.call(&msg{Op: opAbort, Handle: h}); aerr != nil {
			return catalog.Snapshot{}, fmt.Errorf("%w; and the store: %v", werr, aerr)
		}
		return catalog.Snapshot{}, werr
	}
	a, err = cl.call(&msg{Op: opCommit, Handle: h, Snap: rec})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	return a.Snap, nil
}

// Remove deletes a snapshot in the server's store (see Store.Remove).
func (cl *Client) Remove(volume, id string) error {
	_, err := cl.call(&msg{Op: opRemove, Volume: volume, ID: id})
	return err
}

// SetRetention records a volume's prune policy in the server's store.
func (cl *Client) SetRetention(volume string, r catalog.Retention) error {
	_, err := cl.call(&msg{Op: opSetRetention, Volume: volume, Ret: r})
	return err
}

// Rebuild replaces the snapshot records of the server's store (see
// Store.Rebuild); the lists go in chunks.
func (cl *Client) Rebuild(vols []catalog.Volume, snaps []catalog.Snapshot) error {
	if len(vols) > maxItems || len(snaps) > maxItems {
		return fmt.Errorf("store %s: a rebuild of more than %d records", cl.name, maxItems)
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for {
		nv, ns := min(len(vols), listChunk), min(len(snaps), listChunk)
		m := &msg{Op: opRebuild, Vols: vols[:nv], Snaps: snaps[:ns], More: nv < len(vols) || ns < len(snaps)}
		if err := cl.send(m); err != nil {
			return err
		}
		vols, snaps = vols[nv:], snaps[ns:]
		if !m.More {
			break
		}
	}
	_, err := cl.recv()
	return err
}

// Files lists the delta files of the server's store.
func (cl *Client) Files() ([]catalog.DeltaFile, error) {
	var files []catalog.DeltaFile
	err := cl.callList(&msg{Op: opFiles}, func(m *msg) error {
		if len(files)+len(m.Files) > maxItems {
			return fmt.Errorf("%w: more than %d files", ErrProtocol, maxItems)
		}
		files = append(files, m.Files...)
		return nil
	})
	return files, err
}

// CleanTemp removes what dead writers left in the server's store.
func (cl *Client) CleanTemp() ([]string, error) { return cl.names(opCleanTemp) }

// RemoveOrphans removes the files no record references in the server's
// store.
func (cl *Client) RemoveOrphans() ([]string, error) { return cl.names(opRemoveOrphans) }

func (cl *Client) names(o op) ([]string, error) {
	var names []string
	err := cl.callList(&msg{Op: o}, func(m *msg) error {
		if len(names)+len(m.Names) > maxItems {
			return fmt.Errorf("%w: more than %d names", ErrProtocol, maxItems)
		}
		names = append(names, m.Names...)
		return nil
	})
	return names, err
}

// Check checks the server's store: its records and files there, then,
// with opts.Verify, the contents of every file that passed, read here
// through OpenDelta or OpenStream (the server has no key to an
// encrypted store's files, and the client trusts its own reading).
func (cl *Client) Check(opts catalog.CheckOptions) ([]error, error) {
	var problems []error
	var passed []catalog.Snapshot
	err := cl.callList(&msg{Op: opCheck}, func(m *msg) error {
		if len(problems)+len(m.Checks) > maxItems || len(passed)+len(m.Snaps) > maxItems {
			return fmt.Errorf("%w: more than %d problems or files", ErrProtocol, maxItems)
		}
		for _, c := range m.Checks {
			problems = append(problems, c.problem())
		}
		passed = append(passed, m.Snaps...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if opts.Verify == nil {
		return problems, nil
	}
	for _, sn := range passed {
		if err := opts.Verify(sn, sn.File); err != nil {
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrFileDigest, Volume: sn.Volume,
				Snapshot: sn.ID, File: sn.File, Err: err})
		}
	}
	return problems, nil
}

// KeySlots returns the key slots of the server's store.
func (cl *Client) KeySlots() (map[string][]byte, error) {
	slots := map[string][]byte{}
	err := cl.callList(&msg{Op: opKeySlots}, func(m *msg) error {
		for _, s := range m.Slots {
			if len(slots) >= maxSlots || len(s.Data) > catalog.MaxKeySlotSize || catalog.ValidKeySlotID(s.ID) != nil {
				return fmt.Errorf("%w: a key slot that is not one (%d bytes, id %q)", ErrProtocol, len(s.Data), s.ID)
			}
			slots[s.ID] = s.Data
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return slots, nil
}

// PutKeySlot stores a new key slot in the server's store.
func (cl *Client) PutKeySlot(id string, data []byte) error {
	if err := catalog.ValidKeySlotID(id); err != nil {
		return err
	}
	if len(data) > catalog.MaxKeySlotSize {
		return fmt.Errorf("store %s: key slot %s: %d bytes, more than %d", cl.name, id, len(data), catalog.MaxKeySlotSize)
	}
	_, err := cl.call(&msg{Op: opPutKeySlot, Slots: []slot{{ID: id, Data: data}}})
	return err
}

// RemoveKeySlot deletes a key slot of the server's store.
func (cl *Client) RemoveKeySlot(id string) error {
	_, err := cl.call(&msg{Op: opRemoveKeySlot, ID: id})
	return err
}
