package main

import (
	"context"

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
