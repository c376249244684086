package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/thinback/thinback/catalog"
	"github.com/urfave/cli/v2"
)

func catalogCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "catalog",
		Usage: "maintain a store's catalog",
		Subcommands: []*cli.Command{{
			Name:  "rebuild",
			Usage: "recreate the catalog from the delta files' own headers",
			Description: "The catalog is a cache of what the files say: after losing or damaging catalog.db,\n" +
				"rebuild recreates the volumes and snapshots from the files in volumes/. Retention\n" +
				"settings of volumes whose records were lost must be given again.",
			Flags: []cli.Flag{storeFlag, quietFlag},
			Action: func(c *cli.Context) error {
				if _, err := args(c, 0, 0, "takes no arguments"); err != nil {
					return err
				}
				return runRebuild(c.Context, e, c.String("store"), c.Bool("quiet"))
			},
		}},
	}
}

func runRebuild(ctx context.Context, e *env, dir string, quiet bool) error {
	s, err := openStore(e, dir, true)
	if err != nil {
		return err
	}
	files, err := s.Files()
	if err != nil {
		return fmt.Errorf("catalog rebuild: %w", err)
	}
	type found struct {
		file catalog.DeltaFile
		snap catalog.Snapshot
		vol  catalog.Volume
	}
	var good []found
	bad := 0
	for _, f := range files {
		h, tr, err := readDelta(ctx, s.Path(f.Path), false)
		if err == nil && catalogID(h.Snapshot.ID) != f.ID {
			err = fmt.Errorf("its name says snapshot %s, its header %s", f.ID, h.Snapshot.ID)
		}
		if err == nil && h.VolumeName != f.Volume {
			err = fmt.Errorf("it lies in the directory of volume %s but its header says %s", f.Volume, h.VolumeName)
		}
		if err != nil {
			bad++
			sayf(e.stderr, "thinback: skipping %s: %v", f.Path, err)
			continue
		}
		sn := snapshotRecord(h, tr)
		sn.Seq, sn.File, sn.FileSize = f.Seq, f.Path, f.Size
		good = append(good, found{f, sn, volumeRecord(h)})
	}
	err = s.Update(func(tx *catalog.Tx) error {
		if err := tx.ResetSnapshots(); err != nil {
			return err
		}
		for _, g := range good {
			if _, err := tx.Volume(g.vol.Name); errors.Is(err, catalog.ErrNotFound) {
				if err := tx.PutVolume(&g.vol); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			if err := tx.PutSnapshot(&g.snap); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("catalog rebuild: %w", err)
	}
	if !quiet {
		sayf(e.stderr, "rebuilt the catalog of %s from %d delta file(s)", dir, len(good))
	}
	if bad > 0 {
		return fmt.Errorf("catalog rebuild: %d file(s) could not be read and were left out (run thinback verify --store %s)", bad, dir)
	}
	return nil
}
