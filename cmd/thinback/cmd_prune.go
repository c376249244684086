package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/prune"
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
		}, append(keepFlags(), keyFlags...)...),
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
			return runPrune(c.Context, e, pruneOptions{store: c.String("store"), volume: vol, retention: r,
				dryRun: c.Bool("dry-run"), json: c.Bool("json"), quiet: c.Bool("quiet"),
				key: unlocker(e, c)})
		},
	}
}

type pruneOptions struct {
	store, volume       string // volume "": every volume with a policy
	retention           catalog.Retention
	dryRun, json, quiet bool
	// key unlocks an encrypted store's key (storeKey), which merging
	// needs; a dry run merges nothing and asks for none.
	key func(context.Context, catalog.Repository) (*archive.Key, error)
}

func runPrune(ctx context.Context, e *env, o pruneOptions) error {
	s, err := openStore(ctx, e, o.store, false)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	var key *archive.Key
	if !o.dryRun && o.key != nil {
		if key, err = o.key(ctx, s); err != nil {
			return fmt.Errorf("prune: %w", err)
		}
	}
	var vols []catalog.Volume
	if err := s.View(func(tx *catalog.Tx) error {
		all, err := tx.Volumes()
		for _, v := range all {
			if o.volume == "" || v.Name == o.volume {
				vols = append(vols, v)
			}
		}
		return err
	}); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	if o.volume != "" && len(vols) == 0 {
		return fmt.Errorf("prune: store %s has no volume %s: %w", o.store, o.volume, catalog.ErrNotFound)
	}
	var results []*prune.Result
	for _, v := range vols {
		policy := o.retention
		if policy.IsZero() {
			policy = v.Retention
		}
		if policy.IsZero() {
			if o.volume != "" {
				return usageError{msg: fmt.Sprintf("prune: give --keep-* options: volume %s has no retention policy (backup --keep-* sets one)", v.Name)}
			}
			continue
		}
		unlock, err := s.LockVolume(v.Name)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		// Merging rewrites files: a line per volume on a terminal.
		prog := newProgress(e.stderr, o.quiet || o.json, "merging "+v.Name+":", 0)
		res, err := prune.Volume(ctx, s, v.Name, policy, prune.Options{DryRun: o.dryRun, Level: archive.LevelFastest, Tool: toolName(), Key: key,
			Position: prog.At})
		prog.Done()
		unlockWarn(e, unlock, v.Name)
		if err != nil {
			return fmt.Errorf("prune: %w", err)
		}
		results = append(results, res)
	}
	if len(results) == 0 && !o.json {
		return usageError{msg: "prune: give --keep-* options: no volume has a retention policy (backup --keep-* sets one)"}
	}
	if o.json {
		if results == nil {
			results = []*prune.Result{}
		}
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(results)
	}
	if o.quiet {
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
