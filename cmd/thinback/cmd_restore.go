package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func restoreCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "write a volume's state at a point in time onto a file or block device",
		ArgsUsage: "VOLUME",
		Description: "Plans the chain full → … → the chosen snapshot and merges it, so each block is\n" +
			"written once however long the chain. If TARGET already holds an earlier snapshot of\n" +
			"the chain (thinback restored it), only the missing incrementals are applied.\n" +
			"Without --at or --snapshot, the newest snapshot is restored. TARGET is overwritten\n" +
			"as with thinback apply. Before TARGET is opened, every delta file is compared with\n" +
			"its catalog record (header and file digest): one that is not the file recorded\n" +
			"(another volume's or snapshot's) is refused with exit code 3, nothing written.\n\n" +
			"An encrypted store is unlocked with --key-file, --password-file, --password-command,\n" +
			"$THINBACK_PASSWORD or --recovery-identity (or a passphrase asked at the terminal)\n" +
			"before TARGET is opened: a wrong or missing key or passphrase is exit code 14, nothing\n" +
			"written. Every record is authenticated before it is written, and a --snapback file\n" +
			"is encrypted under the store's key.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.StringFlag{Name: "at", Usage: `the newest snapshot at or before this time ("2026-11-20 03:00", local time, or RFC 3339)`},
			&cli.StringFlag{Name: "snapshot", Usage: "the snapshot id (or a unique prefix, or its sequence number)"},
			&cli.StringFlag{Name: "to", TakesFile: true, Usage: "the file or block device to write (required)"},
			&cli.StringFlag{Name: "snapback", Usage: "save the data the restore overwrites in this new delta file"},
			&cli.BoolFlag{Name: "force", Usage: "overwrite a target that holds another volume"},
			stateFlag, quietFlag, jsonFlag,
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give the volume to restore")
			if err != nil {
				return err
			}
			if c.String("to") == "" {
				return usageError{msg: "restore: give the target with --to FILE|DEVICE"}
			}
			if c.String("at") != "" && c.String("snapshot") != "" {
				return usageError{msg: "restore: give --at or --snapshot, not both"}
			}
			return runRestore(c.Context, e, restoreOptions{
				store: c.String("store"), volume: a[0], at: c.String("at"), snapshot: c.String("snapshot"),
				unlock: unlocker(e, c),
				apply: applyOptions{target: c.String("to"), snapback: c.String("snapback"), force: c.Bool("force"),
					state: stateFilePath(c.String("state")), quiet: c.Bool("quiet"), json: c.Bool("json")},
			})
		},
	}
}

type restoreOptions struct {
	store, volume, at, snapshot string
	apply                       applyOptions
	// unlock returns the store's key (storeKey): nil for a store that is
	// not encrypted.
	unlock func(context.Context, catalog.Repository) (*archive.Key, error)
}

func runRestore(ctx context.Context, e *env, o restoreOptions) (err error) {
	s, err := openStore(ctx, e, o.store, false)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	// The key first: a passphrase asked for, or refused, before anything
	// else is read or the target touched.
	if o.unlock != nil {
		if o.apply.key, err = o.unlock(ctx, s); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	// The user chose the point in time: a store older than this host
	// saw it is said, not refused; one whose key slots are gone is.
	if err := warnRollback(e, s, o.apply.state, o.volume, true); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	var chain []catalog.Snapshot
	var vol catalog.Volume
	err = s.View(func(tx *catalog.Tx) error {
		snap, err := selectSnapshot(tx, o.volume, o.at, o.snapshot)
		if err != nil {
			return err
		}
		if vol, err = tx.Volume(snap.Volume); err != nil {
			return err
		}
		chain, err = tx.Chain(snap.ID)
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Every file of the chain is the one its record describes before the
	// target or its state is touched: one that is not (another volume's,
	// another snapshot's) would be written there and recorded as restored.
	files, err := record.OpenChain(s.OpenDelta, s.String(), vol, chain)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer record.CloseAll(files)

	// The store holds every file of the chain and the catalog.
	t, err := openTarget(ctx, o.apply.target, append(o.apply.guards(), storeGuards(s, chain)...))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer t.Close()
	defer func() {
		if err != nil {
			t.RemoveCreated() // a target this run created, if the apply never ran
		}
	}()
	// Start after the snapshot the target holds, if it is on the chain;
	// finish an interrupted restore of this chain the same way it started.
	id, err := t.Identity()
	if err != nil {
		return err
	}
	sf := &stateFile{path: o.apply.state, id: id}
	st, err := sf.load()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// A target replaced or written to since it was restored holds nothing
	// known: the whole chain is written.
	if st, err = t.Verify(st); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if st.Modified != "" {
		if !o.apply.quiet && !st.Snapshot.ID.IsZero() {
			held := st.Snapshot.ID.String()
			for _, sn := range chain {
				if sn.ID == held {
					held = fmt.Sprintf("#%d", sn.Seq)
				}
			}
			fmt.Fprintf(e.stderr, "thinback: %s was restored to %s of %s, but %s: restoring the whole chain\n", o.apply.target, held, o.volume, st.Modified)
		}
		st = restore.State{}
	}
	from := 0
	for i, sn := range chain {
		switch {
		case st.InProgress != nil && record.ID(st.InProgress.Snapshot) == chain[len(chain)-1].ID && sn.Parent != "" && sn.Parent == record.ID(st.InProgress.Parent):
			from = i
		case st.InProgress == nil && sn.ID == record.ID(st.Snapshot.ID):
			from = i + 1
		}
	}
	if from == len(chain) {
		if o.apply.json {
			last := chain[len(chain)-1]
			return printJSON(e, applyJSON{Target: o.apply.target, Volume: o.volume, Snapshot: last.ID, SnapshotName: last.Name,
				Seq: last.Seq, Files: []string{}, NothingToDo: true})
		}
		if !o.apply.quiet {
			printable.Sayf(e.stderr, "%s already holds %s of %s: nothing to do", o.apply.target, chain[len(chain)-1].ID, o.volume)
		}
		return nil
	}
	var inputs []restore.Input
	var names []string
	for i, sn := range chain[from:] {
		f := files[from+i]
		inputs = append(inputs, restore.Input{Name: f.Name(), R: f})
		names = append(names, fmt.Sprintf("#%d", sn.Seq))
	}
	res, err := applyTo(ctx, e, t, inputs, o.apply)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if o.apply.json {
		last := chain[len(chain)-1]
		ids := make([]string, 0, len(inputs))
		for _, sn := range chain[from:] {
			ids = append(ids, sn.ID)
		}
		j := newApplyJSON(o.apply, res, ids)
		j.Volume, j.Seq = o.volume, last.Seq
		return printJSON(e, j)
	}
	if !o.apply.quiet {
		last := chain[len(chain)-1]
		printable.Sayf(e.stderr, "restored %s #%d (%s, %s) to %s from %d file(s) %s: %s written, %s zeroed, %s superseded, in %s",
			o.volume, last.Seq, last.ID, last.Time.UTC().Format(time.RFC3339), o.apply.target, len(inputs), strings.Join(names, " "),
			bytesHuman(res.DataBytes), bytesHuman(res.ZeroBytes), bytesHuman(res.Skipped), res.Duration.Round(time.Millisecond))
	}
	return nil
}
