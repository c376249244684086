package catalog

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
)

// DeltaWriter is the write seam of a store: the only way thinback's
// commands put a delta file into one. Each call either commits, or leaves
// nothing behind, like bbolt's Update. The callback sees only an
// io.Writer: where the bytes go and what commit means is the store's
// business. For the local directory (Store) the bytes go to a temp file
// under tmp/, and commit is fsync, rename into volumes/, fsync of the
// directory, then the catalog record. A store on object storage fits
// behind the same calls: the bytes go to a streaming multipart upload,
// and commit is completing the upload, then writing the record object.
type DeltaWriter interface {
	// WriteDelta writes the delta file of a new snapshot id of volume:
	// write writes the whole file to w and returns the snapshot record to
	// keep for it (Volume must be volume, ID must be id). The id is given
	// before the bytes because a store may have to name the file before
	// they arrive (a multipart upload has its key from the start). The
	// file becomes durable first, then the record is committed, with Seq,
	// File, FileSize and Created set, and returned. If write fails, or
	// the commit does, nothing is kept and the error says why (with any
	// failure to clean up).
	WriteDelta(volume, id string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error)

	// WriteVolumeDelta is WriteDelta for what may be the first snapshot
	// of vol.Name: when the store has no volume of that name, vol is
	// recorded in the same commit as the snapshot, so a first backup that
	// fails leaves no volume behind. An existing record is kept as it is.
	WriteVolumeDelta(vol Volume, id string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error)

	// ReplaceDelta writes a new file for the existing snapshot id of
	// volume (the merge of a prune): write writes it and returns the
	// snapshot's new record; the snapshots listed in remove are deleted
	// in the same commit, and the files the commit made obsolete are
	// removed after it (a LeftoverError if they cannot be: the commit
	// stands). On failure the store is as it was.
	ReplaceDelta(volume, id string, remove []string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error)
}

var _ DeltaWriter = (*Store)(nil)

// WriteDelta implements DeltaWriter with CreateTemp and Commit. The
// caller should hold LockVolume(volume).
func (s *Store) WriteDelta(volume, id string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error) {
	return s.writeDelta(volume, write, func(tmp *os.File, rec *Snapshot) error {
		if err := CheckWritten(volume, id, *rec); err != nil {
			return s.discardAfter(tmp, err)
		}
		return s.Commit(tmp, rec)
	})
}

// WriteVolumeDelta implements DeltaWriter with CreateTemp and
// CommitVolume. The caller should hold LockVolume(vol.Name).
func (s *Store) WriteVolumeDelta(vol Volume, id string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error) {
	return s.writeDelta(vol.Name, write, func(tmp *os.File, rec *Snapshot) error {
		if err := CheckWritten(vol.Name, id, *rec); err != nil {
			return s.discardAfter(tmp, err)
		}
		return s.CommitVolume(tmp, &vol, rec)
	})
}

// ReplaceDelta implements DeltaWriter with CreateTemp and Replace. The
// caller should hold LockVolume(volume).
func (s *Store) ReplaceDelta(volume, id string, remove []string, write func(w io.Writer) (Snapshot, error)) (Snapshot, error) {
	return s.writeDelta(volume, write, func(tmp *os.File, rec *Snapshot) error {
		if err := CheckWritten(volume, id, *rec); err != nil {
			return s.discardAfter(tmp, err)
		}
		return s.Replace(tmp, rec, remove...)
	})
}

// CheckWritten refuses the record a DeltaWriter callback returned when it
// is not of the volume and snapshot the write was announced for: a store
// that named the file by them would otherwise record it under the wrong
// name.
func CheckWritten(volume, id string, rec Snapshot) error {
	if rec.Volume != volume {
		return fmt.Errorf("catalog: a delta file of volume %q cannot be recorded as one of %q", volume, rec.Volume)
	}
	if rec.ID != id {
		return fmt.Errorf("catalog: the delta file written as snapshot %s holds snapshot %q", id, rec.ID)
	}
	return nil
}

// writeDelta runs write into a new temp file and hands the result to
// commit, which consumes the temp file. Anything that fails before commit
// discards the temp file; a failed discard is reported with the error.
func (s *Store) writeDelta(volume string, write func(io.Writer) (Snapshot, error), commit func(*os.File, *Snapshot) error) (Snapshot, error) {
	tmp, err := s.CreateTemp(volume)
	if err != nil {
		return Snapshot{}, err
	}
	tw := &tempWriter{f: tmp}
	bw := bufio.NewWriterSize(tw, 256<<10)
	rec, err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		// An error of the file itself (a full disk, FAT's size limit)
		// wins over how the callback wrapped it: it is what to act on.
		if tw.err != nil && !errors.Is(err, tw.err) {
			err = fmt.Errorf("%w (%v)", tw.err, err)
		}
		if derr := s.Discard(tmp); derr != nil {
			err = fmt.Errorf("%w; and the temp file was not removed: %v", err, derr)
		}
		return Snapshot{}, err
	}
	if err := commit(tmp, &rec); err != nil {
		return Snapshot{}, err
	}
	return rec, nil
}

// tempWriter types the write errors of a temp file (see WriteError) and
// remembers the first.
type tempWriter struct {
	f   *os.File
	err error
}

func (t *tempWriter) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	n, err := t.f.Write(p)
	if err != nil {
		t.err = WriteError(t.f.Name(), err)
		return n, t.err
	}
	return n, nil
}
