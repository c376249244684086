package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/record"
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
				"settings of volumes whose records were lost must be given again.\n\n" +
				"An encrypted store's catalog is rebuilt only with its key (exit 14 without): every\n" +
				"file's header and records are authenticated under it, and a file that does not\n" +
				"authenticate (put into the store by someone without the key, or altered) is left out\n" +
				"and reported, as a damaged file is.\n\n" +
				"Where there is no store (a directory without catalog.db, volumes/ or keys/, an S3\n" +
				"address without a store), rebuild makes none and exits 1: check --store, or make\n" +
				"the store with thinback init.",
			Flags: append([]cli.Flag{storeFlag, quietFlag, jsonFlag}, keyFlags...),
			Action: func(c *cli.Context) error {
				if _, err := args(c, 0, 0, "takes no arguments"); err != nil {
					return err
				}
				return runRebuild(c.Context, e, c.String("store"), c.Bool("quiet"), c.Bool("json"), unlocker(e, c))
			},
		}},
	}
}

// runRebuild rebuilds the catalog of the store dir; unlock returns its
// key (storeKey), nil when it is in the clear.
func runRebuild(ctx context.Context, e *env, dir string, quiet, asJSON bool, unlock func(context.Context, catalog.Repository) (*archive.Key, error)) error {
	s, err := openRebuilt(ctx, e, dir)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	// Without the key, whoever can write to the store could have any
	// file of theirs recorded: an encrypted store is not rebuilt without.
	key, err := unlock(ctx, s)
	if err != nil {
		return fmt.Errorf("catalog rebuild: %w", err)
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
	out := rebuildJSON{Store: dir, Skipped: []rebuildSkipped{}}
	for _, f := range files {
		h, tr, err := readStoredMeta(ctx, s, f.Path, key)
		if err == nil && record.ID(h.Snapshot.ID) != f.ID {
			err = fmt.Errorf("its name says snapshot %s, its header %s", f.ID, h.Snapshot.ID)
		}
		if err == nil && h.VolumeName != f.Volume {
			err = fmt.Errorf("it lies in the directory of volume %s but its header says %s", f.Volume, h.VolumeName)
		}
		if err != nil {
			bad++
			out.Skipped = append(out.Skipped, rebuildSkipped{File: f.Path, Error: err.Error()})
			if !asJSON {
				printable.Sayf(e.stderr, "thinback: skipping %s: %v", f.Path, err)
			}
			continue
		}
		sn := record.OfFile(h, tr)
		sn.Seq, sn.File, sn.FileSize = f.Seq, f.Path, f.Size
		good = append(good, found{f, sn, record.VolumeOf(h)})
	}
	var vols []catalog.Volume
	var snaps []catalog.Snapshot
	for _, g := range good {
		vols, snaps = append(vols, g.vol), append(snaps, g.snap)
	}
	if err := s.Rebuild(vols, snaps); err != nil {
		return fmt.Errorf("catalog rebuild: %w", err)
	}
	if asJSON {
		out.Files = len(good)
		names := map[string]bool{}
		for _, v := range vols {
			names[v.Name] = true
		}
		out.Volumes = len(names)
		if err := printJSON(e, out); err != nil {
			return err
		}
	} else if !quiet {
		printable.Sayf(e.stderr, "rebuilt the catalog of %s from %d delta file(s)", dir, len(good))
	}
	if bad > 0 && key != nil {
		return fmt.Errorf("catalog rebuild: %d file(s) could not be read, or are not files of the store's key %s, and were left out (run thinback verify --store %s)", bad, key.ID(), dir)
	}
	if bad > 0 {
		return fmt.Errorf("catalog rebuild: %d file(s) could not be read and were left out (run thinback verify --store %s)", bad, dir)
	}
	return nil
}

// rebuildJSON is catalog rebuild --json's result: the files recorded and
// those left out (the exit code is then 1, as without --json).
type rebuildJSON struct {
	Store   string           `json:"store"`
	Volumes int              `json:"volumes"`
	Files   int              `json:"files"`
	Skipped []rebuildSkipped `json:"skipped"`
}

type rebuildSkipped struct {
	File  string `json:"file"`
	Error string `json:"error"`
}

// openRebuilt opens the store dir for a rebuild. A directory that lost
// its catalog.db but keeps delta files or key slots is still a store,
// and gets a new catalog.db. Where there is no store at all, there is
// nothing to rebuild: the store is not made, since making it would
// decide, unasked, whether it is encrypted (init decides that).
func openRebuilt(ctx context.Context, e *env, dir string) (catalog.Repository, error) {
	if isSSHStore(dir) {
		return openSSHStoreMode(ctx, e, dir, "--rebuild")
	}
	create := false
	if dir != "" && !s3.IsLocation(dir) {
		for _, name := range []string{"catalog.db", "volumes", "keys"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				create = true
			}
		}
		if !create {
			return nil, fmt.Errorf("catalog rebuild: no store at %s (no catalog.db, volumes or keys in it), so nothing to rebuild; "+
				"check --store, or make a store with thinback init --store %s", dir, dir)
		}
	}
	s, err := openStore(ctx, e, dir, create)
	if errors.Is(err, s3store.ErrNotStore) {
		return nil, fmt.Errorf("catalog rebuild: no store at %s, so nothing to rebuild; check --store, or make a store with thinback init --store %s --encrypt (or --no-encrypt): %w", dir, dir, err)
	}
	return s, err
}
