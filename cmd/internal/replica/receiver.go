package replica

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/restore"
)

// Target is a replica on the receiver's host.
type Target interface {
	// Holding says what the target holds now.
	Holding(ctx context.Context) (Holding, error)
	// Rollback puts a thin target back to its newest replica snapshot.
	Rollback(ctx context.Context) error
	// Create makes the missing target, of size bytes.
	Create(ctx context.Context, size int64) error
	// Apply applies the delta file r of transfer tr; overwrite lets a
	// full replace a modified target. It returns the bytes written and
	// zeroed, and the snapback file kept ("" for none).
	Apply(ctx context.Context, r io.Reader, tr Transfer, overwrite bool) (Applied, error)
	// Commit records, once Apply returned, that the target holds tr's
	// snapshot (a thin target: a replica snapshot of it, and rotation
	// keeping tr.Keep older ones), and returns the names of the replica
	// snapshots removed and the warnings of failures that did not fail it.
	Commit(ctx context.Context, tr Transfer) (removed, warnings []string, err error)
}

// ServeOptions are a receiver's settings.
type ServeOptions struct {
	// Code is the exit code of an error, which the sender exits with.
	Code func(error) int
}

// Serve is the receiver: it answers the sender at the other end of conn
// about t and applies what it sends. It returns the error it reported to
// the sender, if any.
func Serve(ctx context.Context, conn io.ReadWriter, t Target, o ServeOptions) error {
	enc, dec := gob.NewEncoder(conn), gob.NewDecoder(conn)
	fail := func(err error) *Failure { return &Failure{Code: o.Code(err), Msg: err.Error()} }

	var q Query
	if err := dec.Decode(&q); err != nil {
		return fmt.Errorf("reading the sender's query: %w", err)
	}
	if q.Version != Version {
		err := fmt.Errorf("the sender speaks replicate protocol version %d, this thinback %d: install the same thinback on both hosts: %w", q.Version, Version, ErrProtocol)
		_ = enc.Encode(Status{Version: Version, Err: fail(err)})
		return err
	}
	h, err := t.Holding(ctx)
	if err != nil {
		_ = enc.Encode(Status{Version: Version, Err: fail(err)})
		return err
	}
	if err := enc.Encode(Status{Version: Version, Holding: h}); err != nil {
		return err
	}
	var tr Transfer
	if err := dec.Decode(&tr); errors.Is(err, io.EOF) {
		return nil // the sender decided to send nothing
	} else if err != nil {
		return fmt.Errorf("reading the sender's transfer: %w", err)
	}
	a, err := receive(ctx, dec, t, h, tr)
	if err != nil {
		_ = enc.Encode(Reply{Err: fail(err)})
		return err
	}
	now, err := t.Holding(ctx)
	if err != nil {
		_ = enc.Encode(Reply{Err: fail(err)})
		return err
	}
	return enc.Encode(Reply{Holding: now, Applied: a})
}

// Refuse answers the sender at the other end of conn with err, a
// receiver that cannot serve it (its target cannot be found or opened),
// and returns err.
func Refuse(conn io.ReadWriter, err error, o ServeOptions) error {
	enc, dec := gob.NewEncoder(conn), gob.NewDecoder(conn)
	var q Query
	if derr := dec.Decode(&q); derr != nil {
		return err
	}
	_ = enc.Encode(Status{Version: Version, Err: &Failure{Code: o.Code(err), Msg: err.Error()}})
	return err
}

// receive checks transfer tr against what the target holds, h, prepares
// the target and applies the delta.
func receive(ctx context.Context, dec *gob.Decoder, t Target, h Holding, tr Transfer) (Applied, error) {
	var a Applied
	switch {
	case h.Kind == KindMissing && !tr.Create:
		return a, fmt.Errorf("%s does not exist: run with --create: %w", h.Target, ErrMissing)
	case h.Kind == KindMissing && tr.Mode != Full:
		return a, fmt.Errorf("%s does not exist, and the sender sent an %s: %w", h.Target, tr.Mode, ErrProtocol)
	case h.Kind == KindMissing:
		if err := t.Create(ctx, tr.Size); err != nil {
			return a, err
		}
		a.Created = true
	}
	modified := h.Modified
	if modified == nil && h.Partial != nil && !sameTransfer(h.Partial, tr) && tr.Mode != Full {
		modified = &Change{Reason: fmt.Sprintf("an interrupted transfer of %s wrote to it", h.Partial.Snapshot.Describe())}
	}
	if modified != nil {
		switch {
		case tr.Rollback && h.Kind == KindThin && !h.Snapshot.ID.IsZero():
			if err := t.Rollback(ctx); err != nil {
				return a, err
			}
			a.Rolled = true
		case tr.Mode == Full && (tr.Overwrite || h.Partial != nil && h.Modified == nil):
		default:
			return a, &ModifiedError{Dest: h.Target, Held: h.Snapshot, Change: *modified}
		}
	}
	if tr.Mode == Incremental && !a.Rolled && h.Partial != nil && !sameTransfer(h.Partial, tr) {
		return a, fmt.Errorf("%s was interrupted applying %s and cannot take %s: %w", h.Target, h.Partial.Snapshot.Describe(), tr.Snapshot.Describe(), restore.ErrInterrupted)
	}
	if tr.Mode == Incremental && h.Partial == nil && h.Snapshot.ID != tr.Parent {
		return a, fmt.Errorf("%s holds %s, but the sender sent an incremental from %s: %w", h.Target, h.Snapshot.Describe(), tr.Parent, restore.ErrMismatch)
	}
	start := time.Now()
	cr := &chunkReader{dec: dec}
	applied, err := t.Apply(ctx, cr, tr, tr.Overwrite || a.Rolled)
	if err == nil {
		err = cr.drain()
	}
	if err != nil {
		return a, err
	}
	a.DataBytes, a.ZeroBytes, a.Snapback = applied.DataBytes, applied.ZeroBytes, applied.Snapback
	a.ApplySeconds = time.Since(start).Seconds()
	start = time.Now()
	a.Removed, a.Warnings, err = t.Commit(ctx, tr)
	a.CommitSeconds = time.Since(start).Seconds()
	return a, err
}

// sameTransfer reports whether tr continues the interrupted transfer p.
func sameTransfer(p *Partial, tr Transfer) bool {
	return p.Snapshot.ID == tr.Snapshot.ID && p.Parent == tr.Parent
}
