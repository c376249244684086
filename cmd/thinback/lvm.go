package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/lvmthin"
	"github.com/urfave/cli/v2"
)

// releaseStaleUsage is the flag's help, shared by send and backup.
const releaseStaleUsage = "release a metadata snapshot of the pool left by a killed run or another program before reserving ours (check first that no other tool is using it)"

// discoveryFlag is send's and backup's choice of how the changed blocks of
// a thin LV are found in the pool's metadata.
var discoveryFlag = &cli.StringFlag{Name: "discovery", Value: string(lvmthin.DiscoverNative),
	Usage: "how changed blocks are found in the thin pool's metadata: native (thinback reads it, " +
		"skipping what the snapshots share) or tools (thin_delta and thin_dump, from thin-provisioning-tools: the fallback)"}

// discoveryOf parses --discovery.
func discoveryOf(c *cli.Context, cmd string) (lvmthin.Discovery, error) {
	d, err := lvmthin.ParseDiscovery(c.String("discovery"))
	if err != nil {
		return "", usageError{msg: cmd + ": --discovery: " + err.Error(), hint: c.Command.HelpName}
	}
	return d, nil
}

// discoverySummary says how a delta's extents were found, for send's
// summary line.
func discoverySummary(ds lvmthin.DeltaStats) string {
	var how string
	if ds.Discovery == lvmthin.DiscoverTools {
		how = fmt.Sprintf("%d ranges from %s", ds.Ranges, ds.Tool)
	} else {
		how = fmt.Sprintf("%d ranges from %s of metadata read natively", ds.Ranges, bytesHuman(ds.MetadataBytes))
	}
	return fmt.Sprintf("%s, metadata snapshot held %s", how, ds.MetadataSnapHeld.Round(time.Millisecond))
}

// thinBlockSize picks a delta file's block size for a pool's chunk size:
// the chunk itself when the format allows it, so each changed chunk is one
// block digest, else 64 KiB, which divides every thin chunk size.
func thinBlockSize(chunk int64) int64 {
	if chunk >= archive.MinBlockSize && chunk <= archive.MaxBlockSize && chunk%archive.MinBlockSize == 0 {
		return chunk
	}
	return archive.DefaultBlockSize
}

// lvSnapshot names a thin snapshot LV's state: its ID is derived from the
// LV's UUID, so a full and a later incremental made from the same LV, on
// any host, agree on it.
func lvSnapshot(lv *lvmthin.LV) archive.Snapshot {
	return archive.Snapshot{ID: archive.DeriveID("lvm", lv.UUID), Name: lv.FullName().String(), Time: lv.Time.UTC()}
}

// thinHeader describes a send of snap (against base, or a full) of origin.
func thinHeader(snap, base, origin *lvmthin.LV) *archive.Header {
	h := &archive.Header{
		BlockSize: thinBlockSize(snap.ChunkSize), Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.FullName().String(), VolumeSize: snap.Size,
		Snapshot: lvSnapshot(snap), Tool: toolName(),
	}
	h.SetAttr(archive.AttrLVMVG, snap.VG)
	h.SetAttr(archive.AttrLVMKind, archive.LVMKindThin)
	h.SetAttr(archive.AttrLVMPool, snap.Pool)
	if origin != nil {
		h.VolumeName, h.VolumeUUID = origin.FullName().String(), origin.UUID
		h.SetAttr(archive.AttrLVMOrigin, origin.Name)
		h.SetAttr(archive.AttrLVMOriginUUID, origin.UUID)
	}
	h.SetAttr(archive.AttrLVMLV, snap.Name)
	h.SetAttr(archive.AttrLVMLVUUID, snap.UUID)
	h.SetAttr(archive.AttrLVMThinID, strconv.FormatUint(uint64(snap.ThinID), 10))
	h.SetAttr(archive.AttrLVMLVTime, snap.Time.UTC().Format(time.RFC3339))
	h.SetAttr(archive.AttrLVMChunkSize, strconv.FormatInt(snap.ChunkSize, 10))
	if base != nil {
		h.Parent, h.ParentSize = lvSnapshot(base), base.Size
		h.SetAttr(archive.AttrLVMParentLV, base.Name)
		h.SetAttr(archive.AttrLVMParentUUID, base.UUID)
		h.SetAttr(archive.AttrLVMParentThinID, strconv.FormatUint(uint64(base.ThinID), 10))
	}
	return h
}

// lookupThin finds an LV by any spelling users type, with one lvs of its
// volume group; the report is returned too, for the run's other questions.
// rep, when not nil, is a report the run already has, used when it is of
// the same volume group.
func lookupThin(ctx context.Context, spelling string, rep *lvmthin.Report) (*lvmthin.LV, *lvmthin.Report, error) {
	n, err := lvmthin.ParseName(spelling)
	if err != nil {
		return nil, nil, usageError{msg: err.Error()}
	}
	if rep == nil || rep.VG != n.VG {
		if rep, err = lvmthin.ListVG(ctx, n.VG); err != nil {
			return nil, nil, err
		}
	}
	lv, err := rep.Lookup(n)
	return lv, rep, err
}

// originOf returns the origin of a thin snapshot from the run's report of
// its volume group, or nil when it is gone.
func originOf(rep *lvmthin.Report, snap *lvmthin.LV) (*lvmthin.LV, error) {
	if snap.Origin == "" {
		return nil, nil
	}
	o, err := rep.Lookup(lvmthin.Name{VG: snap.VG, LV: snap.Origin})
	if errors.Is(err, lvmthin.ErrNotFound) {
		return nil, nil
	}
	return o, err
}

// lvmCost says what a run spent in LVM and device-mapper commands, for the
// summary lines.
func lvmCost(cs lvmthin.CommandStats) string {
	return fmt.Sprintf("%d LVM and %d dmsetup commands in %s", cs.LVM, cs.DMSetup, cs.LVMTime.Round(time.Millisecond))
}

func runSendLVM(ctx context.Context, e *env, o sendOptions, spelling, baseSpelling string) error {
	ctx, commands := lvmthin.CountCommands(ctx)
	snap, rep, err := lookupThin(ctx, spelling, nil)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var base *lvmthin.LV
	if baseSpelling != "" {
		if base, _, err = lookupThin(ctx, baseSpelling, rep); err != nil {
			return fmt.Errorf("send: base: %w", err)
		}
	}
	if k := snap.Kind(); k == lvmthin.KindClassicSnapshot || k == lvmthin.KindThick {
		// A thick LV itself is refused there, with what to snapshot.
		return runSendClassic(ctx, e, o, rep, snap, base)
	}
	origin, err := originOf(rep, snap)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	d, err := lvmthin.OpenDelta(ctx, lvmthin.DeltaOptions{Snap: snap, Base: base, ReleaseStale: o.releaseStale, Discovery: o.discovery, Waiting: waitingLine(e)})
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer d.Close()
	h := thinHeader(snap, base, origin)
	prog := newProgress(e.stderr, o.quiet, "sent", d.Stats().DataBytes)
	st, err := sendTo(ctx, e, o.out, h, d, o.level, prog, true, lvSources(snap, base, origin))
	prog.Done()
	if err != nil {
		return err
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	if !o.quiet {
		printable.Sayf(e.stderr, "%s (%s; %s)", sendSummary(h, st), discoverySummary(d.Stats()), lvmCost(commands()))
	}
	return nil
}

// discardZeroes reports whether a target is a thin LV, where a discard
// unmaps blocks and they read as zeroes, so ZERO ranges should be
// discarded (returning space to the pool) rather than written.
func discardZeroes(ctx context.Context, target string) bool {
	n, err := lvmthin.ParseName(target)
	if err != nil {
		return false
	}
	lv, err := lvmthin.Lookup(ctx, n)
	return err == nil && lv.IsThin()
}

// waitingLine prints, once, that a run waits for another thinback
// working on the same thin pool, and which: a cron run that seems to
// hang says why, even with --quiet.
func waitingLine(e *env) func(string) {
	return func(msg string) { printable.Sayf(e.stderr, "thinback: %s", msg) }
}
