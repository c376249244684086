package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/lvmthin"
	"github.com/urfave/cli/v2"
)

func backupCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "back up a thin or thick LVM volume, or an image, into a store (the cron job)",
		ArgsUsage: "VG/LV (or --file IMAGE)",
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
			"the policy is remembered. One run per volume at a time: a second exits with code 9.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.StringFlag{Name: "file", Usage: "back up this image or block device instead of a thin LV"},
			&cli.StringFlag{Name: "volume", Usage: "the volume's name in the store (default: VG/LV, or the image's file name)"},
			&cli.Int64Flag{Name: "block-size", Value: archive.DefaultBlockSize, Usage: "with --file, the block size of a new volume"},
			&cli.StringFlag{Name: "snapshot-size", Usage: snapshotSizeUsage},
			levelFlag,
			&cli.StringFlag{Name: "pre", Usage: "shell command run before the snapshot (e.g. virsh domfsfreeze vm1; not fsfreeze: LVM freezes a host file system itself)"},
			&cli.StringFlag{Name: "post", Usage: "shell command run after the snapshot, even if it failed (e.g. virsh domfsthaw vm1)"},
			&cli.BoolFlag{Name: "release-stale-metadata-snap", Usage: releaseStaleUsage},
			discoveryFlag,
			jsonFlag, quietFlag,
		}, keepFlags()...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1, "give VG/LV or --file IMAGE")
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
			}
			if o.discovery, err = discoveryOf(c, "backup"); err != nil {
				return err
			}
			switch {
			case o.file != "" && o.snapshotSize != "":
				return usageError{msg: "backup: --snapshot-size is for thick LVs, not --file"}
			case len(a) == 1 && o.file != "":
				return usageError{msg: "backup: give either VG/LV or --file, not both"}
			case len(a) == 0 && o.file == "":
				return usageError{msg: "backup: give VG/LV or --file IMAGE"}
			case o.blockSize < archive.MinBlockSize || o.blockSize > archive.MaxBlockSize || o.blockSize%archive.MinBlockSize != 0:
				return usageError{msg: fmt.Sprintf("backup: --block-size %d is not a multiple of 4096 between 4096 and %d", o.blockSize, archive.MaxBlockSize)}
			}
			if len(a) == 1 {
				o.lv = a[0]
			}
			if o.retention, err = retentionFrom(c); err != nil {
				return err
			}
			return runBackup(c.Context, e, o)
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
}

// backupResult is the one line (or JSON object) a backup run reports.
type backupResult struct {
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
	// lvremove) and dmsetup commands the run started, and their time.
	LVMCommands     int      `json:"lvm_commands,omitempty"`
	DMSetupCommands int      `json:"dmsetup_commands,omitempty"`
	LVMSeconds      float64  `json:"lvm_seconds,omitempty"`
	Pruned          []string `json:"pruned,omitempty"`
	Notes           []string `json:"notes,omitempty"`
	// Warnings are failures that did not fail the run (a lock or an old
	// snapshot not released); they are printed even with --quiet.
	Warnings []string `json:"warnings,omitempty"`
}

func runBackup(ctx context.Context, e *env, o backupOptions) error {
	start := time.Now()
	// The image is opened before the store or the lock is touched: a path
	// that is not an image (a FIFO's open would block forever) fails here,
	// holding nothing.
	var src *os.File
	if o.file != "" {
		var err error
		if src, err = archive.OpenFile(o.file); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		defer src.Close()
	}
	s, err := openStore(ctx, e, o.store, true)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	if removed, err := s.RemoveOrphans(); err != nil {
		printable.Sayf(e.stderr, "thinback: removing files of %s left by an interrupted run: %v", o.store, err)
	} else if len(removed) > 0 {
		printable.Sayf(e.stderr, "thinback: removed %d file(s) left by an interrupted run: %s", len(removed), strings.Join(removed, ", "))
	}
	name := o.volume
	var origin *lvmthin.LV
	var rep *lvmthin.Report // the run's one lvs report of the volume group
	var commands func() lvmthin.CommandStats
	if o.file != "" {
		if name == "" {
			name = filepath.Base(o.file)
		}
	} else {
		ctx, commands = lvmthin.CountCommands(ctx)
		if origin, rep, err = lookupThin(ctx, o.lv, nil); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		switch k := origin.Kind(); k {
		case lvmthin.KindThin, lvmthin.KindThick:
		case lvmthin.KindThinSnapshot, lvmthin.KindClassicSnapshot:
			return usageError{msg: fmt.Sprintf("backup: %s is a %s (lv_attr %s): back up its origin %s/%s; thinback snapshots it itself", origin.FullName(), k, origin.Attr, origin.VG, origin.Origin)}
		default:
			return fmt.Errorf("backup: %s is a %s (lv_attr %s): thinback backs up thin and ordinary (thick) volumes: %w", origin.FullName(), k, origin.Attr, lvmthin.ErrNotThin)
		}
		if o.snapshotSize != "" && origin.Kind() != lvmthin.KindThick {
			return usageError{msg: fmt.Sprintf("backup: --snapshot-size is for thick LVs; %s is a thin volume, whose snapshots take space from its pool as it is written", origin.FullName())}
		}
		if name == "" {
			name = origin.FullName().String()
		}
	}
	unlock, err := s.LockVolume(name)
	if err != nil {
		return fmt.Errorf("backup: %w; is a backup of %s still running?", err, name)
	}
	defer unlockWarn(e, unlock, name)

	var res *backupResult
	if o.file != "" {
		res, err = backupFile(ctx, e, s, name, src, o)
	} else if origin.Kind() == lvmthin.KindThick {
		res, err = backupClassic(ctx, e, s, name, origin, o)
	} else {
		res, err = backupLVM(ctx, e, s, name, rep, origin, o)
	}
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	var pruneErr error
	if !o.retention.IsZero() {
		err := s.SetRetention(name, o.retention)
		if err == nil {
			var pr *pruneResult
			pr, err = pruneVolume(ctx, s, name, o.retention, false, o.level)
			if pr != nil {
				for _, r := range pr.Removed {
					res.Pruned = append(res.Pruned, fmt.Sprintf("#%d", r.Seq))
				}
			}
		}
		if err != nil {
			pruneErr = fmt.Errorf("backup: the backup is stored, but pruning failed: %w", err)
		}
	}
	for _, w := range res.Warnings {
		warn(e, "%s", w)
	}
	res.Seconds = time.Since(start).Seconds()
	if commands != nil {
		cs := commands()
		res.LVMCommands, res.DMSetupCommands, res.LVMSeconds = cs.LVM, cs.DMSetup, cs.LVMTime.Seconds()
	}
	if o.json {
		enc := json.NewEncoder(e.stdout)
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else if !o.quiet {
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
			line += "; " + lvmCost(commands())
		}
		if len(res.Pruned) > 0 {
			line += "; pruned " + strings.Join(res.Pruned, " ")
		}
		for _, n := range res.Notes {
			printable.Sayf(e.stderr, "thinback: %s", n)
		}
		printable.Sayf(e.stderr, "%s", line)
	}
	return pruneErr
}

// volumeFor returns the store's record of a volume, or want and a pointer
// to it when the store has none yet. A new volume is not recorded here:
// storeDelta records it together with its first snapshot, so a first
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

// chainDigests opens the per-block digests of snapshot rec's chain, from
// the store's files (each checked against its record: OpenChain), for a
// backup that compares a volume's blocks with them. The returned function
// closes the files.
func chainDigests(s catalog.Repository, rec catalog.Snapshot, blockSize int64) (*archive.ChainDigests, func(), error) {
	var chain []catalog.Snapshot
	var vol catalog.Volume
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if vol, err = tx.Volume(rec.Volume); err != nil {
			return err
		}
		chain, err = tx.Chain(rec.ID)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	files, err := record.OpenChain(s.OpenDelta, s.String(), vol, chain)
	if err != nil {
		return nil, nil, err
	}
	closeAll := func() { record.CloseAll(files) }
	var inputs []archive.ChainInput
	for _, f := range files {
		inputs = append(inputs, archive.ChainInput{Name: f.Name(), File: f})
	}
	prev, err := archive.OpenChainDigests(inputs)
	if err == nil && prev.BlockSize() != blockSize {
		err = fmt.Errorf("its block size is %d, the volume's %d", prev.BlockSize(), blockSize)
	}
	if err != nil {
		closeAll()
		return nil, nil, err
	}
	return prev, closeAll, nil
}

// storeDelta writes a delta file of src into the store and records it,
// with rec's LVM fields, and with the volume's record when newVol is not
// nil (its first snapshot: the volume is recorded with it or not at all).
func storeDelta(ctx context.Context, s catalog.DeltaWriter, dir string, h *archive.Header, src archive.Source, level archive.Level, prog progress, rec catalog.Snapshot, newVol *catalog.Volume) (catalog.Snapshot, error) {
	write := func(out io.Writer) (catalog.Snapshot, error) {
		w := archive.NewWriter(out)
		if err := w.WriteHeader(h); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := archive.Send(ctx, w, src, archive.SendOptions{Level: level, Progress: prog.Add}); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := w.Close(); err != nil {
			return catalog.Snapshot{}, err
		}
		full := record.OfFile(h, w.Trailer())
		full.LVName, full.LVUUID, full.ThinID = rec.LVName, rec.LVUUID, rec.ThinID
		return full, nil
	}
	var full catalog.Snapshot
	var err error
	if newVol != nil {
		full, err = s.WriteVolumeDelta(*newVol, record.ID(h.Snapshot.ID), write)
	} else {
		full, err = s.WriteDelta(h.VolumeName, record.ID(h.Snapshot.ID), write)
	}
	return full, storeWriteError(dir, err)
}

// storeWriteError says what to do about a store that cannot take a file.
func storeWriteError(dir string, err error) error {
	switch {
	case errors.Is(err, catalog.ErrNoSpace), errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("writing into store %s: %w; nothing was kept: free space (thinback prune) and run again", dir, err)
	case errors.Is(err, catalog.ErrTooLarge):
		return fmt.Errorf("writing into store %s: %w; nothing was kept", dir, err)
	}
	return err
}

func backupFile(ctx context.Context, e *env, s catalog.Repository, name string, f *os.File, o backupOptions) (*backupResult, error) {
	abs, err := filepath.Abs(o.file)
	if err != nil {
		return nil, err
	}
	size, block, err := archive.FileSize(f)
	if err != nil {
		return nil, err
	}
	v, newVol, err := volumeFor(s, catalog.Volume{Name: name, UUID: archive.NewID().String(), Kind: catalog.KindFile, Source: abs, BlockSize: o.blockSize})
	if err != nil {
		return nil, err
	}
	res := &backupResult{Volume: name, Kind: "full"}
	if v.Source != abs {
		res.Notes = append(res.Notes, fmt.Sprintf("volume %s was backed up from %s; now from %s", name, v.Source, abs))
	}
	// The previous backup's block digests, from its chain's files.
	var prev *archive.ChainDigests
	var latest catalog.Snapshot
	err = s.View(func(tx *catalog.Tx) error {
		var err error
		if latest, err = tx.Latest(name); errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if latest.ID != "" {
		var closeChain func()
		prev, closeChain, err = chainDigests(s, latest, v.BlockSize)
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("cannot read the chain of the newest backup (%v): making a full; run thinback verify", err))
		} else {
			defer closeChain()
		}
	}

	vars := map[string]string{"THINBACK_VOLUME": name, "THINBACK_SOURCE": abs}
	if err := runHook(ctx, e, "pre", o.pre, vars); err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	h := &archive.Header{
		BlockSize: v.BlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: name, VolumeUUID: v.UUID, VolumeSize: size,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: name + "@" + now.Format("20060102T150405Z"), Time: now},
		Tool:     toolName(),
	}
	h.SetAttr(archive.AttrFilePath, abs)
	prog := newProgress(e.stderr, o.quiet || o.json, "backed up", size)
	var src archive.Source
	var ds *archive.DigestSource
	if prev != nil {
		if h.Parent, err = record.ParentOf(latest); err != nil {
			return nil, err
		}
		// The parent's size as its file says (OpenChain checked the record
		// against it).
		h.ParentSize = prev.Header().VolumeSize
		ds, err = archive.NewDigestSource(f, size, v.BlockSize, prev, archive.DigestSourceOptions{Progress: prog.Add})
		if err != nil {
			return nil, err
		}
		defer ds.Close()
		src = ds
		res.Kind, res.Parent = "incremental", fmt.Sprintf("#%d", latest.Seq)
	} else {
		src = archive.NewFileSource(f, size, block)
	}
	var p progress = prog
	if ds != nil {
		p = noProgress{} // the digest source reports what it examines
	}
	rec, err := storeDelta(ctx, s, s.String(), h, src, o.level, p, catalog.Snapshot{}, newVol)
	prog.Done()
	if postErr := runHook(context.WithoutCancel(ctx), e, "post", o.post, vars); postErr != nil && err == nil {
		err = postErr
	}
	if err != nil {
		return nil, err
	}
	res.Snapshot, res.Seq, res.File = rec.ID, rec.Seq, rec.File
	res.DataBytes, res.ZeroBytes, res.StoredBytes = rec.DataBytes, rec.ZeroBytes, rec.FileSize
	if ds != nil {
		res.BytesRead = ds.Stats().Read
	} else {
		res.BytesRead = rec.DataBytes // holes are not read; zero blocks are
	}
	return res, nil
}

func backupLVM(ctx context.Context, e *env, s catalog.Repository, name string, rep *lvmthin.Report, origin *lvmthin.LV, o backupOptions) (_ *backupResult, err error) {
	v, newVol, err := volumeFor(s, catalog.Volume{Name: name, UUID: origin.UUID, Kind: catalog.KindLVMThin, Source: origin.FullName().String(), BlockSize: thinBlockSize(origin.ChunkSize)})
	if err != nil {
		return nil, err
	}
	if v.UUID != origin.UUID {
		return nil, fmt.Errorf("the store's volume %s is the backup of LV uuid %s, but %s has uuid %s (was it recreated?): back it up under another name with --volume", name, v.UUID, origin.FullName(), origin.UUID)
	}
	res := &backupResult{Volume: name, Kind: "full"}

	// The base: the newest recorded snapshot whose LV is still on the pool.
	existing, err := rep.Snapshots(origin.FullName())
	if err != nil {
		return nil, err
	}
	base, baseRec, notes, err := newestBase(s, name, existing, "the pool")
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, notes...)

	// Snapshot, between the hooks.
	lvName := snapshotName(origin, existing, time.Now())
	vars := map[string]string{"THINBACK_VOLUME": name, "THINBACK_SOURCE": origin.FullName().String(), "THINBACK_SNAPSHOT": origin.VG + "/" + lvName}
	if err := runHook(ctx, e, "pre", o.pre, vars); err != nil {
		return nil, err
	}
	// Created active, for the delta to read: no lvchange -ay.
	snap, err := lvmthin.CreateSnapshotOf(ctx, origin, lvName, lvmthin.SnapshotOptions{ReadOnly: true, Activate: true})
	if postErr := runHook(context.WithoutCancel(ctx), e, "post", o.post, vars); postErr != nil && err == nil {
		err = fmt.Errorf("%w (the snapshot %s/%s was taken)", postErr, origin.VG, lvName)
		if snap != nil {
			err = removeUnrecorded(ctx, snap, err)
		}
		return nil, err
	}
	if err != nil {
		return nil, err
	}
	recorded := false
	defer func() {
		if !recorded && err != nil {
			// Not in the store: it must not become the next base.
			err = removeUnrecorded(ctx, snap, err)
		}
	}()
	// Left inactive, as LVM leaves a new thin snapshot, once the delta is
	// closed (deferred calls run in reverse: this after d.Close).
	defer func() {
		if !recorded || res == nil {
			return
		}
		if derr := lvmthin.Deactivate(context.WithoutCancel(ctx), snap.FullName()); derr != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("the backup is stored, but its snapshot %s could not be deactivated: %v", snap.FullName(), derr))
		}
	}()

	d, err := lvmthin.OpenDelta(ctx, lvmthin.DeltaOptions{Snap: snap, Base: base, ReleaseStale: o.releaseStale, Discovery: o.discovery, Waiting: waitingLine(e)})
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := d.Close(); cerr != nil && err != nil {
			err = fmt.Errorf("%w (and closing %s failed: %v)", err, snap.FullName(), cerr)
		}
	}()
	h := thinHeader(snap, base, origin)
	h.VolumeName, h.VolumeUUID = name, origin.UUID
	if base != nil {
		if h.Parent.ID, err = record.ParseID(baseRec.ID); err != nil {
			return nil, fmt.Errorf("snapshot #%d of %s: %w", baseRec.Seq, name, err)
		}
		res.Kind, res.Parent = "incremental", fmt.Sprintf("#%d", baseRec.Seq)
	}
	prog := newProgress(e.stderr, o.quiet || o.json, "backed up", d.Stats().DataBytes)
	rec, err := storeDelta(ctx, s, s.String(), h, d, o.level, prog,
		catalog.Snapshot{LVName: snap.Name, LVUUID: snap.UUID, ThinID: int64(snap.ThinID)}, newVol)
	prog.Done()
	if err != nil {
		return nil, err
	}
	recorded = true
	if err := d.Close(); err != nil {
		res.Warnings = append(res.Warnings, fmt.Sprintf("the backup is stored, but closing %s failed: %v", snap.FullName(), err))
	}
	res.Snapshot, res.Seq, res.File, res.LVSnapshot = rec.ID, rec.Seq, rec.File, snap.FullName().String()
	res.DataBytes, res.ZeroBytes, res.StoredBytes, res.BytesRead = rec.DataBytes, rec.ZeroBytes, rec.FileSize, d.Stats().DataBytes
	ds := d.Stats()
	res.Discovery, res.MetadataBytes, res.MetadataSnapHeld = string(ds.Discovery), ds.MetadataBytes, ds.MetadataSnapHeld.Seconds()

	// Rotate: the new snapshot is durable in the store.
	res.Warnings = append(res.Warnings, removeOlderSnapshots(ctx, origin, existing, snap)...)
	return res, nil
}

// removeUnrecorded removes a snapshot thinback took for a backup that
// failed (err): it is in no store, so it must not stay on the pool. A
// failed removal is added to err, with what to do.
func removeUnrecorded(ctx context.Context, snap *lvmthin.LV, err error) error {
	if rerr := lvmthin.RemoveSnapshotLV(context.WithoutCancel(ctx), snap); rerr != nil {
		return fmt.Errorf("%w\nand the snapshot %s, which is in no store, could not be removed: %v; remove it with lvremove %s",
			err, snap.FullName(), rerr, snap.FullName())
	}
	return err
}
