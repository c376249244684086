package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/thinback/thinback/cmd/internal/replica"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func replicateCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "replicate",
		Usage:     "keep a copy of an LV current on another host (or another VG), with snapshots on both sides",
		ArgsUsage: "VG/LV DEST",
		Description: "DEST is ssh://[USER@]HOST[:PORT]/VG/LV, HOST:/dev/VG/LV (lvmsync's spelling), or, on this\n" +
			"host, VG/LV or a device or file. One run: asks the receiver what it holds, snapshots VG/LV\n" +
			"as backup does (thin, or a classic snapshot of a thick LV; --pre and --post around it),\n" +
			"sends the incremental from the snapshot the receiver holds (a full the first time, or when\n" +
			"that snapshot is gone from the source), applies it there, and rotates: each side keeps\n" +
			"the newest snapshot both hold, and --keep N older ones. The source's snapshots are named\n" +
			"LV.replica.<time>, apart from backup's LV.thinback.<time>, so that neither command's\n" +
			"rotation removes the other's. A thin LV target keeps read-only replica snapshots\n" +
			"LV.thinback.<time>, tagged with the source snapshot they hold; other targets keep the\n" +
			"state file of apply and receive --to.\n\n" +
			"A thin target written to since its replica snapshot (compared through the pool's\n" +
			"metadata) is refused with exit code 5 (\"destination has been modified since most recent\n" +
			"snapshot\"); --rollback puts it back to the snapshot first (a target of another kind gets\n" +
			"a full instead). A missing thin target is made with --create (in --pool VG/POOL, or the\n" +
			"volume group's only pool). A transfer that was cut (ssh dropped, a host rebooted) is\n" +
			"continued by the next run from the byte the receiver had made durable; the snapshot it\n" +
			"was sending stays on the source until then.\n\n" +
			"thinback is run on HOST over ssh (--rsh, --remote-thinback) after a handshake that checks\n" +
			"both ends speak the same protocol; exit code 15 when HOST cannot be reached, refuses the\n" +
			"host key, or has no thinback or an incompatible one. A second replicate of the same\n" +
			"volume exits with 9. One summary line (--json: an object) with the phases' times and\n" +
			"the bytes sent on the wire.\n\n" +
			"replicate --promote VG/LV, run on the replica's host when its source is lost, makes the\n" +
			"thin replica VG/LV an ordinary LV: it must be unchanged since its newest replica snapshot\n" +
			"(else exit 5; --rollback puts it back to that snapshot, the newest complete transfer),\n" +
			"then the replica snapshots lose their tags (they stay, as ordinary read-only snapshots),\n" +
			"so that no later replicate writes to it without --rollback.",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "keep", Usage: "snapshots older than the common one that each side keeps"},
			&cli.BoolFlag{Name: "rollback", Usage: "discard the changes made to a modified target since its snapshot (ZFS's recv -F)"},
			&cli.BoolFlag{Name: "create", Usage: "create a missing target: a thin LV of the source's size"},
			&cli.StringFlag{Name: "pool", Usage: "with --create: the thin pool VG/POOL of the new target (default: the VG's only pool)"},
			&cli.StringFlag{Name: "snapback", Usage: "on the receiving host: save the data the apply overwrites in this new delta file"},
			&cli.Int64Flag{Name: "checkpoint-mib", Value: restore.DefaultCheckpointBytes >> 20, Usage: "the receiver fsyncs the target and records its progress every this many MiB written: what a cut transfer resumes from"},
			&cli.StringFlag{Name: "pre", Usage: "shell command run before the snapshot (e.g. fsfreeze)"},
			&cli.StringFlag{Name: "post", Usage: "shell command run after the snapshot, even when it failed"},
			&cli.StringFlag{Name: "snapshot-size", Usage: "a thick LV's snapshot store: SIZE or PERCENT% of the LV"},
			&cli.BoolFlag{Name: "release-stale-metadata-snap", Usage: releaseStaleUsage},
			&cli.BoolFlag{Name: "promote", Usage: "on the replica's host: make the replica VG/LV an ordinary LV (failover; see above)"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as one JSON object"},
			levelFlag, stateFlag, quietFlag,
		}, remoteFlags...),
		Action: func(c *cli.Context) error {
			if c.Bool("promote") {
				a, err := args(c, 1, 1, "--promote takes the replica VG/LV, on its host")
				if err != nil {
					return err
				}
				return runPromote(c.Context, e, a[0], c.Bool("rollback"), c.Bool("quiet"))
			}
			a, err := args(c, 2, 2, "give the volume and the destination: VG/LV DEST")
			if err != nil {
				return err
			}
			if c.Int("keep") < 0 {
				return usageError{msg: fmt.Sprintf("replicate: --keep %d: give a number of snapshots, 0 or more", c.Int("keep"))}
			}
			if n := c.Int64("checkpoint-mib"); n <= 0 || n > 1<<30 {
				return usageError{msg: fmt.Sprintf("replicate: --checkpoint-mib %d is not a number of MiB between 1 and %d", n, 1<<30)}
			}
			lvl, err := level(c)
			if err != nil {
				return err
			}
			d, err := remote.ParseDest(a[1])
			if err != nil {
				return err
			}
			return runReplicate(c.Context, e, replicateOptions{
				source: a[0], dest: d, remote: remoteOptions(e, c),
				level: lvl, keep: c.Int("keep"), checkpointMiB: c.Int64("checkpoint-mib"), rollback: c.Bool("rollback"), create: c.Bool("create"), pool: c.String("pool"),
				snapback: c.String("snapback"), pre: c.String("pre"), post: c.String("post"),
				snapshotSize: c.String("snapshot-size"), releaseStale: c.Bool("release-stale-metadata-snap"),
				json: c.Bool("json"), quiet: c.Bool("quiet"), state: stateFilePath(c.String("state")),
			})
		},
	}
}

type replicateOptions struct {
	source           string
	dest             remote.Dest
	remote           remote.Options
	level            archive.Level
	checkpointMiB    int64
	keep             int
	rollback, create bool
	pool, snapback   string
	pre, post        string
	snapshotSize     string
	releaseStale     bool
	json, quiet      bool
	state            string // where this host's lock files live (beside its state file)
}

func runReplicate(ctx context.Context, e *env, o replicateOptions) error {
	origin, _, err := backup.LookupLV(ctx, o.source, nil)
	if err != nil {
		return usageOf(fmt.Errorf("replicate: %w", err))
	}
	switch k := origin.Kind(); k {
	case lvmthin.KindThin, lvmthin.KindThick:
	default:
		return fmt.Errorf("replicate: %s is a %s (lv_attr %s): thinback replicates thin and ordinary (thick) volumes: %w", origin.FullName(), k, origin.Attr, lvmthin.ErrNotThin)
	}
	if o.snapshotSize != "" && origin.Kind() != lvmthin.KindThick {
		return usageError{msg: fmt.Sprintf("replicate: --snapshot-size is for thick LVs; %s is a thin volume", origin.FullName())}
	}
	unlock, err := lockReplicate(o.state, origin.FullName().String())
	if err != nil {
		return fmt.Errorf("replicate: %w; is a replicate of %s still running?", err, origin.FullName())
	}
	defer unlockWarn(e, unlock, origin.FullName().String())

	src := &replicaSource{e: e, origin: origin, o: o}
	args := replicateAgentArgs(o.dest.Path, o.pool, o.snapback, o.checkpointMiB)
	conn, err := remote.Dial(ctx, o.dest, o.remote, "replicate", args...)
	if err != nil {
		return fmt.Errorf("replicate: %w", err)
	}
	res, err := replica.Send(ctx, conn, src, replica.Options{
		Dest: o.dest.String(), Host: o.dest.Host,
		Rollback: o.rollback, Create: o.create, Keep: o.keep, Level: o.level,
	})
	if cerr := conn.Close(); err == nil && cerr != nil {
		err = cerr
	}
	var re *replica.RemoteError
	if errors.As(err, &re) {
		err = &remoteError{where: o.dest.String(), code: re.Code, msg: re.Msg}
	}
	if err != nil {
		return fmt.Errorf("replicate %s to %s: %w", origin.FullName(), o.dest, err)
	}
	res.Dest = o.dest.String()
	if o.json {
		b, err := json.Marshal(struct {
			Volume string `json:"volume"`
			*replica.Result
		}{origin.FullName().String(), res})
		if err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
	} else if !o.quiet {
		printable.Sayf(e.stderr, "%s", replicateSummary(origin.FullName().String(), res))
	}
	for _, w := range res.Warnings {
		printable.Sayf(e.stderr, "warning: %s", w)
	}
	return nil
}

// replicateAgentArgs are the arguments of the receiving agent.
func replicateAgentArgs(target, pool, snapback string, checkpointMiB int64) []string {
	args := []string{target}
	if pool != "" {
		args = append(args, "--pool", pool)
	}
	if snapback != "" {
		args = append(args, "--snapback", snapback)
	}
	if checkpointMiB > 0 {
		args = append(args, "--checkpoint-mib", strconv.FormatInt(checkpointMiB, 10))
	}
	return args
}

// lockReplicate takes the lock of a replicated volume, beside the state
// file: one replicate of a volume runs at a time.
func lockReplicate(state, volume string) (func() error, error) {
	if err := stateDir(state, true); err != nil {
		return nil, err
	}
	return catalog.LockFile(filepath.Join(filepath.Dir(state), "locks", "replicate-"+catalog.DirName(volume)+".lock"), volume)
}

// replicateSummary is replicate's one line.
func replicateSummary(volume string, r *replica.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "replicated %s to %s: %s", volume, r.Dest, r.Kind)
	switch {
	case r.Kind == replica.Resumed:
		fmt.Fprintf(&b, " from byte %d (%s not sent again)", r.ResumedFrom, bytesHuman(r.ResumedFrom))
	case r.Base != "":
		fmt.Fprintf(&b, " from %s", r.Base)
	}
	fmt.Fprintf(&b, "; both hold %s now; %s read, %s delta, %s on the wire, %s written, %s zeroed",
		r.Snapshot, bytesHuman(r.BytesRead), bytesHuman(r.DeltaBytes), bytesHuman(r.WireSent), bytesHuman(r.WrittenBytes), bytesHuman(r.ZeroedBytes))
	if r.RolledBack {
		b.WriteString("; the target was rolled back first")
	}
	if r.Created {
		b.WriteString("; the target was created")
	}
	sec := func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
	}
	fmt.Fprintf(&b, "; in %s (query %s, snapshot %s, transfer %s of which apply %s, commit %s, rotation %s)",
		sec(r.Seconds), sec(r.QuerySeconds), sec(r.SnapshotSeconds), sec(r.TransferSeconds), sec(r.ApplySeconds), sec(r.CommitSeconds), sec(r.RotateSeconds))
	if r.Snapback != "" {
		fmt.Fprintf(&b, "; undo on the receiving host with: thinback apply %s --to TARGET", r.Snapback)
	}
	for _, n := range r.Notes {
		b.WriteString("; " + n)
	}
	return b.String()
}

// replicaSnapshotInfix names the source's replication snapshots,
// LV.replica.<time>: apart from backup's LV.thinback.<time>, whose
// rotation removes the LV.thinback.* snapshots it did not record, so that
// a volume both backed up and replicated keeps both commands' bases.
const replicaSnapshotInfix = ".replica."

// replicaSource is a thin or thick LV replicated: replica.Source.
type replicaSource struct {
	e      *env
	origin *lvmthin.LV
	o      replicateOptions
	lvs    map[archive.ID]*lvmthin.LV
}

func (s *replicaSource) prefix() string { return s.origin.Name + replicaSnapshotInfix }

// local is the snapshot lv as the replica package knows it: the id,
// name and time backup's delta headers give the LV's state.
func local(lv *lvmthin.LV) replica.Local {
	s := backup.LVSnapshot(lv)
	return replica.Local{ID: s.ID, Name: s.Name, Time: s.Time}
}

func (s *replicaSource) Snapshots(ctx context.Context) ([]replica.Local, error) {
	rep, err := lvmthin.ListVG(ctx, s.origin.VG)
	if err != nil {
		return nil, err
	}
	s.lvs = map[archive.ID]*lvmthin.LV{}
	var ls []*lvmthin.LV
	for _, lv := range rep.LVs {
		if lv.Origin == s.origin.Name && strings.HasPrefix(lv.Name, s.prefix()) {
			ls = append(ls, lv)
		}
	}
	slices.SortStableFunc(ls, func(a, b *lvmthin.LV) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	var out []replica.Local
	for _, lv := range ls {
		l := local(lv)
		s.lvs[l.ID] = lv
		out = append(out, l)
	}
	return out, nil
}

func (s *replicaSource) Take(ctx context.Context) (replica.Local, error) {
	existing := make([]*lvmthin.LV, 0, len(s.lvs))
	for _, lv := range s.lvs {
		existing = append(existing, lv)
	}
	name := lvmthin.SnapshotName(s.prefix(), existing, time.Now())
	vars := map[string]string{"THINBACK_VOLUME": s.origin.FullName().String(), "THINBACK_SOURCE": s.origin.FullName().String(),
		"THINBACK_SNAPSHOT": s.origin.VG + "/" + name}
	if err := backup.RunHook(ctx, s.e.stderr, "pre", s.o.pre, vars); err != nil {
		return replica.Local{}, err
	}
	var snap *lvmthin.LV
	var err error
	if s.origin.Kind() == lvmthin.KindThick {
		var size int64
		if size, err = backup.ClassicSnapshotSize(ctx, s.origin, s.o.snapshotSize); err == nil {
			snap, err = lvmthin.CreateClassicSnapshot(ctx, s.origin.FullName(), name, lvmthin.ClassicSnapshotOptions{Size: size, ReadOnly: true})
		}
	} else {
		snap, err = lvmthin.CreateSnapshotOf(ctx, s.origin, name, lvmthin.SnapshotOptions{ReadOnly: true, Activate: true})
	}
	if perr := backup.RunHook(context.WithoutCancel(ctx), s.e.stderr, "post", s.o.post, vars); perr != nil && err == nil {
		err = perr
		if rerr := lvmthin.RemoveSnapshotLV(context.WithoutCancel(ctx), snap); rerr != nil {
			err = fmt.Errorf("%w\nand the snapshot %s could not be removed: %v; remove it with lvremove", err, snap.FullName(), rerr)
		}
	}
	if err != nil {
		return replica.Local{}, err
	}
	l := local(snap)
	s.lvs[l.ID] = snap
	return l, nil
}

func (s *replicaSource) Open(ctx context.Context, snap replica.Local, base *replica.Local, from int64) (*backup.Outgoing, error) {
	so := backup.LVSendOptions{
		Snap: snap.Name,
		LV:   backup.LVOptions{ReleaseStale: s.o.releaseStale, Waiting: waitingLine(s.e), Tool: toolName()},
		Progress: func(total int64) backup.Progress {
			return newProgress(s.e.stderr, s.o.quiet || s.o.json, "replicated", total)
		},
	}
	if base != nil {
		so.Base = base.Name
	}
	out, err := backup.OpenLVSend(ctx, so)
	if errors.Is(err, lvmthin.ErrBaseInvalid) && base != nil {
		// The base's copy-on-write store overflowed: a full.
		so.Base = ""
		out, err = backup.OpenLVSend(ctx, so)
	}
	if err != nil {
		return nil, err
	}
	if from > 0 {
		out.Header.ResumeFrom = from
	}
	return out, nil
}

func (s *replicaSource) Resumable() bool { return true }

func (s *replicaSource) Remove(ctx context.Context, l replica.Local) error {
	lv := s.lvs[l.ID]
	if lv == nil {
		return fmt.Errorf("snapshot %s: %w", l.Name, lvmthin.ErrNotFound)
	}
	if err := lvmthin.RemoveSnapshotLV(ctx, lv); err != nil {
		return err
	}
	delete(s.lvs, l.ID)
	return nil
}

// runPromote makes the thin replica named spelling an ordinary LV, for a
// failover: unchanged since its newest replica snapshot (or rolled back to
// it), then no replica snapshot tagged any more.
func runPromote(ctx context.Context, e *env, spelling string, rollback, quiet bool) error {
	n, err := lvmthin.ParseName(spelling)
	if err != nil {
		return usageError{msg: "replicate --promote: " + err.Error()}
	}
	rep, err := lvmthin.ListVG(ctx, n.VG)
	if err != nil {
		return fmt.Errorf("replicate --promote: %w", err)
	}
	snaps, err := rep.ReplicaSnapshots(n)
	if err != nil {
		return fmt.Errorf("replicate --promote: %w", err)
	}
	if len(snaps) == 0 {
		return fmt.Errorf("replicate --promote: %s has no replica snapshot: it is no replica (or was promoted already); nothing done: %w", n, lvmthin.ErrNotSnapshot)
	}
	target, err := rep.Lookup(n)
	if err != nil {
		return fmt.Errorf("replicate --promote: %w", err)
	}
	held := snaps[len(snaps)-1]
	mod, err := lvmthin.CompareReplica(ctx, target, held, lvmthin.ReserveOptions{})
	if err != nil {
		return fmt.Errorf("replicate --promote: %w", err)
	}
	rolled := false
	if mod.Changed {
		if !rollback {
			return fmt.Errorf("replicate --promote: %w", lvmthin.ModifiedError(target, held, mod))
		}
		if _, err := lvmthin.RollbackReplica(ctx, target, held); err != nil {
			return fmt.Errorf("replicate --promote: %w", err)
		}
		rolled = true
	}
	unmarked, err := lvmthin.UnmarkReplica(ctx, n)
	if err != nil {
		return fmt.Errorf("replicate --promote: %w", err)
	}
	if !quiet {
		src, _ := lvmthin.ReplicaSource(held)
		how := ""
		if rolled {
			how = " (rolled back to it first)"
		}
		printable.Sayf(e.stderr, "promoted %s: it holds source snapshot %s, as %s does%s; %d replica snapshots untagged (lvremove them when no longer wanted)",
			n, src, held.FullName(), how, len(unmarked))
	}
	return nil
}
