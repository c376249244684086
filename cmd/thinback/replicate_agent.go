package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/cmd/internal/replica"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
)

func init() { agentServices["replicate"] = agentReplicate }

// agentReplicate is the receiving end of replicate: thinback agent
// replicate TARGET [--pool VG/POOL] [--snapback FILE] [--checkpoint-mib N]:
// every N MiB written (by default restore's), it records how much of the
// target holds the snapshot, which is what a cut transfer resumes from.
func agentReplicate(ctx context.Context, e *env, c *remote.Conn, args []string) error {
	if len(args) == 0 {
		return usageError{msg: "agent replicate: give the target"}
	}
	ro := receiverOptions{target: args[0], state: stateFilePath(""), checkpoint: restore.DefaultCheckpointBytes}
	for a := args[1:]; len(a) > 0; a = a[2:] {
		if len(a) < 2 {
			return usageError{msg: fmt.Sprintf("agent replicate: %s needs a value", a[0])}
		}
		switch a[0] {
		case "--pool":
			ro.pool = a[1]
		case "--snapback":
			ro.snapback = a[1]
		case "--checkpoint-mib":
			n, err := strconv.ParseInt(a[1], 10, 64)
			if err != nil || n <= 0 || n > 1<<30 {
				return usageError{msg: fmt.Sprintf("agent replicate: --checkpoint-mib %q is not a number of MiB between 1 and %d", a[1], 1<<30)}
			}
			ro.checkpoint = n << 20
		default:
			return usageError{msg: fmt.Sprintf("agent replicate: unknown option %q", a[0])}
		}
	}
	so := replica.ServeOptions{Code: exitCode}
	t, err := replicaTarget(ctx, e, ro)
	if err == nil {
		err = replica.Serve(ctx, c, t, so)
	} else {
		err = replica.Refuse(c, err, so)
	}
	if err != nil {
		err = reportedError{err} // the sender prints it
	}
	if cerr := c.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return err
}

type receiverOptions struct {
	target, pool, snapback, state string
	checkpoint                    int64 // bytes
}

// replicaTarget finds what TARGET names on this host: an LV (VG/LV,
// /dev/VG/LV), which may not exist yet, or a device or file.
func replicaTarget(ctx context.Context, e *env, o receiverOptions) (replica.Target, error) {
	if fi, err := os.Stat(o.target); err == nil && fi.Mode().IsRegular() || strings.HasPrefix(o.target, "./") {
		return &stateTarget{e: e, o: o, path: o.target, kind: replica.KindFile}, nil
	}
	n, err := lvmthin.ParseName(o.target)
	if err != nil {
		if fi, serr := os.Stat(o.target); serr == nil && fi.Mode()&fs.ModeDevice != 0 {
			return &stateTarget{e: e, o: o, path: o.target, kind: replica.KindDevice}, nil
		}
		return &stateTarget{e: e, o: o, path: o.target, kind: replica.KindFile}, nil
	}
	lv, err := lvmthin.Lookup(ctx, n)
	switch {
	case errors.Is(err, lvmthin.ErrNotFound):
		return &thinTarget{e: e, o: o, name: n}, nil
	case err != nil:
		return nil, err
	case lv.Kind() == lvmthin.KindThin, lv.Kind() == lvmthin.KindThinSnapshot:
		// A rolled-back target is a snapshot of its replica snapshot.
		return &thinTarget{e: e, o: o, name: n}, nil
	case lv.Kind() == lvmthin.KindThick:
		return &stateTarget{e: e, o: o, path: "/dev/" + n.VG + "/" + n.LV, kind: replica.KindThick}, nil
	}
	return nil, fmt.Errorf("%s is a %s (lv_attr %s): a replica is a thin or ordinary LV, a device or a file: %w", n, lv.Kind(), lv.Attr, lvmthin.ErrNotThin)
}

// stateTarget is a replica whose state the state file keeps, as apply's
// and receive --to's targets: a thick LV, a device, a file.
type stateTarget struct {
	e    *env
	o    receiverOptions
	path string
	kind replica.Kind
}

func (t *stateTarget) guards() []restore.Guard {
	return applyOptions{state: t.o.state, snapback: t.o.snapback}.guards()
}

func (t *stateTarget) Holding(ctx context.Context) (replica.Holding, error) {
	h := replica.Holding{Kind: t.kind, Target: t.path}
	if _, err := os.Stat(t.path); errors.Is(err, fs.ErrNotExist) && t.kind == replica.KindFile {
		return h, nil // apply creates it
	}
	tg, err := openTarget(ctx, t.path, t.guards())
	if err != nil {
		return h, err
	}
	defer tg.Close()
	st, err := targetState(tg, t.o.state)
	if err != nil {
		return h, err
	}
	h.Size = tg.Size()
	holding(&h, st)
	return h, nil
}

// targetState is what the state file says target holds, checked
// against the target (restore.Target.Verify).
func targetState(tg *restore.Target, state string) (restore.State, error) {
	id, err := tg.Identity()
	if err != nil {
		return restore.State{}, err
	}
	st, err := (&stateFile{path: state, id: id}).load()
	if err != nil {
		return st, err
	}
	return tg.Verify(st)
}

// holding fills h from the state st.
func holding(h *replica.Holding, st restore.State) {
	if m := st.InProgress; m != nil {
		h.Partial = &replica.Partial{Snapshot: archive.Snapshot{ID: m.Snapshot}, Parent: m.Parent, Done: m.Done}
		return
	}
	h.Snapshot = st.Snapshot
	if st.Modified != "" {
		h.Modified = &replica.Change{Reason: st.Modified}
	}
}

func (t *stateTarget) Rollback(context.Context) error {
	return fmt.Errorf("%s is a %s, which keeps no snapshot to roll back to: send a full", t.path, t.kind)
}

func (t *stateTarget) Create(context.Context, int64) error {
	return fmt.Errorf("%s: only a thin LV target is created: %w", t.path, replica.ErrMissing)
}

func (t *stateTarget) Apply(ctx context.Context, r io.Reader, tr replica.Transfer, overwrite bool) (replica.Applied, error) {
	return applyStream(ctx, t.e, t.path, r, t.o, overwrite)
}

// applyStream applies the delta file r to path as receive --to does,
// recording its progress for a resume.
func applyStream(ctx context.Context, e *env, path string, r io.Reader, o receiverOptions, force bool) (replica.Applied, error) {
	ao := applyOptions{files: []string{"-"}, target: path, snapback: o.snapback, force: force, state: o.state,
		quiet: true, checkpoint: o.checkpoint}
	tg, err := openTarget(ctx, path, ao.guards())
	if err != nil {
		return replica.Applied{}, err
	}
	defer tg.Close()
	res, err := applyTo(ctx, e, tg, []restore.Input{{Name: "the stream from the sender", R: r}}, ao)
	if err != nil {
		if res == nil {
			tg.RemoveCreated()
		}
		return replica.Applied{}, err
	}
	a := replica.Applied{DataBytes: res.DataBytes, ZeroBytes: res.ZeroBytes}
	if res.Snapback != nil {
		a.Snapback = o.snapback
	}
	return a, nil
}

func (t *stateTarget) Commit(context.Context, replica.Transfer) ([]string, []string, error) {
	return nil, nil, nil // the state file says what it holds
}

// thinTarget is a thin LV replica, which keeps replica snapshots.
type thinTarget struct {
	e    *env
	o    receiverOptions
	name lvmthin.Name
}

// look returns the target and its replica snapshots, oldest first.
func (t *thinTarget) look(ctx context.Context) (*lvmthin.Report, *lvmthin.LV, []*lvmthin.LV, error) {
	rep, err := lvmthin.ListVG(ctx, t.name.VG)
	if err != nil {
		return nil, nil, nil, err
	}
	lv, err := rep.Lookup(t.name)
	if err != nil {
		return rep, nil, nil, err
	}
	snaps, err := rep.ReplicaSnapshots(t.name)
	return rep, lv, snaps, err
}

func (t *thinTarget) Holding(ctx context.Context) (replica.Holding, error) {
	h := replica.Holding{Kind: replica.KindThin, Target: t.name.String()}
	_, lv, snaps, err := t.look(ctx)
	if errors.Is(err, lvmthin.ErrNotFound) && lv == nil {
		h.Kind = replica.KindMissing
		return h, nil
	}
	if err != nil {
		return h, err
	}
	h.Size = lv.Size
	for _, s := range snaps {
		src, _ := lvmthin.ReplicaSource(s)
		h.Replicas = append(h.Replicas, replica.Replica{Name: s.FullName().String(), Source: src, Time: s.Time})
	}
	// An interrupted apply's progress is in the state file.
	tg, err := openTarget(ctx, "/dev/"+t.name.VG+"/"+t.name.LV, []restore.Guard{{What: "state file", Path: t.o.state}})
	if err != nil {
		return h, err
	}
	st, err := targetState(tg, t.o.state)
	tg.Close()
	if err != nil {
		return h, err
	}
	if m := st.InProgress; m != nil {
		h.Partial = &replica.Partial{Snapshot: archive.Snapshot{ID: m.Snapshot}, Parent: m.Parent, Done: m.Done}
	}
	if len(snaps) == 0 {
		if h.Partial == nil {
			h.Modified = &replica.Change{Reason: "it is no replica: it has no replica snapshot (--rollback overwrites it with a full)"}
		}
		return h, nil
	}
	held := snaps[len(snaps)-1]
	src, _ := lvmthin.ReplicaSource(held)
	h.Snapshot = archive.Snapshot{ID: src, Name: held.FullName().String(), Time: held.Time}
	if h.Partial != nil {
		return h, nil // its writes are the interrupted transfer's
	}
	mod, err := lvmthin.CompareReplica(ctx, lv, held, lvmthin.ReserveOptions{})
	if err != nil {
		return h, err
	}
	if mod.Changed {
		h.Modified = &replica.Change{Reason: "written to since " + held.FullName().String(), Offset: mod.Offset, Length: mod.Length, Bytes: mod.Bytes}
		if mod.Ranges == 0 {
			h.Modified = &replica.Change{Reason: fmt.Sprintf("its size changed from %d to %d bytes", mod.SnapshotSize, mod.TargetSize)}
		}
	}
	return h, nil
}

func (t *thinTarget) Rollback(ctx context.Context) error {
	_, lv, snaps, err := t.look(ctx)
	if err != nil {
		return err
	}
	if len(snaps) == 0 {
		return fmt.Errorf("%s has no replica snapshot to roll back to", t.name)
	}
	_, err = lvmthin.RollbackReplica(ctx, lv, snaps[len(snaps)-1])
	return err
}

func (t *thinTarget) Create(ctx context.Context, size int64) error {
	rep, err := lvmthin.ListVG(ctx, t.name.VG)
	if err != nil {
		return err
	}
	var pool lvmthin.Name
	if t.o.pool != "" {
		if pool, err = lvmthin.ParseName(t.o.pool); err != nil {
			return usageError{msg: "--pool: " + err.Error()}
		}
	} else {
		p, err := rep.OnlyThinPool()
		if err != nil {
			return err
		}
		pool = p.FullName()
	}
	_, err = lvmthin.CreateThin(ctx, pool, t.name.LV, size)
	return err
}

func (t *thinTarget) Apply(ctx context.Context, r io.Reader, tr replica.Transfer, _ bool) (replica.Applied, error) {
	// What the target holds was checked through LVM (its replica
	// snapshot, compared with it): the state file, keyed by the LV's
	// UUID, which a rollback changes, is not asked again. A resumed
	// stream is still checked against the recorded progress.
	return applyStream(ctx, t.e, "/dev/"+t.name.VG+"/"+t.name.LV, r, t.o, true)
}

func (t *thinTarget) Commit(ctx context.Context, tr replica.Transfer) (removed, warnings []string, err error) {
	rep, lv, _, err := t.look(ctx)
	if err != nil {
		return nil, nil, err
	}
	name := lvmthin.ReplicaSnapshotName(t.name.LV, rep.LVs, time.Now())
	if _, err := lvmthin.CreateReplicaSnapshot(ctx, lv, name, tr.Snapshot.ID); err != nil {
		return nil, nil, fmt.Errorf("%s holds %s, but its replica snapshot could not be taken: %w", t.name, tr.Snapshot.Describe(), err)
	}
	_, lv, snaps, err := t.look(ctx)
	if err != nil {
		return nil, []string{fmt.Sprintf("rotation of the replica snapshots skipped: %v", err)}, nil
	}
	for i := 0; i < len(snaps)-1-tr.Keep; i++ {
		if err := lvmthin.RemoveReplicaSnapshot(ctx, lv, snaps[i]); err != nil {
			warnings = append(warnings, fmt.Sprintf("the old replica snapshot %s could not be removed (the next run tries again; or lvremove it): %v", snaps[i].FullName(), err))
			continue
		}
		removed = append(removed, snaps[i].FullName().String())
	}
	return removed, warnings, nil
}
