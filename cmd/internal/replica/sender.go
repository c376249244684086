package replica

import (
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/backup"
)

// Source is the volume a sender replicates: its replication snapshots.
type Source interface {
	// Snapshots lists the replication snapshots, oldest first.
	Snapshots(ctx context.Context) ([]Local, error)
	// Take takes a new replication snapshot.
	Take(ctx context.Context) (Local, error)
	// Open opens the delta of snap from base (nil: a full), starting at
	// volume offset from (0: all of it; a source that cannot start
	// elsewhere says so in Resumable).
	Open(ctx context.Context, snap Local, base *Local, from int64) (*backup.Outgoing, error)
	// Resumable reports whether Open takes an offset.
	Resumable() bool
	// Remove removes a replication snapshot.
	Remove(ctx context.Context, l Local) error
}

// Options are a sender's settings.
type Options struct {
	// Dest names the target and its host in messages, Host the host
	// alone ("" on this machine).
	Dest, Host string
	// Rollback is --rollback, Create --create, Keep --keep.
	Rollback, Create bool
	Keep             int
	Level            archive.Level
	// Taken is told of the snapshot a run takes, before it is sent: a
	// caller that must undo it on an interruption learns it here.
	Taken func(Local)
}

// Result is what a run did: the summary line or JSON object.
type Result struct {
	Dest     string `json:"destination"`
	Kind     Mode   `json:"kind"`
	Snapshot string `json:"snapshot"`
	// SnapshotID is the source snapshot both sides hold now.
	SnapshotID archive.ID `json:"snapshot_id"`
	Base       string     `json:"base,omitempty"`
	// ResumedFrom is where a resumed transfer started: the bytes not sent
	// again.
	ResumedFrom int64 `json:"resumed_from,omitempty"`
	TargetKind  Kind  `json:"target_kind"`
	// BytesRead of the source; DeltaBytes of the delta file; WireSent
	// and WireReceived on the connection, the protocol's included.
	BytesRead    int64 `json:"bytes_read"`
	DataBytes    int64 `json:"data_bytes"`
	ZeroBytes    int64 `json:"zero_bytes"`
	DeltaBytes   int64 `json:"delta_bytes"`
	WireSent     int64 `json:"wire_sent_bytes"`
	WireReceived int64 `json:"wire_received_bytes"`
	// WrittenBytes and ZeroedBytes on the target.
	WrittenBytes int64 `json:"written_bytes"`
	ZeroedBytes  int64 `json:"zeroed_bytes"`
	RolledBack   bool  `json:"rolled_back,omitempty"`
	Created      bool  `json:"created,omitempty"`
	// Replicas are the target's replica snapshots now (thin).
	Replicas []string `json:"replicas,omitempty"`
	// Removed are the source's snapshots rotated away; ReplicasRemoved
	// the target's.
	Removed         []string `json:"removed,omitempty"`
	ReplicasRemoved []string `json:"replicas_removed,omitempty"`
	Snapback        string   `json:"snapback,omitempty"`
	// The phases' times: asking the receiver, taking the snapshot,
	// sending and applying, the receiver's apply and commit (replica
	// snapshot and rotation), the source's rotation; Seconds in all.
	QuerySeconds    float64  `json:"query_seconds"`
	SnapshotSeconds float64  `json:"snapshot_seconds"`
	TransferSeconds float64  `json:"transfer_seconds"`
	ApplySeconds    float64  `json:"apply_seconds"`
	CommitSeconds   float64  `json:"commit_seconds"`
	RotateSeconds   float64  `json:"rotate_seconds"`
	Seconds         float64  `json:"seconds"`
	Notes           []string `json:"notes,omitempty"`
	Warnings        []string `json:"warnings,omitempty"`
}

// Send replicates src to the receiver at the other end of conn.
func Send(ctx context.Context, conn io.ReadWriter, src Source, o Options) (*Result, error) {
	start := time.Now()
	cc := &countingConn{rw: conn}
	enc, dec := gob.NewEncoder(cc), gob.NewDecoder(cc)
	res := &Result{Dest: o.Dest}
	defer func() {
		res.WireSent, res.WireReceived = cc.out, cc.in
		res.Seconds = time.Since(start).Seconds()
	}()

	if err := enc.Encode(Query{Version: Version}); err != nil {
		return nil, o.connError("asking what it holds", err)
	}
	var st Status
	if err := dec.Decode(&st); err != nil {
		return nil, o.connError("asking what it holds", err)
	}
	if st.Err != nil {
		return nil, o.remote(st.Err)
	}
	if st.Version != Version {
		return nil, fmt.Errorf("%s speaks replicate protocol version %d, this thinback %d: install the same thinback on both hosts: %w", o.Dest, st.Version, Version, ErrProtocol)
	}
	h := st.Holding
	res.TargetKind = h.Kind
	if h.Kind == KindMissing && !o.Create {
		return nil, fmt.Errorf("%s does not exist: run with --create to create it (a thin LV, in --pool VG/POOL or the volume group's only pool): %w", o.Dest, ErrMissing)
	}
	local, err := src.Snapshots(ctx)
	if err != nil {
		return nil, err
	}
	p, err := Choose(h, local, o.Dest, o.Rollback, src.Resumable())
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, p.Notes...)
	res.QuerySeconds = time.Since(start).Seconds()

	snap := p.Snap
	taken := false
	if snap == nil {
		t := time.Now()
		l, err := src.Take(ctx)
		if err != nil {
			return nil, err
		}
		snap, taken = &l, true
		if o.Taken != nil {
			o.Taken(l)
		}
		local = append(local, l)
		res.SnapshotSeconds = time.Since(t).Seconds()
	}
	res.Kind, res.Snapshot = p.Mode, snap.Name
	if p.Base != nil {
		res.Base = p.Base.Name
	}
	res.ResumedFrom = p.From

	reply, sent, err := transfer(ctx, conn, enc, dec, src, o, p, *snap, res)
	if err != nil {
		// The new snapshot stays when the receiver may hold part of it:
		// the next run continues that transfer. A snapshot nothing of
		// which was sent is removed.
		if taken && sent == 0 {
			if rerr := src.Remove(context.WithoutCancel(ctx), *snap); rerr != nil {
				err = fmt.Errorf("%w\nand the snapshot %s could not be removed: %v; remove it with lvremove", err, snap.Name, rerr)
			}
		} else if sent > 0 {
			err = fmt.Errorf("%w\n%s is kept: the next replicate continues this transfer from where %s got", err, snap.Name, o.Dest)
		}
		return nil, err
	}
	a := reply.Applied
	res.WrittenBytes, res.ZeroedBytes = a.DataBytes, a.ZeroBytes
	res.RolledBack, res.Created = a.Rolled, a.Created
	res.ReplicasRemoved, res.Snapback = a.Removed, a.Snapback
	res.ApplySeconds, res.CommitSeconds = a.ApplySeconds, a.CommitSeconds
	res.Warnings = append(res.Warnings, a.Warnings...)
	for _, r := range reply.Holding.Replicas {
		res.Replicas = append(res.Replicas, r.Name)
	}
	held := reply.Holding.Snapshot.ID
	if held != snap.ID {
		return nil, fmt.Errorf("%s applied %s but says it holds %s: %w", o.Dest, snap.Name, reply.Holding.Snapshot.Describe(), ErrProtocol)
	}
	res.SnapshotID = held

	t := time.Now()
	var partial archive.ID
	if pa := reply.Holding.Partial; pa != nil {
		partial = pa.Snapshot.ID
	}
	for _, l := range Rotation(local, held, partial, o.Keep) {
		if err := src.Remove(ctx, l); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the replica is current, but the old snapshot %s could not be removed (the next run tries again; or lvremove it): %v", l.Name, err))
			continue
		}
		res.Removed = append(res.Removed, l.Name)
	}
	res.RotateSeconds = time.Since(t).Seconds()
	return res, nil
}

// transfer sends the delta of plan p and returns the receiver's reply,
// and the delta bytes that were sent.
func transfer(ctx context.Context, conn io.ReadWriter, enc *gob.Encoder, dec *gob.Decoder, src Source, o Options, p Plan, snap Local, res *Result) (Reply, int64, error) {
	start := time.Now()
	out, err := src.Open(ctx, snap, p.Base, p.From)
	if err != nil {
		return Reply{}, 0, err
	}
	defer out.Close()
	hd := out.Header
	if p.Mode == Incremental && hd.Parent.ID.IsZero() {
		// The source could not make the incremental (a thick LV's base
		// snapshot overflowed): it sends a full.
		p.Mode, res.Kind, res.Base = Full, Full, ""
		res.Notes = append(res.Notes, fmt.Sprintf("%s cannot be the base: sending a full", p.Base.Name))
	}
	tr := Transfer{
		Mode: p.Mode, Snapshot: hd.Snapshot, Parent: hd.Parent.ID, Size: hd.VolumeSize, From: p.From,
		Rollback: p.Rollback, Overwrite: p.Overwrite, Create: o.Create, Keep: o.Keep,
	}
	if err := enc.Encode(tr); err != nil {
		return Reply{}, 0, o.connError("starting the transfer", err)
	}
	// The reply is read while the delta is written: a receiver that
	// fails stops reading, and says why before it goes.
	replies := make(chan replyOrErr, 1)
	go func() {
		var r Reply
		err := dec.Decode(&r)
		replies <- replyOrErr{r, err}
	}()
	cw := &chunkWriter{enc: enc}
	trailer, werr := writeDelta(ctx, cw, out, o)
	if werr == nil {
		werr = cw.close()
	}
	// A receiver's failure is what went wrong, even when writing failed
	// too (it stopped reading); without one, the writing's error. A
	// receiver whose stream broke fails or goes away, which ends the
	// wait; an interruption ends it too.
	var r replyOrErr
	if werr != nil {
		// A receiver still there sees the stream end, and says what
		// it made of it.
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
		select {
		case r = <-replies:
		case <-ctx.Done():
			return Reply{}, cw.n, werr
		}
	} else {
		r = <-replies
	}
	res.TransferSeconds = time.Since(start).Seconds()
	res.DeltaBytes = cw.n
	switch {
	case r.err == nil && r.reply.Err != nil:
		return Reply{}, cw.n, o.remote(r.reply.Err)
	case werr != nil:
		return Reply{}, cw.n, fmt.Errorf("sending %s to %s: %w", snap.Name, o.Dest, werr)
	case r.err != nil:
		return Reply{}, cw.n, o.connError("waiting for the end of the transfer", r.err)
	}
	res.BytesRead = out.Read(trailer)
	res.DataBytes, res.ZeroBytes = trailer.DataBytes, trailer.ZeroBytes
	return r.reply, cw.n, nil
}

type replyOrErr struct {
	reply Reply
	err   error
}

// writeDelta writes out's delta file to w.
func writeDelta(ctx context.Context, w io.Writer, out *backup.Outgoing, o Options) (archive.Trailer, error) {
	aw := archive.NewWriter(w)
	if err := aw.WriteHeader(out.Header); err != nil {
		return archive.Trailer{}, err
	}
	opts := archive.SendOptions{Level: o.Level}
	if out.CountWrites && out.Progress != nil {
		opts.Progress = out.Progress.Add
	}
	err := archive.Send(ctx, aw, out.Source, opts)
	if err == nil {
		err = aw.Close()
	}
	if out.Progress != nil {
		out.Progress.Done()
	}
	return aw.Trailer(), err
}

// connError is a connection that failed while the sender did what.
func (o Options) connError(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%s: the receiver went away while %s: %w", o.Dest, what, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("%s: %s: %w", o.Dest, what, err)
}

// remote is the receiver's failure.
func (o Options) remote(f *Failure) error {
	return &RemoteError{Host: o.Host, Code: f.Code, Msg: f.Msg}
}
