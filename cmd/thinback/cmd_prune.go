package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func pruneCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "prune",
		Usage:     "remove snapshots a retention policy does not keep",
		ArgsUsage: "[VOLUME]",
		Description: "Keeps what the --keep-* options select (Proxmox Backup Server's semantics; without\n" +
			"options, each volume's policy remembered by backup --keep-*) and removes the rest.\n" +
			"Removing an incremental merges it into the next kept snapshot; removing a full merges\n" +
			"it with the following incrementals into a new full. This works on the delta files\n" +
			"alone, never reading a device, and each step is atomic: every kept snapshot restores\n" +
			"exactly as before.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "only say what would be removed"},
			jsonFlag, quietFlag,
		}, keepFlags()...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1, "give at most one volume")
			if err != nil {
				return err
			}
			r, err := retentionFrom(c)
			if err != nil {
				return err
			}
			vol := ""
			if len(a) == 1 {
				vol = a[0]
			}
			return runPrune(c.Context, e, c.String("store"), vol, r, c.Bool("dry-run"), c.Bool("json"), c.Bool("quiet"))
		},
	}
}

// pruneResult says what a prune of one volume did (or would do).
type pruneResult struct {
	Volume    string             `json:"volume"`
	Policy    string             `json:"policy"`
	Kept      []catalog.Snapshot `json:"kept"`
	Removed   []catalog.Snapshot `json:"removed"`
	Rewritten []string           `json:"rewritten,omitempty"` // snapshots whose file was replaced by a merged one
	DryRun    bool               `json:"dry_run,omitempty"`
}

func runPrune(ctx context.Context, e *env, dir, only string, r catalog.Retention, dryRun, asJSON, quiet bool) error {
	s, err := openStore(ctx, e, dir, false)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	var vols []catalog.Volume
	if err := s.View(func(tx *catalog.Tx) error {
		all, err := tx.Volumes()
		for _, v := range all {
			if only == "" || v.Name == only {
				vols = append(vols, v)
			}
		}
		return err
	}); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	if only != "" && len(vols) == 0 {
		return fmt.Errorf("prune: store %s has no volume %s: %w", dir, only, catalog.ErrNotFound)
	}
	var results []*pruneResult
	for _, v := range vols {
		policy := r
		if policy.IsZero() {
			policy = v.Retention
		}
		if policy.IsZero() {
			if only != "" {
				return usageError{msg: fmt.Sprintf("prune: give --keep-* options: volume %s has no retention policy (backup --keep-* sets one)", v.Name)}
			}
			continue
		}
		unlock, err := s.LockVolume(v.Name)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		res, err := pruneVolume(ctx, s, v.Name, policy, dryRun, archive.LevelFastest)
		unlockWarn(e, unlock, v.Name)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		results = append(results, res)
	}
	if len(results) == 0 && !asJSON {
		return usageError{msg: "prune: give --keep-* options: no volume has a retention policy (backup --keep-* sets one)"}
	}
	if asJSON {
		if results == nil {
			results = []*pruneResult{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	if quiet {
		return nil
	}
	for _, res := range results {
		verb := "removed"
		if res.DryRun {
			verb = "would remove"
		}
		var seqs []string
		for _, sn := range res.Removed {
			seqs = append(seqs, fmt.Sprintf("#%d (%s)", sn.Seq, sn.Time.UTC().Format(time.DateTime)))
		}
		if len(seqs) == 0 {
			seqs = []string{"nothing"}
		}
		line := fmt.Sprintf("prune %s (keep %s): %s %s; kept %d", res.Volume, res.Policy, verb, strings.Join(seqs, ", "), len(res.Kept))
		if len(res.Rewritten) > 0 {
			line += fmt.Sprintf("; merged into %s", strings.Join(res.Rewritten, ", "))
		}
		printable.Sayf(e.stderr, "%s", line)
	}
	return nil
}

// pruneVolume applies a retention policy to one volume, whose lock the
// caller holds. Each run of removed snapshots is merged into the kept
// snapshot that follows it, in one atomic Replace; removed snapshots that
// no kept snapshot descends from are removed newest first.
func pruneVolume(ctx context.Context, s catalog.Repository, name string, policy catalog.Retention, dryRun bool, level archive.Level) (*pruneResult, error) {
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
	keep, remove := policy.Select(snaps, time.Local)
	res := &pruneResult{Volume: name, Policy: policy.String(), Kept: keep, Removed: remove, DryRun: dryRun}
	if len(remove) == 0 {
		return res, nil
	}
	byID := map[string]catalog.Snapshot{}
	for _, sn := range snaps {
		byID[sn.ID] = sn
	}
	removing := map[string]bool{}
	for _, sn := range remove {
		removing[sn.ID] = true
	}
	// For each kept snapshot, the removed ancestors it must absorb.
	absorbed := map[string]bool{}
	type step struct {
		kept catalog.Snapshot
		run  []catalog.Snapshot // oldest first
	}
	var steps []step
	for _, k := range keep {
		var run []catalog.Snapshot
		for p := k.Parent; p != "" && removing[p]; p = byID[p].Parent {
			run = append([]catalog.Snapshot{byID[p]}, run...)
			absorbed[p] = true
		}
		if len(run) > 0 {
			steps = append(steps, step{k, run})
		}
	}
	if dryRun {
		for _, st := range steps {
			res.Rewritten = append(res.Rewritten, fmt.Sprintf("#%d", st.kept.Seq))
		}
		return res, nil
	}
	for _, st := range steps {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if err := mergeInto(ctx, s, vol, st.kept, st.run, level); err != nil {
			return res, fmt.Errorf("merging %d snapshot(s) into #%d of %s: %w", len(st.run), st.kept.Seq, name, err)
		}
		res.Rewritten = append(res.Rewritten, fmt.Sprintf("#%d", st.kept.Seq))
	}
	// Removed snapshots no kept one needs (a dead branch), newest first.
	for i := len(remove) - 1; i >= 0; i-- {
		if !absorbed[remove[i].ID] {
			if err := s.Remove(name, remove[i].ID); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

// mergeInto rewrites kept's delta file as the merge of run (its removed
// ancestors, oldest first) and its own, and removes run, atomically.
func mergeInto(ctx context.Context, s catalog.Repository, vol catalog.Volume, kept catalog.Snapshot, run []catalog.Snapshot, level archive.Level) error {
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
		h, tr, err := restore.Merge(ctx, w, inputs, restore.MergeOptions{Tool: toolName(), Workers: 2, Level: level})
		if err != nil {
			return catalog.Snapshot{}, err
		}
		return record.Merged(kept, h, tr), nil
	})
	return err
}
