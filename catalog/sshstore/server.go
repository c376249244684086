package sshstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/thinback/thinback/catalog"
)

// Serve answers one client's requests on conn with the directory store s
// until the client goes away (EOF: nil) or breaks the protocol
// (ErrProtocol), then releases everything the client held: its locks,
// its open files, and the temp files of writes it did not commit.
//
// Every name the client sends is checked by s as its own callers' are
// (volume names, snapshot ids, store-relative file names under volumes/,
// key slot ids), so the client reaches nothing outside the store's
// layout.
func Serve(ctx context.Context, conn io.ReadWriter, s *catalog.Store) (err error) {
	sv := &server{ctx: ctx, s: s, c: newCodec(conn), locks: map[uint64]func() error{},
		files: map[uint64]catalog.DeltaReader{}, writes: map[uint64]*pendingWrite{}}
	defer func() {
		if cerr := sv.release(); err == nil {
			err = cerr
		}
	}()
	if err := sv.hello(); err != nil {
		return err
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		m, err := sv.c.recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("sshstore: reading a request: %w", err)
		}
		if err := sv.handle(m); err != nil {
			return err
		}
	}
}

// Refuse answers a client's hello with err instead of serving it: the
// store could not be opened. The client's NewClient returns err, as a
// RemoteError matching what err matches.
func Refuse(conn io.ReadWriter, err error) error {
	c := newCodec(conn)
	m, rerr := c.recv()
	if rerr != nil {
		return fmt.Errorf("sshstore: reading the client's hello: %w", rerr)
	}
	if m.Op != opHello || m.Proto != Protocol {
		return fmt.Errorf("%w: the client did not start with the store protocol's hello", ErrProtocol)
	}
	return c.send(&msg{Op: opHello, Proto: Protocol, Version: Version, Err: toWire(err)})
}

type server struct {
	ctx    context.Context
	s      *catalog.Store
	c      *codec
	next   uint64
	locks  map[uint64]func() error
	files  map[uint64]catalog.DeltaReader
	writes map[uint64]*pendingWrite
	// rebuild collects the lists of a Rebuild sent in several messages.
	rebuildVols  []catalog.Volume
	rebuildSnaps []catalog.Snapshot
}

// pendingWrite is a WriteDelta, WriteVolumeDelta or ReplaceDelta in
// progress: the store's method runs in its own goroutine, its write
// callback reading the bytes the client sends (Data messages) from a
// pipe, until the client's Commit gives the record to return, or Abort
// or a lost connection makes it fail, leaving nothing.
type pendingWrite struct {
	pw   *io.PipeWriter
	rec  chan catalog.Snapshot // the record of Commit; closed by Abort
	done chan struct{}
	snap catalog.Snapshot
	err  error
	werr error // the first failure writing to the pipe: the store's
}

func (sv *server) hello() error {
	m, err := sv.c.recv()
	if err != nil {
		return fmt.Errorf("sshstore: reading the client's hello: %w", err)
	}
	if m.Op != opHello || m.Proto != Protocol {
		return fmt.Errorf("%w: the client did not start with the store protocol's hello", ErrProtocol)
	}
	if err := sv.c.send(&msg{Op: opHello, Proto: Protocol, Version: Version}); err != nil {
		return err
	}
	if m.Version != Version {
		return fmt.Errorf("%w: the client speaks version %d, this thinback %d: use the same thinback on both hosts", ErrVersion, m.Version, Version)
	}
	return nil
}

// release ends what the client left open: writes in progress fail (the
// store removes their temp files), files close, locks are released.
func (sv *server) release() error {
	var errs []error
	for h, w := range sv.writes {
		w.pw.CloseWithError(ErrClosed)
		close(w.rec)
		<-w.done
		delete(sv.writes, h)
	}
	for h, f := range sv.files {
		errs = append(errs, f.Close())
		delete(sv.files, h)
	}
	for h, unlock := range sv.locks {
		errs = append(errs, unlock())
		delete(sv.locks, h)
	}
	return errors.Join(errs...)
}

func (sv *server) handle(m *msg) error {
	switch m.Op {
	case opView:
		return sv.view(m)
	case opLockVolume, opLockKeySlots:
		var unlock func() error
		var err error
		if m.Op == opLockVolume {
			unlock, err = sv.s.LockVolume(m.Volume)
		} else {
			unlock, err = sv.s.LockKeySlots()
		}
		if err != nil {
			return sv.reply(&msg{Err: toWire(err)})
		}
		h, err := sv.handleFor(len(sv.locks))
		if err != nil {
			return errors.Join(err, unlock())
		}
		sv.locks[h] = unlock
		return sv.reply(&msg{Handle: h})
	case opUnlock:
		unlock, ok := sv.locks[m.Handle]
		if !ok {
			return fmt.Errorf("%w: unlock of a lock the client does not hold", ErrProtocol)
		}
		delete(sv.locks, m.Handle)
		return sv.reply(&msg{Err: toWire(unlock())})
	case opWriteDelta, opWriteVolumeDelta, opReplaceDelta:
		return sv.startWrite(m)
	case opData:
		w, ok := sv.writes[m.Handle]
		if !ok {
			return fmt.Errorf("%w: data for a write the client did not start", ErrProtocol)
		}
		if w.werr == nil {
			if _, err := w.pw.Write(m.Data); err != nil {
				w.werr = err // the store's failure: told at Commit
			}
		}
		return nil // no reply: the data streams
	case opCommit, opAbort:
		w, ok := sv.writes[m.Handle]
		if !ok {
			return fmt.Errorf("%w: end of a write the client did not start", ErrProtocol)
		}
		delete(sv.writes, m.Handle)
		if m.Op == opCommit {
			w.pw.Close()
			w.rec <- m.Snap
		} else {
			w.pw.CloseWithError(errAborted)
			close(w.rec)
		}
		<-w.done
		if m.Op == opAbort && errors.Is(w.err, errAborted) {
			w.err = nil // what the client asked for
		}
		return sv.reply(&msg{Snap: w.snap, Err: toWire(w.err)})
	case opOpen:
		f, err := sv.s.OpenDelta(m.File)
		if err != nil {
			return sv.reply(&msg{Err: toWire(err)})
		}
		size, err := f.Seek(0, io.SeekEnd)
		if err != nil {
			return errors.Join(sv.reply(&msg{Err: toWire(fmt.Errorf("sshstore: %s: %w", f.Name(), err))}), f.Close())
		}
		h, err := sv.handleFor(len(sv.files))
		if err != nil {
			return errors.Join(err, f.Close())
		}
		sv.files[h] = f
		return sv.reply(&msg{Handle: h, Size: size})
	case opReadAt:
		f, ok := sv.files[m.Handle]
		if !ok {
			return fmt.Errorf("%w: read of a file the client did not open", ErrProtocol)
		}
		if m.Len < 0 || m.Len > chunkSize || m.Off < 0 {
			return fmt.Errorf("%w: a read of %d bytes at %d", ErrProtocol, m.Len, m.Off)
		}
		buf := make([]byte, m.Len)
		n, err := f.ReadAt(buf, m.Off)
		if errors.Is(err, io.EOF) {
			err = nil
		}
		return sv.reply(&msg{Data: buf[:n], Err: toWire(err)})
	case opCloseFile:
		f, ok := sv.files[m.Handle]
		if !ok {
			return fmt.Errorf("%w: close of a file the client did not open", ErrProtocol)
		}
		delete(sv.files, m.Handle)
		return sv.reply(&msg{Err: toWire(f.Close())})
	case opFiles:
		files, err := sv.s.Files()
		if err != nil {
			return sv.reply(&msg{Err: toWire(err)})
		}
		return sendList(sv, files, func(m *msg, part []catalog.DeltaFile) { m.Files = part })
	case opRemove:
		return sv.reply(&msg{Err: toWire(sv.s.Remove(m.Volume, m.ID))})
	case opSetRetention:
		return sv.reply(&msg{Err: toWire(sv.s.SetRetention(m.Volume, m.Ret))})
	case opRebuild:
		if len(sv.rebuildVols)+len(m.Vols) > maxItems || len(sv.rebuildSnaps)+len(m.Snaps) > maxItems {
			return fmt.Errorf("%w: a rebuild of more than %d records", ErrProtocol, maxItems)
		}
		sv.rebuildVols = append(sv.rebuildVols, m.Vols...)
		sv.rebuildSnaps = append(sv.rebuildSnaps, m.Snaps...)
		if m.More {
			return nil
		}
		err := sv.s.Rebuild(sv.rebuildVols, sv.rebuildSnaps)
		sv.rebuildVols, sv.rebuildSnaps = nil, nil
		return sv.reply(&msg{Err: toWire(err)})
	case opCleanTemp, opRemoveOrphans:
		var removed []string
		var err error
		if m.Op == opCleanTemp {
			removed, err = sv.s.CleanTemp()
		} else {
			removed, err = sv.s.RemoveOrphans()
		}
		if err != nil {
			return sv.reply(&msg{Names: removed, Err: toWire(err)})
		}
		return sendList(sv, removed, func(m *msg, part []string) { m.Names = part })
	case opCheck:
		return sv.check()
	case opKeySlots:
		slots, err := sv.s.KeySlots()
		if err != nil {
			return sv.reply(&msg{Err: toWire(err)})
		}
		if len(slots) > maxSlots {
			return sv.reply(&msg{Err: toWire(fmt.Errorf("sshstore: store %s has %d key slots, more than %d", sv.s.Dir(), len(slots), maxSlots))})
		}
		// One slot a message: a slot is up to MaxKeySlotSize.
		var list []slot
		for id, data := range slots {
			list = append(list, slot{ID: id, Data: data})
		}
		for i, sl := range list {
			if err := sv.c.send(&msg{Slots: []slot{sl}, More: i < len(list)-1}); err != nil {
				return err
			}
		}
		if len(list) == 0 {
			return sv.reply(&msg{})
		}
		return nil
	case opPutKeySlot:
		if len(m.Slots) != 1 {
			return fmt.Errorf("%w: a key slot request without one slot", ErrProtocol)
		}
		return sv.reply(&msg{Err: toWire(sv.s.PutKeySlot(m.Slots[0].ID, m.Slots[0].Data))})
	case opRemoveKeySlot:
		return sv.reply(&msg{Err: toWire(sv.s.RemoveKeySlot(m.ID))})
	}
	return fmt.Errorf("%w: request %d out of place", ErrProtocol, m.Op)
}

var errAborted = errors.New("sshstore: the client abandoned the write")

func (sv *server) reply(m *msg) error { return sv.c.send(m) }

// handleFor gives a new handle, refusing more than maxOpen of a kind.
func (sv *server) handleFor(open int) (uint64, error) {
	if open >= maxOpen {
		return 0, fmt.Errorf("%w: more than %d files, locks or writes open at once", ErrProtocol, maxOpen)
	}
	sv.next++
	return sv.next, nil
}

// sendList sends a list in messages of listChunk items, all but the last
// with More set.
func sendList[T any](sv *server, list []T, set func(*msg, []T)) error {
	for {
		n := min(len(list), listChunk)
		m := &msg{More: n < len(list)}
		set(m, list[:n])
		if err := sv.c.send(m); err != nil {
			return err
		}
		list = list[n:]
		if !m.More {
			return nil
		}
	}
}

func (sv *server) startWrite(m *msg) error {
	h, err := sv.handleFor(len(sv.writes))
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	w := &pendingWrite{pw: pw, rec: make(chan catalog.Snapshot, 1), done: make(chan struct{})}
	write := func(out io.Writer) (catalog.Snapshot, error) {
		if _, err := io.Copy(out, pr); err != nil {
			pr.CloseWithError(err) // the client's next data fails at once
			return catalog.Snapshot{}, err
		}
		rec, ok := <-w.rec
		if !ok {
			return catalog.Snapshot{}, errAborted
		}
		return rec, nil
	}
	go func() {
		defer close(w.done)
		switch m.Op {
		case opWriteDelta:
			w.snap, w.err = sv.s.WriteDelta(m.Volume, m.ID, write)
		case opWriteVolumeDelta:
			w.snap, w.err = sv.s.WriteVolumeDelta(m.Vol, m.ID, write)
		default:
			w.snap, w.err = sv.s.ReplaceDelta(m.Volume, m.ID, m.Names, write)
		}
		// A write that failed before the bytes ended: what the client
		// still sends is dropped.
		pr.CloseWithError(errAborted)
	}()
	sv.writes[h] = w
	return sv.reply(&msg{Handle: h})
}

// view answers the client's question whether its copy of the catalog is
// current and, when it is not, sends the catalog as it is now, in
// chunks, from one read transaction.
func (sv *server) view(m *msg) error {
	var sent bool
	err := sv.s.View(func(tx *catalog.Tx) error {
		gen := generation{Tx: tx.Generation()}
		if fi, err := os.Stat(sv.s.DBPath()); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				gen.Dev, gen.Ino = uint64(st.Dev), st.Ino
			}
		}
		sent = true
		if gen == m.Gen && gen.Tx != 0 {
			return sv.c.send(&msg{Gen: gen, Same: true})
		}
		cw := &chunkWriter{send: func(p []byte, more bool) error {
			return sv.c.send(&msg{Gen: gen, Data: p, More: more})
		}}
		if _, err := tx.WriteTo(cw); err != nil {
			return err
		}
		return cw.finish()
	})
	if err != nil && !sent {
		return sv.reply(&msg{Err: toWire(err)})
	}
	return err
}

// check runs the store's check with a Verify that only lists the files
// that passed the checks of existence and size: the client verifies
// their contents, reading them through the connection with its own key.
func (sv *server) check() error {
	var passed []catalog.Snapshot
	problems, err := sv.s.Check(catalog.CheckOptions{Verify: func(sn catalog.Snapshot, _ string) error {
		if len(passed) < maxItems {
			passed = append(passed, sn)
		}
		return nil
	}})
	if err != nil {
		return sv.reply(&msg{Err: toWire(err)})
	}
	checks := make([]wireCheck, len(problems))
	for i, p := range problems {
		checks[i] = checkToWire(p)
	}
	for {
		nc, np := min(len(checks), listChunk), min(len(passed), listChunk)
		m := &msg{Checks: checks[:nc], Snaps: passed[:np], More: nc < len(checks) || np < len(passed)}
		if err := sv.c.send(m); err != nil {
			return err
		}
		checks, passed = checks[nc:], passed[np:]
		if !m.More {
			return nil
		}
	}
}

// chunkWriter cuts a byte stream into messages of chunkSize bytes; the
// last one (finish) has More unset, even if it is empty.
type chunkWriter struct {
	buf  []byte
	send func(p []byte, more bool) error
	err  error
}

func (cw *chunkWriter) Write(p []byte) (int, error) {
	if cw.err != nil {
		return 0, cw.err
	}
	n := len(p)
	for len(p) > 0 {
		if cw.buf == nil {
			cw.buf = make([]byte, 0, chunkSize)
		}
		k := min(len(p), chunkSize-len(cw.buf))
		cw.buf = append(cw.buf, p[:k]...)
		p = p[k:]
		if len(cw.buf) == chunkSize {
			if cw.err = cw.send(cw.buf, true); cw.err != nil {
				return 0, cw.err
			}
			cw.buf = cw.buf[:0]
		}
	}
	return n, nil
}

func (cw *chunkWriter) finish() error {
	if cw.err != nil {
		return cw.err
	}
	cw.err = cw.send(cw.buf, false)
	return cw.err
}
