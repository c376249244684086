package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/cmd/internal/printable"
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
// selects, each checked against its record (openChain). They are opened
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
		p.files, err = openChain(s.openDelta, s.dir, vol, p.chain)
		return err
	})
	if err != nil {
		closeDeltas(p.files) // opened, but the transaction failed to end
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

// errNotRecorded is the error of a delta file of a store that is not the
// file the catalog records under its name: another snapshot's, another
// volume's, or one whose record is out of date. Nothing is read from such
// a file; it maps to exit code 3, as a damaged file does.
var errNotRecorded = errors.New("the delta file is not the one the catalog records")

// recordMismatch is errNotRecorded for one file: what differs between its
// header (or file digest) and the record.
type recordMismatch struct {
	file  string // the file, as the store names it in messages
	rec   catalog.Snapshot
	diffs []string
}

func (e *recordMismatch) Error() string {
	return fmt.Sprintf("%s is not the delta file the catalog records for %s #%d (%s): %s",
		e.file, e.rec.Volume, e.rec.Seq, e.rec.ID, strings.Join(e.diffs, "; "))
}

func (e *recordMismatch) Unwrap() error { return errNotRecorded }

// checkRecord compares what a delta file says of itself, its header h and
// its file digest (lower-case hex, or "" when not known yet), with the
// catalog's record of it, rec, and of its volume, vol. It returns a
// *recordMismatch naming every difference, or nil. This is the one place
// that decides whether a file is the one its record describes: every
// command that reaches a delta file by way of the catalog (restore, cat,
// mount, serve, verify, backup's base, prune's merge) goes through it.
func checkRecord(file string, rec catalog.Snapshot, vol catalog.Volume, h *archive.Header, digest string) error {
	var diffs []string
	differ := func(format string, a ...any) { diffs = append(diffs, fmt.Sprintf(format, a...)) }
	none := func(id string) string {
		if id == "" {
			return "none (a full)"
		}
		return id
	}
	if got := catalogID(h.Snapshot.ID); got != rec.ID {
		differ("it holds snapshot %s, the record says %s", got, rec.ID)
	}
	if got := catalogID(h.Parent.ID); got != rec.Parent {
		differ("its parent is %s, the record's is %s", none(got), none(rec.Parent))
	}
	if h.VolumeName != rec.Volume {
		differ("it is a backup of volume %q, the record of %q", printable.String(h.VolumeName), rec.Volume)
	}
	if vol.UUID != "" && h.VolumeUUID != "" && h.VolumeUUID != vol.UUID {
		differ("its volume's uuid is %s, the catalog's %s", printable.String(h.VolumeUUID), vol.UUID)
	}
	if h.VolumeSize != rec.VolumeSize {
		differ("it holds a volume of %d bytes, the record says %d", h.VolumeSize, rec.VolumeSize)
	}
	// A record from before thinback kept parent sizes has 0.
	if !h.IsFull() && rec.ParentSize != 0 && h.ParentSize != rec.ParentSize {
		differ("it was made from a parent of %d bytes, the record says %d", h.ParentSize, rec.ParentSize)
	}
	if digest != "" && rec.FileDigest != "" && digest != rec.FileDigest {
		differ("its file digest is %s, the record's %s", digest, rec.FileDigest)
	}
	if len(diffs) == 0 {
		return nil
	}
	return &recordMismatch{file: file, rec: rec, diffs: diffs}
}

// openChain opens the delta files of chain, the records of one
// snapshot's chain (of volume vol), oldest first, with open, and checks
// each against its record before anything reads it: its header and the
// file digest its END record claims must be the record's (checkRecord).
// Readers check that claim when they reach END, so a file that passes
// here and is read to its end is the file the record describes. The
// files are returned at their start; on an error none is left open, and
// the error names the file, the snapshot and what to do (store names the
// store in that advice).
func openChain(open func(file string) (catalog.DeltaReader, error), store string, vol catalog.Volume, chain []catalog.Snapshot) ([]catalog.DeltaReader, error) {
	var files []catalog.DeltaReader
	for _, sn := range chain {
		f, err := open(sn.File)
		if err == nil {
			files = append(files, f)
			err = checkOpened(f, sn, vol)
		}
		if err != nil {
			closeDeltas(files)
			if errors.Is(err, errNotRecorded) {
				return nil, fmt.Errorf("%w; it was not used. thinback verify --store %s lists every such file; "+
					"if the catalog is what is out of date, thinback catalog rebuild --store %s recreates it from the files", err, store, store)
			}
			return nil, fmt.Errorf("snapshot #%d %s of %s: %w (run thinback verify --store %s)", sn.Seq, sn.ID, sn.Volume, err, store)
		}
	}
	return files, nil
}

// checkOpened reads f's header and END digest, compares them with rec
// (checkRecord) and puts f back at its start.
func checkOpened(f catalog.DeltaReader, rec catalog.Snapshot, vol catalog.Volume) error {
	h, err := archive.NewReader(f).Header()
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	d, err := archive.EndDigest(f, size)
	if err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	if err := checkRecord(f.Name(), rec, vol, h, hex.EncodeToString(d[:])); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

// closeDeltas closes files, returning the first error.
func closeDeltas(files []catalog.DeltaReader) error {
	var first error
	for _, f := range files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
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
	err := closeDeltas(p.files)
	p.files = nil
	return err
}
