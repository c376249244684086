// Package storetest writes delta files into a store for the tests of
// the packages under cmd/internal, the way a backup stores them: through
// the store's WriteVolumeDelta, recorded as record.OfFile describes the
// file.
package storetest

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// Write stores a delta file with header h whose extents ext (DATA ones
// read from data, the volume as the snapshot holds it) are sent through
// archive's pipeline, encrypted under key unless it is nil. It returns
// the store's record of the file and the file's trailer.
func Write(t testing.TB, s catalog.DeltaWriter, h *archive.Header, data []byte, ext []archive.Extent, key *archive.Key) (catalog.Snapshot, archive.Trailer) {
	t.Helper()
	var tr archive.Trailer
	rec, err := s.WriteVolumeDelta(record.VolumeOf(h), record.ID(h.Snapshot.ID), func(w io.Writer) (catalog.Snapshot, error) {
		aw := archive.NewWriter(w, archive.WithKey(key))
		if err := aw.WriteHeader(h); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := archive.Send(context.Background(), aw, &archive.ListSource{R: bytes.NewReader(data), Extents: ext}, archive.SendOptions{}); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := aw.Close(); err != nil {
			return catalog.Snapshot{}, err
		}
		tr = aw.Trailer()
		return record.OfFile(h, tr), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec, tr
}
