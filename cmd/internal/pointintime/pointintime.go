// Package pointintime reads a volume as it was at one snapshot: the
// delta files of the snapshot's chain, full first, opened together from a
// store and each checked against its record. It is what cat, mount,
// serve and verify --device share. The store is any catalog.Repository;
// which back end holds the files is not this package's business.
package pointintime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// Store is a store that point-in-time readers read. For a directory,
// open it with catalog.OpenReadOnly, so that a reader that lasts for
// days never holds a writer up and the store may be on read-only media.
type Store struct {
	catalog.Repository
	// Key reads the files of an encrypted store (nil: a store that is
	// not encrypted). OpenImage reads with it; the Inputs of a
	// PointInTime need it given to archive's readers.
	Key *archive.Key
}

// Damaged adds to an error of a damaged delta file what to do about it.
func (s *Store) Damaged(err error) error {
	var fe *archive.FormatError
	if !errors.As(err, &fe) || errors.Is(err, archive.ErrKeyRequired) || errors.Is(err, archive.ErrWrongKey) {
		return err // a key error says which key to give, nothing is damaged
	}
	return fmt.Errorf("%w\na delta file of the store is damaged or incomplete: thinback verify --store %s checks them all", err, s)
}

// PointInTime is the delta files of one snapshot's chain, full first,
// open for reading.
type PointInTime struct {
	Snap   catalog.Snapshot   // the snapshot read
	Chain  []catalog.Snapshot // its chain, full first
	Files  []catalog.DeltaReader
	Inputs []archive.ChainInput // Files, for archive's chain readers
}

// Open opens the files of the chain of the snapshot pick selects, each
// checked against its record (record.OpenChain). They are opened inside
// the catalog transaction that names them: a prune commits its change
// only after that transaction, and removes the files it made obsolete
// only after its commit, so every file named is there to open. Once
// open, a file is read as it is even if a prune removes its name
// meanwhile: a local store never rewrites a file in place (a prune writes
// the next generation under a new name), and an open descriptor keeps
// reading the old inode.
//
// A store on object storage has no open descriptors: an object removed by
// a prune is gone for later range reads, so an image open across a prune
// gets EIO for the records it had not cached, and reads the ones it had
// (never other data: every ranged GET is pinned to the object's ETag,
// and every record is checked against the digests indexed when it was
// opened). Opened again, it reads the merged file. cmd/thinback's
// TestMountS3 shows it with a real prune.
func (s *Store) Open(pick func(*catalog.Tx) (catalog.Snapshot, error)) (*PointInTime, error) {
	p := &PointInTime{}
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if p.Snap, err = pick(tx); err != nil {
			return err
		}
		if p.Chain, err = tx.Chain(p.Snap.ID); err != nil {
			return err
		}
		vol, err := tx.Volume(p.Snap.Volume)
		if err != nil {
			return err
		}
		p.Files, err = record.OpenChain(s.OpenDelta, s.String(), vol, p.Chain)
		return err
	})
	if err != nil {
		record.CloseAll(p.Files) // opened, but the transaction failed to end
		return nil, err
	}
	for _, f := range p.Files {
		p.Inputs = append(p.Inputs, archive.ChainInput{Name: f.Name(), File: f})
	}
	return p, nil
}

// ReadAhead readies every file for one pass front to back that reads
// most of each payload (cat): a file of a store that can fetch ahead
// (an S3 store: several ranged GETs in flight instead of one per record)
// does so from now on; the others read as before. Not for a reader at
// random offsets, nor for one that reads only the records' metadata
// (verify --device): those would fetch payloads they never use.
func (p *PointInTime) ReadAhead() {
	for _, f := range p.Files {
		if ra, ok := f.(interface{ ReadAhead() }); ok {
			ra.ReadAhead()
		}
	}
}

// Rewind puts every file back at its start, to read the chain again.
func (p *PointInTime) Rewind() error {
	for _, f := range p.Files {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	return nil
}

// Describe names the snapshot in messages: "vg0/vm1 #3 (3f2a91c0-…, 2026-11-20T03:00:04Z)".
func (p *PointInTime) Describe() string {
	return fmt.Sprintf("%s #%d (%s, %s)", p.Snap.Volume, p.Snap.Seq, p.Snap.ID, p.Snap.Time.UTC().Format(time.RFC3339))
}

// Close closes the files.
func (p *PointInTime) Close() error {
	err := record.CloseAll(p.Files)
	p.Files = nil
	return err
}

// Image is a point in time open for reads at any offset, as mount and
// serve read it: the chain's index (archive.SnapshotReader) over its
// open files.
type Image struct {
	*archive.SnapshotReader
	pit *PointInTime
}

// OpenImage opens the chain of the snapshot with id (Open) and indexes it
// for reads at any offset, with the store's Key unless opts has one. An
// index that cannot be built is a damaged delta file (Damaged).
func (s *Store) OpenImage(ctx context.Context, id string, opts archive.SnapshotOptions) (*Image, error) {
	if opts.Key == nil {
		opts.Key = s.Key
	}
	pit, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return tx.Snapshot(id) })
	if err != nil {
		return nil, err
	}
	r, err := archive.OpenSnapshot(ctx, pit.Inputs, opts)
	if err != nil {
		if r != nil {
			r.Close()
		}
		pit.Close()
		return nil, s.Damaged(err)
	}
	return &Image{SnapshotReader: r, pit: pit}, nil
}

// Close closes the index and the files.
func (i *Image) Close() error {
	i.SnapshotReader.Close()
	return i.pit.Close()
}
