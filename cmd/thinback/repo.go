package main

import (
	"context"
	"errors"
	"io"

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
// to its verified END record, seeking over the payloads. With key (an
// encrypted store's), the file must be encrypted under it: its header,
// every record's metadata and its END authenticate, or it is refused.
func readStoredMeta(ctx context.Context, s catalog.Repository, file string, key *archive.Key) (*archive.Header, archive.Trailer, error) {
	r, err := s.OpenDelta(file)
	if err != nil {
		return nil, archive.Trailer{}, err
	}
	defer r.Close()
	if key == nil {
		return verify.File(ctx, r, false)
	}
	// verify.File without payloads, under the key.
	rd := archive.NewReader(r, archive.WithKey(key))
	h, err := rd.Header()
	for err == nil {
		_, err = rd.Next()
	}
	if !errors.Is(err, io.EOF) {
		return h, archive.Trailer{}, err
	}
	return h, rd.Trailer(), nil
}
