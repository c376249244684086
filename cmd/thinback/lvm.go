package main

import (
	"context"
	"fmt"
	"time"

	"github.com/thinback/thinback/cmd/internal/backup"
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

// lvmCost says what a run spent in LVM and device-mapper commands, for the
// summary lines.
func lvmCost(cs lvmthin.CommandStats) string {
	return fmt.Sprintf("%d LVM and %d dmsetup commands in %s", cs.LVM, cs.DMSetup, cs.LVMTime.Round(time.Millisecond))
}

func runSendLVM(ctx context.Context, e *env, o sendOptions, spelling, baseSpelling string) error {
	ctx, commands := lvmthin.CountCommands(ctx)
	snap, rep, err := backup.LookupLV(ctx, spelling, nil)
	if err != nil {
		return usageOf(fmt.Errorf("send: %w", err))
	}
	var base *lvmthin.LV
	if baseSpelling != "" {
		if base, _, err = backup.LookupLV(ctx, baseSpelling, rep); err != nil {
			return usageOf(fmt.Errorf("send: base: %w", err))
		}
	}
	if k := snap.Kind(); k == lvmthin.KindClassicSnapshot || k == lvmthin.KindThick {
		// A thick LV itself is refused there, with what to snapshot.
		return runSendClassic(ctx, e, o, rep, snap, base)
	}
	origin, err := backup.OriginOf(rep, snap)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	d, err := lvmthin.OpenDelta(ctx, lvmthin.DeltaOptions{Snap: snap, Base: base, ReleaseStale: o.releaseStale, Discovery: o.discovery, Waiting: waitingLine(e)})
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	defer d.Close()
	h := backup.ThinHeader(snap, base, origin, toolName())
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
