package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/lvmthin"
)

// runSendClassic sends the classic snapshot snap, or what changed since
// the older classic snapshot base of the same origin.
func runSendClassic(ctx context.Context, e *env, o sendOptions, rep *lvmthin.Report, snap, base *lvmthin.LV) error {
	origin, err := backup.OriginOf(rep, snap)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	d, err := lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap, Base: base})
	if err != nil {
		if errors.Is(err, lvmthin.ErrBaseInvalid) {
			err = fmt.Errorf("%w; its exception table no longer lists every changed chunk: send a full (no --base), or back up with thinback backup, which compares digests then", err)
		}
		return fmt.Errorf("send: %w", err)
	}
	defer d.Close()
	h := backup.ClassicHeader(d.Snap(), d.Base(), origin, d.Size(), toolName())
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
		ds := d.Stats()
		printable.Sayf(e.stderr, "%s (%d ranges from %s, %d+%d exceptions)", sendSummary(h, st), ds.Ranges, ds.Tool, ds.BaseExceptions, ds.SnapExceptions)
	}
	return nil
}
