// Package prune carries out a retention policy on a volume of a store:
// catalog.Retention.Plan decides what goes, this package merges the
// delta files through restore's merge and commits each step through the
// store (catalog.Repository), so every kept snapshot restores exactly as
// before at each step. It works on the delta files alone, never reading
// a device.
package prune

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/restore"
)

// Options tune Volume.
type Options struct {
	DryRun bool          // only say what would be done
	Level  archive.Level // the compression of merged files
	Tool   string        // the tool named in merged files' headers
	// Key is the store's key, nil for a store that is not encrypted. The
	// files of an encrypted store are merged with it, and the merged file
	// is encrypted under it with a salt of its own; without it, the first
	// merge fails (archive.ErrKeyRequired, naming the key id) before the
	// store is changed.
	Key *archive.Key
	// Position, if set, is told how far through the volume each merge is
	// (restore.MergeOptions.Position); each merge starts again from 0.
	Position func(end, size int64)
}

// Result says what a prune of one volume did (or would do).
type Result struct {
	Volume    string             `json:"volume"`
	Policy    string             `json:"policy"`
	Kept      []catalog.Snapshot `json:"kept"`
	Removed   []catalog.Snapshot `json:"removed"`
	Rewritten []string           `json:"rewritten,omitempty"` // snapshots whose file was replaced by a merged one
	DryRun    bool               `json:"dry_run,omitempty"`
}

// Volume applies a retention policy to one volume, whose lock the
// caller holds. Each run of removed snapshots is merged into the kept
// snapshot that follows it, in one atomic ReplaceDelta; removed
// snapshots that no kept snapshot descends from are removed newest
// first (catalog.Retention.Plan). Periods are calendar fields in the
// local time zone. On an error, Result says what was done before it.
//
// The merges come before the removals, so a prune of an encrypted store
// without its key (or with another) that has anything to merge changes
// nothing. Removing a chain that no kept snapshot descends from reads no
// file, and needs no key.
func Volume(ctx context.Context, s catalog.Repository, name string, policy catalog.Retention, o Options) (*Result, error) {
	var snaps []catalog.Snapshot
	var vol catalog.Volume
	if err := s.View(func(tx *catalog.Tx) error {
		var err error
		if vol, err = tx.Volume(name); err != nil {
			return err
		}
		snaps, err = tx.Snapshots(name)
		return err
	}); err != nil {
		return nil, err
	}
	plan := policy.Plan(snaps, time.Local)
	res := &Result{Volume: name, Policy: policy.String(), Kept: plan.Keep, Removed: plan.Remove, DryRun: o.DryRun}
	if o.DryRun {
		for _, m := range plan.Merges {
			res.Rewritten = append(res.Rewritten, fmt.Sprintf("#%d", m.Kept.Seq))
		}
		return res, nil
	}
	for _, m := range plan.Merges {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := mergeInto(ctx, s, vol, m.Kept, m.Run, o); err != nil {
			return res, fmt.Errorf("merging %d snapshot(s) into #%d of %s: %w", len(m.Run), m.Kept.Seq, name, err)
		}
		res.Rewritten = append(res.Rewritten, fmt.Sprintf("#%d", m.Kept.Seq))
	}
	for _, sn := range plan.Drop {
		if err := s.Remove(name, sn.ID); err != nil {
			return res, err
		}
	}
	return res, nil
}

// mergeInto rewrites kept's delta file as the merge of run (its removed
// ancestors, oldest first) and its own, and removes run, atomically.
func mergeInto(ctx context.Context, s catalog.Repository, vol catalog.Volume, kept catalog.Snapshot, run []catalog.Snapshot, o Options) error {
	// A file that is not the one its record describes would be merged
	// into the kept snapshot's new file for good.
	files, err := record.OpenChain(s.OpenDelta, s.String(), vol, append(append([]catalog.Snapshot(nil), run...), kept))
	if err != nil {
		return err
	}
	defer record.CloseAll(files)
	var inputs []restore.Input
	for _, f := range files {
		inputs = append(inputs, restore.Input{Name: f.Name(), R: f})
	}
	var ids []string
	for _, sn := range run {
		ids = append(ids, sn.ID)
	}
	_, err = s.ReplaceDelta(kept.Volume, kept.ID, ids, func(w io.Writer) (catalog.Snapshot, error) {
		// Two workers at most: prune runs beside backups, and memory grows
		// with workers times the files merged.
		h, tr, err := restore.Merge(ctx, w, inputs, restore.MergeOptions{Tool: o.Tool, Workers: 2, Level: o.Level, Key: o.Key, Position: o.Position})
		if err != nil {
			return catalog.Snapshot{}, err
		}
		return record.Merged(kept, h, tr), nil
	})
	return err
}
