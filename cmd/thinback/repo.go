package main

import (
	"context"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/verify"
	"github.com/thinback/thinback/restore"
)

// storeGuards are the files of a store that a restore's target must not
// be, nor hold: for a local store its directory, catalog and the chain's
// delta files.
func storeGuards(s catalog.Repository, chain []catalog.Snapshot) []restore.Guard {
	var guards []restore.Guard
	for _, f := range s.LocalFiles(chain) {
		guards = append(guards, restore.Guard{What: f.What, Path: f.Path, Dir: f.Dir})
	}
	return guards
}

// readStoredMeta reads a store's delta file's header and records' metadata
// to its verified END record, seeking over the payloads.
func readStoredMeta(ctx context.Context, s catalog.Repository, file string) (*archive.Header, archive.Trailer, error) {
	r, err := s.OpenDelta(file)
	if err != nil {
		return nil, archive.Trailer{}, err
	}
	defer r.Close()
	return verify.File(ctx, r, false)
}
