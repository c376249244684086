package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/urfave/cli/v2"
)

func listCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "list",
		Usage:     "list the volumes of a store and the snapshots you can restore",
		ArgsUsage: "[VOLUME]",
		Description: "Needs no key: an encrypted store's catalog holds no secret. Such a store is\n" +
			"marked, with the id of its master key (and \"encrypted\", \"key_id\" in each --json volume).",
		Flags: []cli.Flag{storeFlag, stateFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			a, err := args(c, 0, 1, "give at most one volume")
			if err != nil {
				return err
			}
			vol := ""
			if len(a) == 1 {
				vol = a[0]
			}
			return runList(c.Context, e, c.String("store"), stateFilePath(c.String("state")), vol, c.Bool("json"))
		},
	}
}

type listVolume struct {
	catalog.Volume
	Encrypted bool           `json:"encrypted,omitempty"`
	KeyID     string         `json:"key_id,omitempty"` // the master key's, of an encrypted store
	Snapshots []listSnapshot `json:"snapshots"`
}

// storeEncryption says whether s is encrypted, from its key slots (no
// key needed): the master key id and the number of slots, or "" for a
// store that is not encrypted.
func storeEncryption(s catalog.Repository) (keyID string, slots int, err error) {
	ring, err := keys.Load(s)
	if errors.Is(err, keys.ErrNoSlots) {
		return "", 0, nil
	}
	if err != nil {
		return "", 0, err
	}
	for _, sl := range ring.Slots() {
		keyID = sl.KeyID.String()
	}
	if keyID == "" {
		keyID = "unknown (every key slot is damaged)"
	}
	return keyID, len(ring.Slots()), nil
}

type listSnapshot struct {
	catalog.Snapshot
	Kind    string   `json:"kind"`
	Targets []string `json:"targets,omitempty"`
}

func runList(ctx context.Context, e *env, dir, state, only string, asJSON bool) error {
	s, err := openStore(ctx, e, dir, false)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	_ = warnRollback(e, s, state, only, false) // an encrypted store older than this host saw it: said
	// Which targets on this machine hold which snapshot.
	held := map[string][]string{}
	err = stateDir(state, false)
	if err == nil {
		err = catalog.View(state, nil, func(tx *catalog.Tx) error {
			ts, err := tx.Targets()
			for _, t := range ts {
				if t.Snapshot != "" {
					label := t.Path
					if t.InProgress != nil {
						label += " (apply interrupted)"
					}
					held[t.Snapshot] = append(held[t.Snapshot], label)
				}
			}
			return err
		})
		if err != nil {
			err = fmt.Errorf("state file %s: %w", state, err)
		}
	}
	if err != nil {
		printable.Sayf(e.stderr, "thinback: %v (targets not shown)", err)
	}
	keyID, slots, err := storeEncryption(s)
	if err != nil {
		return fmt.Errorf("list: key slots of %s: %w", s, err)
	}
	var out []listVolume
	err = s.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vols {
			if only != "" && v.Name != only {
				continue
			}
			snaps, err := tx.Snapshots(v.Name)
			if err != nil {
				return err
			}
			lv := listVolume{Volume: v, Snapshots: []listSnapshot{}, Encrypted: keyID != "", KeyID: keyID}
			for _, sn := range snaps {
				kind := "incr"
				if sn.IsFull() {
					kind = "full"
				}
				lv.Snapshots = append(lv.Snapshots, listSnapshot{Snapshot: sn, Kind: kind, Targets: held[sn.ID]})
			}
			out = append(out, lv)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if only != "" && len(out) == 0 {
		return fmt.Errorf("store %s has no volume %s: %w", dir, only, catalog.ErrNotFound)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if out == nil {
			out = []listVolume{}
		}
		return enc.Encode(out)
	}
	if keyID != "" {
		printable.Sayf(e.stdout, "encrypted store: master key id %s, %d key slot(s)", keyID, slots)
	}
	printList(e.stdout, out)
	return nil
}

func printList(w io.Writer, vols []listVolume) {
	if len(vols) == 0 {
		fmt.Fprintln(w, "no volumes")
		return
	}
	for i, v := range vols {
		if i > 0 {
			fmt.Fprintln(w)
		}
		line := fmt.Sprintf("%s  (%s, source %s, block size %d", v.Name, v.Kind, v.Source, v.BlockSize)
		if !v.Retention.IsZero() {
			line += fmt.Sprintf(", keep %s", v.Retention)
		}
		printable.Sayf(w, "%s)", line)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  SEQ\tID\tTIME (UTC)\tKIND\tSIZE\tCHANGED\tSTORED\tHELD BY")
		for _, s := range v.Snapshots {
			targets := ""
			for j, t := range s.Targets {
				if j > 0 {
					targets += ", "
				}
				targets += t
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Seq, printable.String(s.ID[:8]), s.Time.UTC().Format(time.DateTime),
				s.Kind, bytesHuman(s.VolumeSize), bytesHuman(s.DataBytes+s.ZeroBytes), bytesHuman(s.FileSize), printable.String(targets))
		}
		tw.Flush()
	}
}
