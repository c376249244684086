// Package backup is thinback's backup lifecycle, once for every kind of
// source: lock the volume, check it is the volume the store knows, choose
// the base of an incremental (the newest recorded snapshot that still
// exists, its file checked against its record), take a snapshot between
// the --pre and --post commands, find what changed, write the delta file
// into the store and record it, remove the snapshot again when it was not
// recorded, rotate older snapshots, and apply the retention policy.
//
// The kinds of source (a thin LV, a thick LV through a classic
// copy-on-write snapshot, an image or block device) are behind Source;
// Run drives any of them. The same sources serve send, which writes a
// delta of two existing snapshots to a file or a pipe (Open*Send).
//
// The package returns results; the command prints them and maps errors to
// exit codes.
package backup

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
)

// Source is one kind of volume a backup reads. Run calls its methods in
// this order, each at most once: Identify, CheckVolume, ChooseBase,
// NextSnapshot, TakeSnapshot, Discover, then RemoveSnapshot (when the
// snapshot taken was not recorded) or Rotate (once it is), and Release
// last whenever ChooseBase was called.
type Source interface {
	// Identify says which volume the source is, as a new store record
	// would have it: the Name is the default name in the store.
	Identify() catalog.Volume
	// CheckVolume compares the store's record of the volume with the
	// source; notes say what differs without failing the run.
	CheckVolume(v catalog.Volume) (notes []string, err error)
	// ChooseBase picks the base of the next incremental among the
	// volume's recorded snapshots (none: a full); notes say why the
	// newest was not used.
	// key is an encrypted store's key (nil: in the clear), under which
	// the base's file must have been written.
	ChooseBase(ctx context.Context, s catalog.Repository, key *archive.Key, v catalog.Volume) (notes []string, err error)
	// NextSnapshot names the snapshot TakeSnapshot will take, as
	// THINBACK_SNAPSHOT gives it to the hooks ("" when the source is
	// read as it is); Origin names the source for THINBACK_SOURCE.
	NextSnapshot() string
	Origin() string
	// Live reports that the source has no snapshot and is read as it
	// is: the --post command then runs once it has been read.
	Live() bool
	// TakeSnapshot takes the snapshot; on error nothing is left of it.
	TakeSnapshot(ctx context.Context) error
	// Discover finds what changed since the base and returns the delta
	// to store. It may set res's kind, parent, method, notes and
	// warnings. newProgress makes the progress shown for total bytes.
	Discover(ctx context.Context, res *Result, newProgress func(total int64) Progress) (*Delta, error)
	// RemoveSnapshot removes a snapshot taken for a run that failed
	// with err, and returns err, with what went wrong removing it.
	RemoveSnapshot(ctx context.Context, err error) error
	// Rotate removes the older snapshots once the new one is recorded;
	// it returns a warning for each failure.
	Rotate(ctx context.Context) []string
	// Release releases what ChooseBase and Discover hold.
	Release()
}

// Delta is what a backup stores: a header and the extents of a source.
type Delta struct {
	Header *archive.Header
	Source archive.Source
	// Progress is the progress shown, done once the file is stored;
	// CountWrites says whether the bytes written are added to it (else
	// the source reports what it reads).
	Progress    Progress
	CountWrites bool
	// Record holds the LVM fields of the snapshot's record.
	Record catalog.Snapshot
	// Close ends the discovery (nil: nothing to close); Name names what
	// it closes in messages.
	Close func() error
	Name  string
	// Stored fills the result's figures of the source once the file is
	// recorded as rec.
	Stored func(rec catalog.Snapshot, res *Result)
}

// Progress is a run's progress display.
type Progress interface {
	Add(n int64)
	Done()
}

// NoProgress shows nothing.
type NoProgress struct{}

func (NoProgress) Add(int64) {}
func (NoProgress) Done()     {}

// UsageError is a bad command line found once the source is known (a
// snapshot given where its origin is wanted, an option of the other
// kind): the command reports it as a usage error.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Options are a backup run's settings besides its source.
type Options struct {
	// Volume is the volume's name in the store; "" for the source's.
	Volume string
	Level  archive.Level
	// Key is the key of an encrypted store: the delta file is written
	// under it, and the base of an incremental must have been.
	Key *archive.Key
	// Pre and Post are the shell commands run before and after the
	// snapshot; their output goes to HookOutput.
	Pre, Post  string
	HookOutput io.Writer
	// Retention, when not zero, is recorded as the volume's policy and
	// applied by Prune once the backup is stored; Prune returns the
	// sequence numbers of the snapshots it removed.
	Retention catalog.Retention
	Prune     func(ctx context.Context, volume string, r catalog.Retention) ([]uint64, error)
	// Progress makes the progress display of total bytes; nil for none.
	Progress func(total int64) Progress
	// Report is given the result while the volume is still locked (the
	// command prints it); an error of it is the run's.
	Report func(*Result) error
	// Warn is told of a failure after Report that did not fail the run
	// (the volume's lock not released).
	Warn func(msg string)
}

// Result is what a backup run did: the one line (or JSON object) the
// command reports.
type Result struct {
	Volume   string `json:"volume"`
	Kind     string `json:"kind"`
	Snapshot string `json:"snapshot"`
	Seq      uint64 `json:"seq"`
	Parent   string `json:"parent,omitempty"`
	// Method says how a thick LV's changes were found: "cow" (the base
	// snapshot's exception table), "digests" (every block compared with
	// the backup's digests, the base being invalid) or "full".
	Method string `json:"method,omitempty"`
	// Fallback says why the exception table could not be used.
	Fallback    string  `json:"fallback,omitempty"`
	LVSnapshot  string  `json:"lv_snapshot,omitempty"`
	BytesRead   int64   `json:"bytes_read"`
	DataBytes   int64   `json:"data_bytes"`
	ZeroBytes   int64   `json:"zero_bytes"`
	StoredBytes int64   `json:"stored_bytes"`
	File        string  `json:"file"`
	Seconds     float64 `json:"seconds"`
	// How a thin LV's changes were found: the discovery (native or
	// tools), the metadata the native reader read, and how long the pool's
	// metadata snapshot was held.
	Discovery        string  `json:"discovery,omitempty"`
	MetadataBytes    int64   `json:"metadata_bytes,omitempty"`
	MetadataSnapHeld float64 `json:"metadata_snap_held_seconds,omitempty"`
	// A thin LV's fixed cost: the LVM commands (lvs, lvcreate, lvchange,
	// lvremove) the run started, the device-mapper ioctls it made (or,
	// with THINBACK_DM=dmsetup, the dmsetup commands it ran in their
	// place), and their time.
	LVMCommands     int      `json:"lvm_commands,omitempty"`
	DMSetupCommands int      `json:"dmsetup_commands,omitempty"`
	DMIoctls        int      `json:"dm_ioctls,omitempty"`
	LVMSeconds      float64  `json:"lvm_seconds,omitempty"`
	Pruned          []string `json:"pruned,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	// Warnings are failures that did not fail the run (a lock or an old
	// snapshot not released); they are printed even with --quiet.
	Warnings []string `json:"warnings,omitempty"`
}

// Run backs up src into the store s. It returns the result once the
// backup is stored, with an error when what follows failed (retention,
// Report); an error alone when nothing was stored.
func Run(ctx context.Context, s catalog.Repository, src Source, o Options) (*Result, error) {
	want := src.Identify()
	if o.Volume != "" {
		want.Name = o.Volume
	}
	name := want.Name
	unlock, err := s.LockVolume(name)
	if err != nil {
		return nil, fmt.Errorf("%w; is a backup of %s still running?", err, name)
	}
	defer func() {
		if err := unlock(); err != nil && o.Warn != nil {
			o.Warn(fmt.Sprintf("releasing the lock of volume %s: %v", name, err))
		}
	}()
	res, err := run(ctx, s, src, want, o)
	if err != nil {
		return nil, err
	}
	var pruneErr error
	if !o.Retention.IsZero() {
		err := s.SetRetention(name, o.Retention)
		if err == nil && o.Prune != nil {
			var removed []uint64
			removed, err = o.Prune(ctx, name, o.Retention)
			for _, seq := range removed {
				res.Pruned = append(res.Pruned, fmt.Sprintf("#%d", seq))
			}
		}
		if err != nil {
			pruneErr = fmt.Errorf("the backup is stored, but pruning failed: %w", err)
		}
	}
	if o.Report != nil {
		if err := o.Report(res); err != nil {
			return res, err
		}
	}
	return res, pruneErr
}

// run is the backup itself, under the volume's lock.
func run(ctx context.Context, s catalog.Repository, src Source, want catalog.Volume, o Options) (_ *Result, err error) {
	name := want.Name
	v, newVol, err := volumeFor(s, want)
	if err != nil {
		return nil, err
	}
	res := &Result{Volume: name, Kind: "full"}
	notes, err := src.CheckVolume(v)
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)
	notes, err = src.ChooseBase(ctx, s, o.Key, v)
	defer src.Release()
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)

	hk := hooks{out: o.HookOutput, vars: map[string]string{"THINBACK_VOLUME": name, "THINBACK_SOURCE": src.Origin()}}
	// A source read as it is (Live) is "snapshotted" by the read itself:
	// its --post command runs once the read is over, however it ended.
	postPending := false
	defer func() {
		if !postPending {
			return
		}
		if postErr := hk.run(context.WithoutCancel(ctx), "post", o.Post); postErr != nil && err == nil {
			err = postErr
		}
	}()
	if err := takeSnapshot(ctx, src, hk, o, &postPending); err != nil {
		return nil, err
	}
	recorded := false
	defer func() {
		if !recorded && err != nil {
			// Not in the store: it must not become the next base.
			err = src.RemoveSnapshot(ctx, err)
		}
	}()

	d, err := src.Discover(ctx, res, o.newProgress)
	if err != nil {
		return nil, err
	}
	closed := d.Close == nil
	defer func() {
		if closed {
			return
		}
		if cerr := d.Close(); cerr != nil && err != nil {
			err = fmt.Errorf("%w (and closing %s failed: %v)", err, d.Name, cerr)
		}
	}()
	var writes Progress = NoProgress{}
	if d.CountWrites {
		writes = d.Progress
	}
	rec, err := StoreDelta(ctx, s, StoreOptions{Header: d.Header, Source: d.Source, Level: o.Level, Progress: writes, Record: d.Record, NewVolume: newVol, Key: o.Key})
	d.Progress.Done()
	if postPending {
		postPending = false
		if postErr := hk.run(context.WithoutCancel(ctx), "post", o.Post); postErr != nil && err == nil {
			err = postErr
		}
	}
	if err != nil {
		return nil, err
	}
	recorded = true
	if !closed {
		closed = true
		if err := d.Close(); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the backup is stored, but closing %s failed: %v", d.Name, err))
		}
	}
	res.Snapshot, res.Seq, res.File = rec.ID, rec.Seq, rec.File
	res.DataBytes, res.ZeroBytes, res.StoredBytes = rec.DataBytes, rec.ZeroBytes, rec.FileSize
	if d.Stored != nil {
		d.Stored(rec, res)
	}
	// Rotate: the new snapshot is durable in the store.
	res.Warnings = append(res.Warnings, src.Rotate(ctx)...)
	return res, nil
}

// takeSnapshot takes src's snapshot between the --pre and --post
// commands; a snapshot taken when the --post command fails is removed.
// A source read as it is (Live) runs its --post command once read: for
// one, takeSnapshot sets *postLater once the --pre command has run.
func takeSnapshot(ctx context.Context, src Source, hk hooks, o Options, postLater *bool) error {
	snapName := src.NextSnapshot()
	if snapName != "" {
		hk.vars["THINBACK_SNAPSHOT"] = snapName
	}
	if err := hk.run(ctx, "pre", o.Pre); err != nil {
		return err
	}
	err := src.TakeSnapshot(ctx)
	if src.Live() {
		*postLater = true
	} else {
		if postErr := hk.run(context.WithoutCancel(ctx), "post", o.Post); postErr != nil && err == nil {
			return src.RemoveSnapshot(ctx, fmt.Errorf("%w (the snapshot %s was taken)", postErr, snapName))
		}
	}
	return err
}

// newProgress makes the progress display of total bytes.
func (o Options) newProgress(total int64) Progress {
	if o.Progress == nil {
		return NoProgress{}
	}
	return o.Progress(total)
}

// volumeFor returns the store's record of a volume, or want and a pointer
// to it when the store has none yet. A new volume is not recorded here:
// StoreDelta records it together with its first snapshot, so a first
// backup that fails leaves no volume behind.
func volumeFor(s catalog.Repository, want catalog.Volume) (catalog.Volume, *catalog.Volume, error) {
	var v catalog.Volume
	var created *catalog.Volume
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		v, err = tx.Volume(want.Name)
		if errors.Is(err, catalog.ErrNotFound) {
			v, created = want, &want
			return nil
		}
		return err
	})
	if err != nil {
		return v, nil, err
	}
	if v.Kind != want.Kind {
		return v, nil, fmt.Errorf("the store's volume %s is a %s volume, not %s: give another name with --volume", v.Name, v.Kind, want.Kind)
	}
	return v, created, nil
}
