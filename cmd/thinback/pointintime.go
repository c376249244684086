package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/cmd/internal/record"
	"golang.org/x/sys/unix"
)

// What mount, cat and verify --device share: a store opened only to read,
// and the delta files of one point in time, opened together.

// readStore is a store that is only read: its catalog is opened read-only
// for each transaction (a shared lock that a backup or prune waits for
// only while one transaction runs), and nothing is created, cleaned or
// written in it, so that it may be on read-only media and a mount that
// lasts for days never holds a writer up.
type readStore struct {
	dir string // absolute
}

func openReadStore(dir string) (*readStore, error) {
	if dir == "" {
		return nil, usageError{msg: "give the backup store with --store DIR (or set THINBACK_STORE)"}
	}
	if s3.IsLocation(dir) {
		// These commands read delta files in place, at random, for as
		// long as they run; over object storage that wants a local cache
		// of the data, which they do not have yet.
		return nil, usageError{msg: fmt.Sprintf("%s is an S3 store: cat, mount, serve and verify --device read local stores only; restore the point in time to a file first (thinback restore VOLUME --store %s --to FILE)", dir, dir)}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	fi, err := os.Stat(filepath.Join(abs, "catalog.db"))
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("catalog.db is not a regular file")
	}
	if err != nil {
		return nil, fmt.Errorf("%s is not a thinback store (no catalog.db): %w", dir, err)
	}
	return &readStore{dir: abs}, nil
}

// View runs fn in a read-only transaction of the store's catalog.
func (s *readStore) View(fn func(*catalog.Tx) error) error {
	return catalog.View(filepath.Join(s.dir, "catalog.db"), nil, fn)
}

// Path turns a store-relative file name into a path.
func (s *readStore) Path(rel string) string { return filepath.Join(s.dir, filepath.FromSlash(rel)) }

// damaged adds to an error of a damaged delta file what to do about it.
func (s *readStore) damaged(err error) error {
	var fe *archive.FormatError
	if !errors.As(err, &fe) {
		return err
	}
	return fmt.Errorf("%w\na delta file of the store is damaged or incomplete: thinback verify --store %s checks them all", err, s.dir)
}

// selectSnapshot picks a snapshot of volume the way restore, cat and
// verify --device take it: by id, prefix or sequence number, or the newest
// at or before a time, or the newest.
func selectSnapshot(tx *catalog.Tx, volume, at, snapshot string) (catalog.Snapshot, error) {
	switch {
	case snapshot != "":
		return findSnapshot(tx, volume, snapshot)
	case at != "":
		t, err := parseTime(at)
		if err != nil {
			return catalog.Snapshot{}, err
		}
		snap, err := tx.At(volume, t)
		if errors.Is(err, catalog.ErrNotFound) {
			return snap, fmt.Errorf("volume %s has no snapshot at or before %s (see thinback list %s): %w", volume, t.Format(time.RFC3339), volume, err)
		}
		return snap, err
	}
	return tx.Latest(volume)
}

// pointInTime is the delta files of one snapshot's chain, full first,
// open for reading.
type pointInTime struct {
	snap   catalog.Snapshot
	chain  []catalog.Snapshot
	files  []catalog.DeltaReader
	inputs []archive.ChainInput
}

// openPointInTime opens the files of the chain of the snapshot pick
// selects, each checked against its record (OpenChain). They are opened
// inside the catalog transaction that names them: a prune commits its
// change only after that transaction, and removes the files it made
// obsolete only after its commit, so every file named is there to open.
// Once open, a file is read as it is even if a prune removes its name
// meanwhile: the local store never rewrites a file in place (a prune
// writes the next generation under a new name), and an open descriptor
// keeps reading the old inode.
//
// A store on object storage has no open descriptors: an object removed by
// a prune is gone for later range reads, so an image open across a prune
// would get EIO for records it had not cached (never other data, since
// every record is checked against the digests indexed when it was
// opened). Such a store will need to keep an image's objects (delay the
// deletes of a prune, or read a versioned bucket's old versions) while a
// mount has them open.
func (s *readStore) openPointInTime(pick func(*catalog.Tx) (catalog.Snapshot, error)) (*pointInTime, error) {
	p := &pointInTime{}
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if p.snap, err = pick(tx); err != nil {
			return err
		}
		if p.chain, err = tx.Chain(p.snap.ID); err != nil {
			return err
		}
		vol, err := tx.Volume(p.snap.Volume)
		if err != nil {
			return err
		}
		p.files, err = record.OpenChain(s.openDelta, s.dir, vol, p.chain)
		return err
	})
	if err != nil {
		record.CloseAll(p.files) // opened, but the transaction failed to end
		return nil, err
	}
	for _, f := range p.files {
		p.inputs = append(p.inputs, archive.ChainInput{Name: f.Name(), File: f})
	}
	return p, nil
}

// openDelta opens a delta file of the store: not through a symlink, and
// not a special file (nor blocking on a FIFO's open).
func (s *readStore) openDelta(file string) (catalog.DeltaReader, error) {
	f, err := os.OpenFile(s.Path(file), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := archive.CheckOpenFile(f); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// rewind puts every file back at its start, to read the chain again.
func (p *pointInTime) rewind() error {
	for _, f := range p.files {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	return nil
}

// describe names the snapshot in messages: "vg0/vm1 #3 (3f2a91c0-…, 2026-11-20T03:00:04Z)".
func (p *pointInTime) describe() string {
	return fmt.Sprintf("%s #%d (%s, %s)", p.snap.Volume, p.snap.Seq, p.snap.ID, p.snap.Time.UTC().Format(time.RFC3339))
}

// Close closes the files.
func (p *pointInTime) Close() error {
	err := record.CloseAll(p.files)
	p.files = nil
	return err
}
