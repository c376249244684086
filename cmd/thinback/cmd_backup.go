package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/metrics"
	"github.com/thinback/thinback/cmd/internal/pointintime"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/prune"
	"github.com/thinback/thinback/lvmthin"
	"github.com/urfave/cli/v2"
)

func backupCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up a thin or thick LVM volume, or an image, into a store (the cron job)",
		ArgsUsage: "VG/LV... (or --all VG, or --file IMAGE)",
		Description: "For a thin LV: takes a read-only thin snapshot named LV.thinback.<UTC time> (between the\n" +
			"--pre and --post commands, e.g. virsh domfsfreeze/domfsthaw of a VM), sends what changed since the newest backed-up\n" +
			"snapshot still on the pool (a full the first time, or when that snapshot is gone),\n" +
			"writes the delta file into the store and records it, then removes thinback's older\n" +
			"snapshots of the LV: only the newest is kept, for the next incremental. The LV itself\n" +
			"is never written.\n\n" +
			"For an ordinary (thick) LV: the same, with a read-only classic snapshot (lvcreate -s, its\n" +
			"copy-on-write store sized by --snapshot-size and taken from the VG's free space). The chunks\n" +
			"written since the previous backup are those listed in the previous snapshot's exception\n" +
			"table; they are read from the new snapshot. If the previous snapshot was invalidated (its\n" +
			"store filled up), every block is compared with the backup's digests instead, and the run\n" +
			"says so. While a snapshot exists, the first write to each chunk of the LV is copied.\n\n" +
			"For --file: reads the image (holes are skipped) and stores the blocks whose digests\n" +
			"differ from the previous backup's, derived from the store's files; no old image is\n" +
			"needed. The image is only read.\n\n" +
			"With --keep-* options, the volume's snapshots are then pruned (see thinback prune) and\n" +
			"the policy is remembered. One run per volume at a time: a second exits with code 9.\n\n" +
			"Several volumes (VG/LV VG/LV ..., or --all VG: its thin and ordinary LVs, not pools,\n" +
			"snapshots or replicas; --exclude LV or glob, repeatable) are backed up one after the\n" +
			"other into the store, each as it would be alone (--snapshot-size then applies to the\n" +
			"thick ones); a volume that fails is named on its own line and the others go on. A\n" +
			"last line names those that failed, and the exit code is the worst of theirs (130 if\n" +
			"interrupted, which stops the run after the volume being backed up has cleaned up).\n\n" +
			"With --metrics-file, each volume's run is recorded in that file in node_exporter's\n" +
			"textfile format (last success and run times, exit code, bytes, durations, chain length,\n" +
			"store usage), failed runs too.\n\n" +
			"Into an encrypted store, the key is unlocked first (--key-file, --password-file,\n" +
			"--password-command, $THINBACK_PASSWORD or a prompt), before any snapshot is taken: a\n" +
			"wrong or missing one exits with code 14 having done nothing. The delta file is\n" +
			"encrypted under the store's key, and the base of an incremental must be a file that\n" +
			"key wrote: one that is not (put into the store in the clear, under another key, or\n" +
			"altered) stops the backup before anything is taken or written.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.StringFlag{Name: "file", Usage: "back up this image or block device instead of a thin LV"},
			&cli.StringFlag{Name: "all", Usage: "back up every thin and ordinary LV of this volume group", Value: ""},
			&cli.StringSliceFlag{Name: "exclude", Usage: "with --all, not this LV (a name or a shell glob; repeat for more)"},
			metricsFileFlag,
			metricsJobFlag,
			&cli.StringFlag{Name: "volume", Usage: "the volume's name in the store (default: VG/LV, or the image's file name)"},
			&cli.Int64Flag{Name: "block-size", Value: archive.DefaultBlockSize, Usage: "with --file, the block size of a new volume"},
			&cli.StringFlag{Name: "snapshot-size", Usage: backup.SnapshotSizeUsage},
			levelFlag,
			&cli.StringFlag{Name: "pre", Usage: "shell command run before the snapshot (e.g. virsh domfsfreeze vm1; not fsfreeze: LVM freezes a host file system itself)"},
			&cli.StringFlag{Name: "post", Usage: "shell command run after the snapshot, even if it failed (e.g. virsh domfsthaw vm1)"},
			&cli.BoolFlag{Name: "release-stale-metadata-snap", Usage: releaseStaleUsage},
			discoveryFlag,
			jsonFlag, quietFlag,
			stateFlag, allowRollbackFlag,
		}, append(keepFlags(), keyFlags...)...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, -1, "give VG/LV, --all VG or --file IMAGE")
			if err != nil {
				return err
			}
			lvl, err := level(c)
			if err != nil {
				return err
			}
			o := backupOptions{
				store: c.String("store"), file: c.String("file"), volume: c.String("volume"),
				blockSize: c.Int64("block-size"), level: lvl, snapshotSize: c.String("snapshot-size"),
				pre: c.String("pre"), post: c.String("post"), releaseStale: c.Bool("release-stale-metadata-snap"),
				json: c.Bool("json"), quiet: c.Bool("quiet"),
				state: stateFilePath(c.String("state")), allowRollback: c.Bool("allow-rollback"),
				key:         unlocker(e, c),
				metricsFile: c.String("metrics-file"), metricsJob: c.String("metrics-job"),
			}
			all, exclude := c.String("all"), c.StringSlice("exclude")
			if o.discovery, err = discoveryOf(c, "backup"); err != nil {
				return err
			}
			switch {
			case o.file != "" && o.snapshotSize != "":
				return usageError{msg: "backup: --snapshot-size is for thick LVs, not --file"}
			case len(a) >= 1 && o.file != "":
				return usageError{msg: "backup: give either VG/LV or --file, not both"}
			case all != "" && (len(a) > 0 || o.file != ""):
				return usageError{msg: "backup: give either --all VG or VG/LV... or --file, not several"}
			case len(exclude) > 0 && all == "":
				return usageError{msg: "backup: --exclude is for --all VG"}
			case (len(a) > 1 || all != "") && o.volume != "":
				return usageError{msg: "backup: --volume names one volume in the store: give one VG/LV with it, not several or --all"}
			case len(a) == 0 && o.file == "" && all == "":
				return usageError{msg: "backup: give VG/LV, --all VG or --file IMAGE"}
			case o.blockSize < archive.MinBlockSize || o.blockSize > archive.MaxBlockSize || o.blockSize%archive.MinBlockSize != 0:
				return usageError{msg: fmt.Sprintf("backup: --block-size %d is not a multiple of 4096 between 4096 and %d", o.blockSize, archive.MaxBlockSize)}
			}
			if err := checkExcludes(exclude); err != nil {
				return err
			}
			lvs, err := volumeArgs(a)
			if err != nil {
				return err
			}
			if o.retention, err = retentionFrom(c); err != nil {
				return err
			}
			if all == "" && len(lvs) <= 1 {
				if len(a) == 1 {
					o.lv = a[0]
				}
				return runOneBackup(c.Context, e, o)
			}
			var listed lvmthin.CommandStats
			if all != "" {
				if lvs, listed, err = allVolumes(c.Context, all, exclude); err != nil {
					return usageOf(err)
				}
			}
			return runBackups(c.Context, e, o, lvs, listed)
		},
	}
}

type backupOptions struct {
	store, file, lv, volume string
	snapshotSize            string
	blockSize               int64
	level                   archive.Level
	pre, post               string
	releaseStale            bool
	discovery               lvmthin.Discovery
	retention               catalog.Retention
	json, quiet             bool
	state                   string // the host's state file, which remembers what it saw in encrypted stores
	allowRollback           bool
	// key unlocks the store's key (storeKey): nil for a store in the
	// clear.
	key func(context.Context, catalog.Repository) (*archive.Key, error)
	// metricsFile is the node_exporter textfile the run is recorded in
	// ("": none), with metricsJob as the series' job label.
	metricsFile, metricsJob string
	// several: one of a backup of several volumes.
	several bool
	// lvmBefore are LVM commands run for this volume before runBackup (the
	// lvs of backup --all), counted in its LVM cost.
	lvmBefore lvmthin.CommandStats
}

// metricsFileFlag is --metrics-file of the commands that record their
// runs for node_exporter's textfile collector.
var metricsFileFlag = &cli.StringFlag{Name: "metrics-file", EnvVars: []string{"THINBACK_METRICS_FILE"},
	Usage: "record each volume's run in this node_exporter textfile (e.g. /var/lib/node_exporter/textfile/thinback.prom)"}

// metricsJobFlag is the job label of the series a command records.
var metricsJobFlag = &cli.StringFlag{Name: "metrics-job", Usage: "the job label of the metrics file's series (thinback run sets it)"}

// volumeArgs parses the VG/LV arguments of a backup of several volumes,
// refusing one given twice (its second backup would find nothing to do
// but take another snapshot). One argument is left to runBackup, which
// says what is wrong with it as it always has.
func volumeArgs(a []string) ([]lvmthin.Name, error) {
	if len(a) <= 1 {
		return nil, nil
	}
	seen := map[lvmthin.Name]bool{}
	var lvs []lvmthin.Name
	for _, s := range a {
		n, err := lvmthin.ParseName(s)
		if err != nil {
			return nil, usageError{msg: fmt.Sprintf("backup: %v", err)}
		}
		if seen[n] {
			return nil, usageError{msg: fmt.Sprintf("backup: %s is given twice", n)}
		}
		seen[n] = true
		lvs = append(lvs, n)
	}
	return lvs, nil
}

// runOneBackup is backup of one volume or image: runBackup, then the
// metrics file, written whether the backup failed or not. A metrics file
// that cannot be written fails a backup that did not (exit 1): a stale
// file would tell the monitoring that nothing ran.
func runOneBackup(ctx context.Context, e *env, o backupOptions) error {
	done, err := runBackup(ctx, e, o)
	if o.metricsFile == "" {
		return err
	}
	merr := writeMetrics(e, o.metricsFile, []metrics.Outcome{done.outcome(o, exitCode(err))})
	switch {
	case merr == nil:
		return err
	case err == nil:
		return merr
	}
	printable.Sayf(e.stderr, "thinback: %s", errorLine(ctx, merr))
	return err
}

func runBackup(ctx context.Context, e *env, o backupOptions) (done backupDone, _ error) {
	start := time.Now()
	done.start = start
	// The image is opened before the store or the lock is touched.
	var fileSrc *backup.FileSource
	if o.file != "" {
		var err error
		if fileSrc, err = backup.OpenFile(o.file, o.blockSize, toolName()); err != nil {
			return done, fmt.Errorf("backup: %w", err)
		}
		defer fileSrc.Close()
	}
	s, err := openStore(ctx, e, o.store, true)
	if err != nil {
		return done, err
	}
	defer closeStore(e, s)
	// Before anything is taken or written: a wrong passphrase leaves
	// nothing behind.
	var key *archive.Key
	if o.key != nil {
		if key, err = o.key(ctx, s); err != nil {
			return done, fmt.Errorf("backup: %w", err)
		}
	}
	var src backup.Source = fileSrc
	var commands func() lvmthin.CommandStats
	if o.file == "" {
		var counted func() lvmthin.CommandStats
		ctx, counted = lvmthin.CountCommands(ctx)
		commands = func() lvmthin.CommandStats { return plusStats(o.lvmBefore, counted()) }
		defer func() { done.lvmSeconds = commands().LVMTime.Seconds() }()
		src, err = backup.OpenLV(ctx, o.lv, backup.LVOptions{
			SnapshotSize: o.snapshotSize, ThickOnly: o.several, ReleaseStale: o.releaseStale, Discovery: o.discovery, Waiting: waitingLine(e), Tool: toolName(),
		})
		if err != nil {
			return done, usageOf(fmt.Errorf("backup: %w", err))
		}
	}
	// An encrypted store older than this host saw it is not backed up
	// into (unless --allow-rollback), and its files are left as they are
	// (a newer file whose record was deleted is no orphan to remove);
	// what it holds after the backup is remembered.
	name := o.volume
	if name == "" {
		name = src.Identify().Name
	}
	done.volume = name
	guard, err := guardBackup(e, s, o.state, name, o.allowRollback)
	if err != nil {
		return done, fmt.Errorf("backup: %w", err)
	}
	if removed, err := s.RemoveOrphans(); err != nil {
		printable.Sayf(e.stderr, "thinback: removing files of %s left by an interrupted run: %v", o.store, err)
	} else if len(removed) > 0 {
		printable.Sayf(e.stderr, "thinback: removed %d file(s) left by an interrupted run: %s", len(removed), strings.Join(removed, ", "))
	}
	var reportErr error
	res, err := backup.Run(ctx, s, src, backup.Options{
		Volume: o.volume, Level: o.level, Key: key,
		Pre: o.pre, Post: o.post, HookOutput: e.stderr,
		Retention: o.retention,
		Prune:     pruneAfterBackup(s, o.level, key),
		Progress: func(total int64) backup.Progress {
			return newProgress(e.stderr, o.quiet || o.json, "backed up", total)
		},
		Report: func(res *backup.Result) error {
			for _, w := range res.Warnings {
				warn(e, "%s", w)
			}
			res.Seconds = time.Since(start).Seconds()
			if commands != nil {
				cs := commands()
				res.LVMCommands, res.DMSetupCommands, res.DMIoctls, res.LVMSeconds = cs.LVM, cs.DMSetup, cs.DMIoctls, cs.LVMTime.Seconds()
			}
			reportErr = printBackup(e, o, res, commands)
			return reportErr
		},
		Warn: func(msg string) { warn(e, "%s", msg) },
	})
	if res != nil {
		remember(e, guard, s, res.Volume)
		done.res, done.volume = res, res.Volume
		if o.metricsFile != "" {
			done.chain, done.storeBytes = storeUsage(s, res.Volume)
		}
	}
	if err != nil && err != reportErr {
		return done, usageOf(fmt.Errorf("backup: %w", err))
	}
	return done, err
}

// storeUsage returns the length of the volume's newest chain in the store
// and the bytes of its files there, for the metrics file (0 and 0 when
// the catalog cannot be read: unknown).
func storeUsage(s catalog.Repository, volume string) (chain int, size int64) {
	_ = s.View(func(tx *catalog.Tx) error {
		snaps, err := tx.Snapshots(volume)
		if err != nil || len(snaps) == 0 {
			return err
		}
		for _, sn := range snaps {
			size += sn.FileSize
		}
		latest, err := tx.Latest(volume)
		if err != nil {
			return err
		}
		c, err := tx.Chain(latest.ID)
		chain = len(c)
		return err
	})
	return chain, size
}

// pruneAfterBackup is backup's retention: thinback prune of the volume,
// which returns the sequence numbers it removed.
func pruneAfterBackup(s catalog.Repository, level archive.Level, key *archive.Key) func(context.Context, string, catalog.Retention) ([]uint64, error) {
	return func(ctx context.Context, name string, r catalog.Retention) ([]uint64, error) {
		pr, err := prune.Volume(ctx, s, name, r, prune.Options{Level: level, Tool: toolName(), Key: key})
		var removed []uint64
		if pr != nil {
			for _, r := range pr.Removed {
				removed = append(removed, r.Seq)
			}
		}
		return removed, err
	}
}

// printBackup prints a backup's result: one JSON object, or one line.
func printBackup(e *env, o backupOptions, res *backup.Result, commands func() lvmthin.CommandStats) error {
	if o.json {
		enc := json.NewEncoder(e.stdout)
		return enc.Encode(res)
	}
	if o.quiet {
		return nil
	}
	line := fmt.Sprintf("backup %s: %s #%d", res.Volume, res.Kind, res.Seq)
	if res.Parent != "" {
		line += " from " + res.Parent
	}
	if res.Method == "digests" {
		line += " by comparing digests (base snapshot invalid)"
	}
	line += fmt.Sprintf(", read %s, changed %s, stored %s, in %s", bytesHuman(res.BytesRead), bytesHuman(res.DataBytes+res.ZeroBytes),
		bytesHuman(res.StoredBytes), time.Duration(res.Seconds*float64(time.Second)).Round(time.Millisecond))
	if commands != nil {
		line += "; " + backup.LVMCost(commands())
	}
	if len(res.Pruned) > 0 {
		line += "; pruned " + strings.Join(res.Pruned, " ")
	}
	for _, n := range res.Notes {
		printable.Sayf(e.stderr, "thinback: %s", n)
	}
	printable.Sayf(e.stderr, "%s", line)
	return nil
}

// usageOf makes an error of the packages under cmd/internal that is a
// bad command line (a backup.UsageError or a pointintime.UsageError) a
// usage error, with the same text.
func usageOf(err error) error {
	var bu *backup.UsageError
	var pu *pointintime.UsageError
	if errors.As(err, &bu) || errors.As(err, &pu) {
		return usageError{msg: err.Error()}
	}
	return err
}
