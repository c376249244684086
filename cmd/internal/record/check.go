package record

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
)

// ErrNotRecorded is the error of a delta file of a store that is not the
// file the catalog records under its name: another snapshot's, another
// volume's, or one whose record is out of date. Nothing is read from such
// a file; it maps to exit code 3, as a damaged file does.
var ErrNotRecorded = errors.New("the delta file is not the one the catalog records")

// Mismatch is ErrNotRecorded for one file: what differs between its
// header (or file digest) and the record.
type Mismatch struct {
	file  string // the file, as the store names it in messages
	rec   catalog.Snapshot
	diffs []string
}

func (e *Mismatch) Error() string {
	return fmt.Sprintf("%s is not the delta file the catalog records for %s #%d (%s): %s",
		e.file, e.rec.Volume, e.rec.Seq, e.rec.ID, strings.Join(e.diffs, "; "))
}

func (e *Mismatch) Unwrap() error { return ErrNotRecorded }

// Check compares what a delta file says of itself, its header h and
// its file digest (lower-case hex, or "" when not known yet), with the
// catalog's record of it, rec, and of its volume, vol. It returns a
// *Mismatch naming every difference, or nil. This is the one place
// that decides whether a file is the one its record describes: every
// command that reaches a delta file by way of the catalog (restore, cat,
// mount, serve, verify, backup's base, prune's merge) goes through it.
func Check(file string, rec catalog.Snapshot, vol catalog.Volume, h *archive.Header, digest string) error {
	var diffs []string
	differ := func(format string, a ...any) { diffs = append(diffs, fmt.Sprintf(format, a...)) }
	none := func(id string) string {
		if id == "" {
			return "none (a full)"
		}
		return id
	}
	if got := ID(h.Snapshot.ID); got != rec.ID {
		differ("it holds snapshot %s, the record says %s", got, rec.ID)
	}
	if got := ID(h.Parent.ID); got != rec.Parent {
		differ("its parent is %s, the record's is %s", none(got), none(rec.Parent))
	}
	// The rollback check (catalog watermarks) orders snapshots by the
	// times their records give, so a record must not move its file's.
	if !h.Snapshot.Time.Equal(rec.Time) {
		differ("it was taken at %s, the record says %s", stamp(h.Snapshot.Time), stamp(rec.Time))
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
	return &Mismatch{file: file, rec: rec, diffs: diffs}
}

// stamp formats t for a Mismatch: UTC to the nanosecond, as a header
// keeps it, so two times that differ never print the same.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "no time"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// OpenChain opens the delta files of chain, the records of one
// snapshot's chain (of volume vol), oldest first, with open, and checks
// each against its record before anything reads it: its header and the
// file digest its END record claims must be the record's (Check).
// Readers check that claim when they reach END, so a file that passes
// here and is read to its end is the file the record describes. The
// files are returned at their start; on an error none is left open, and
// the error names the file, the snapshot and what to do (store names the
// store in that advice).
func OpenChain(open func(file string) (catalog.DeltaReader, error), store string, vol catalog.Volume, chain []catalog.Snapshot) ([]catalog.DeltaReader, error) {
	var files []catalog.DeltaReader
	for _, sn := range chain {
		f, err := open(sn.File)
		if err == nil {
			files = append(files, f)
			err = CheckOpened(f, sn, vol)
		}
		if err != nil {
			CloseAll(files)
			if errors.Is(err, ErrNotRecorded) {
				return nil, fmt.Errorf("%w; it was not used. thinback verify --store %s lists every such file; "+
					"if the catalog is what is out of date, thinback catalog rebuild --store %s recreates it from the files", err, store, store)
			}
			return nil, fmt.Errorf("snapshot #%d %s of %s: %w (run thinback verify --store %s)", sn.Seq, sn.ID, sn.Volume, err, store)
		}
	}
	return files, nil
}

// CheckOpened reads f's header and END digest, compares them with rec
// (Check) and puts f back at its start.
func CheckOpened(f catalog.DeltaReader, rec catalog.Snapshot, vol catalog.Volume) error {
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
	if err := Check(f.Name(), rec, vol, h, hex.EncodeToString(d[:])); err != nil {
		return err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", f.Name(), err)
	}
	return nil
}

// CloseAll closes files, returning the first error.
func CloseAll(files []catalog.DeltaReader) error {
	var first error
	for _, f := range files {
		if err := f.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}
