package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// Commit makes a finished delta file part of the store and records snap,
// in this order, so that the catalog never points at a file that is not
// durable and a file in volumes/ is complete or absent:
//
//  1. fsync tmp (from CreateTemp);
//  2. rename it to volumes/<DirName(volume)>/<seq>-<id>.tbk, never
//     replacing an existing file, and close it;
//  3. fsync that directory (and volumes/ when the directory is new);
//  4. record snap, with File and FileSize set, in one transaction.
//
// A crash before step 4 leaves an unreferenced file (a temp file for
// CleanTemp, or an orphan for RemoveOrphans), never a record without its
// file. snap's volume must be in the catalog, its ID new, its parent (if
// any) a snapshot of the same volume. A zero Seq is assigned. On success
// snap is updated with Seq, File, FileSize and Created.
//
// Commit always consumes tmp: on success it has become the snapshot's file,
// on failure it is removed. (A file that CreateTemp did not make in this
// store is refused and left alone.) A full filesystem gives a NoSpaceError
// naming the file.
//
// The caller should hold LockVolume(snap.Volume): without it, two
// concurrent commits to one volume may race for a Seq, and the loser fails
// with ErrExist.
func (s *Store) Commit(tmp *os.File, snap *Snapshot) error {
	return s.CommitVolume(tmp, nil, snap)
}

// CommitVolume is Commit for what may be a volume's first snapshot: when
// vol is not nil and the catalog has no volume of that name, vol is
// recorded in the same transaction as snap (an existing record is left
// as it is; when vol is recorded here, its Created is set). A volume thus
// appears in the catalog only together with its first snapshot, and a
// first backup that fails (a full disk, an interrupt, a crash) leaves no
// volume behind. vol.Name must be snap.Volume.
func (s *Store) CommitVolume(tmp *os.File, vol *Volume, snap *Snapshot) error {
	if vol != nil && vol.Name != snap.Volume {
		return s.discardAfter(tmp, fmt.Errorf("catalog: snapshot %s of volume %q committed with the record of volume %q", snap.ID, snap.Volume, vol.Name))
	}
	rec, err := s.prepare(tmp, snap)
	if err != nil {
		return err
	}
	at("commit:synced")

	// Check and choose the Seq before the file gets its final name, which
	// contains it; the same checks run again in the recording transaction.
	if err := s.View(func(tx *Tx) error {
		if vol != nil {
			if _, err := tx.Volume(vol.Name); errors.Is(err, ErrNotFound) {
				if err := vol.validate(vol.Name); err != nil {
					return &RecordError{Bucket: string(bucketVolumes), Key: vol.Name, Err: err, write: true}
				}
				return tx.checkFresh(&rec) // the first snapshot of a new volume
			}
		}
		return tx.checkNew(&rec)
	}); err != nil {
		return s.discardAfter(tmp, err)
	}
	rec.File = fileName(rec.Volume, rec.Seq, rec.ID, 0)
	if err := s.install(tmp, rec.File, "commit"); err != nil {
		return s.discardAfter(tmp, err)
	}
	var newVol *Volume
	err = s.Update(func(tx *Tx) error {
		newVol = nil
		if vol != nil {
			if _, err := tx.Volume(vol.Name); errors.Is(err, ErrNotFound) {
				v := *vol
				if err := tx.PutVolume(&v); err != nil {
					return err
				}
				newVol = &v
			}
		}
		if err := tx.checkNew(&rec); err != nil {
			return err
		}
		return tx.PutSnapshot(&rec)
	})
	if err != nil {
		return s.settle(rec.ID, rec.File, err)
	}
	at("commit:recorded")
	*snap = rec
	if newVol != nil {
		*vol = *newVol
	}
	return nil
}

// syncTemp makes tmp's contents durable and returns its size. The file
// stays open, and so flocked, until install has renamed it: CleanTemp in
// another process never sees it unlocked in tmp/.
func syncTemp(tmp *os.File) (int64, error) {
	name := tmp.Name()
	if err := tmp.Sync(); err != nil {
		return 0, noSpace(name, fmt.Errorf("catalog: sync %s: %w", name, err))
	}
	fi, err := tmp.Stat()
	if err != nil {
		return 0, fmt.Errorf("catalog: %w", err)
	}
	return fi.Size(), nil
}

// install publishes a synced temp file under its store-relative final
// name (see Publish), creating the volume's directory durably first. On
// failure the final name does not exist (anything renamed is removed
// again: it was never recorded), nor does the volume's directory if
// install made it, and tmp is closed.
func (s *Store) install(tmp *os.File, rel, op string) (err error) {
	tmpName := tmp.Name()
	final := s.Path(rel)
	dir := filepath.Dir(final)
	// volumes/ and the volume's directory are the store's own: a link
	// planted there would put the file wherever it points.
	if _, err := OwnDir(s.volumesDir(), false); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("catalog: %w", err)
	}
	made, err := OwnDir(dir, true)
	if err != nil {
		_ = tmp.Close()
		return noSpace(dir, fmt.Errorf("catalog: %w", err))
	}
	if made {
		defer func() {
			if err != nil {
				s.removeEmptyDir(dir)
			}
		}()
		// The new directory's own entry must be durable before a file in
		// it can count as durable.
		if err := SyncDir(s.volumesDir()); err != nil {
			return noSpace(dir, fmt.Errorf("catalog: %w", err))
		}
	}
	err = publish(tmp, final, op)
	setLive(tmpName, false)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("catalog: %s already exists: %w", final, ErrExist)
	}
	if err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	at(op + ":dirsynced")
	return nil
}

// removeEmptyDir removes a volume directory that a failed first commit
// made, if nothing else is in it: a failed first backup leaves no trace.
// (os.Remove fails on a directory that is not empty, which is then kept.)
func (s *Store) removeEmptyDir(dir string) {
	if os.Remove(dir) == nil {
		_ = SyncDir(s.volumesDir())
	}
}

// settle handles a failed recording transaction after the file was
// installed under rel. The transaction may have failed before writing
// anything (a check, a full disk) or, rarely, after bbolt wrote its meta
// page; a fresh read tells which. If the record is there and points at
// rel, the file is durable and the operation succeeded. If not, the file
// is removed, since nothing references it. If the catalog cannot even be
// read, the file stays: an orphan is harmless, a missing file is not.
func (s *Store) settle(id, rel string, updateErr error) error {
	updateErr = noSpace(s.DBPath(), updateErr)
	var recorded bool
	verr := s.View(func(tx *Tx) error {
		sn, err := tx.Snapshot(id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		recorded = sn.File == rel
		return nil
	})
	switch {
	case verr != nil:
		return fmt.Errorf("%w (%s may be left as an orphan: %v)", updateErr, rel, verr)
	case recorded:
		return nil
	}
	final := s.Path(rel)
	if err := os.Remove(final); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w (%s is left as an orphan: %v)", updateErr, rel, err)
	}
	if err := SyncDir(filepath.Dir(final)); err != nil {
		return fmt.Errorf("%w (and removing %s may not be durable: %v)", updateErr, rel, err)
	}
	// A first snapshot's directory goes with it (one that holds other
	// files is not empty and stays).
	s.removeEmptyDir(filepath.Dir(final))
	return updateErr
}

// nextSeq is the Seq PutSnapshot would assign to a new snapshot of volume.
func (tx *Tx) nextSeq(volume string) uint64 {
	high := uint64(0)
	if ls := tx.bucket(bucketLastSeq); ls != nil {
		high = seqOf(ls.Get([]byte(volume)))
	}
	if sb := tx.seqBucket(volume); sb != nil {
		if k, _ := sb.Cursor().Last(); seqOf(k) > high {
			high = seqOf(k)
		}
	}
	return high + 1
}

// checkNew checks that rec can be recorded as a new snapshot and assigns
// its Seq if it is zero.
func (tx *Tx) checkNew(rec *Snapshot) error {
	if _, err := tx.Volume(rec.Volume); err != nil {
		return fmt.Errorf("catalog: snapshot %s: %w (record the volume first)", rec.ID, err)
	}
	return tx.checkFresh(rec)
}

// CheckNew reports why rec could not be committed as a new snapshot of its
// volume: its ID is taken (ErrExist), or its parent is missing
// (ErrMissingParent), of another volume (ErrParentVolume) or not older
// (ErrParentOrder). A volume not yet in the catalog counts as a new one.
// Commit makes the same checks; CheckNew lets a caller refuse a stream
// before reading it.
func (tx *Tx) CheckNew(rec Snapshot) error {
	if _, err := tx.Volume(rec.Volume); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return tx.checkFresh(&rec)
}

// checkFresh is checkNew without the volume.
func (tx *Tx) checkFresh(rec *Snapshot) error {
	if _, err := tx.Snapshot(rec.ID); err == nil {
		return fmt.Errorf("catalog: snapshot %s: %w", rec.ID, ErrExist)
	} else if !errors.Is(err, ErrNotFound) {
		return err
	}
	if rec.Seq == 0 {
		rec.Seq = tx.nextSeq(rec.Volume)
	} else if sb := tx.seqBucket(rec.Volume); sb != nil {
		if id := sb.Get(seqKey(rec.Seq)); id != nil {
			return fmt.Errorf("catalog: seq %d of volume %q is already used by snapshot %s: %w",
				rec.Seq, rec.Volume, id, ErrExist)
		}
	}
	return tx.checkParent(rec, nil)
}

// checkParent checks that rec's parent is an older snapshot of the same
// volume that is not about to be removed.
func (tx *Tx) checkParent(rec *Snapshot, removing map[string]bool) error {
	if rec.Parent == "" {
		return nil
	}
	if removing[rec.Parent] {
		return fmt.Errorf("catalog: snapshot %s: parent %s is being removed: %w", rec.ID, rec.Parent, ErrInUse)
	}
	p, err := tx.Snapshot(rec.Parent)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("catalog: parent %s of snapshot %s is not in the catalog: %w (%w)", rec.Parent, rec.ID, ErrMissingParent, err)
	}
	if err != nil {
		return fmt.Errorf("catalog: parent of snapshot %s: %w", rec.ID, err)
	}
	if p.Volume != rec.Volume {
		return fmt.Errorf("catalog: parent %s of snapshot %s belongs to volume %q, not %q: %w",
			p.ID, rec.ID, p.Volume, rec.Volume, ErrParentVolume)
	}
	if p.Seq >= rec.Seq {
		return fmt.Errorf("catalog: parent %s (seq %d) of snapshot %s is not older than it (seq %d): %w",
			p.ID, p.Seq, rec.ID, rec.Seq, ErrParentOrder)
	}
	// Every new record carries the parent size its file says, so 0 is not
	// "unknown" here as it is for Check's older records.
	if rec.ParentSize != p.VolumeSize {
		return fmt.Errorf("catalog: snapshot %s of volume %q: %w: %s", rec.ID, rec.Volume, ErrParentSize,
			parentSizeDetail(rec.ParentSize, p))
	}
	return nil
}

// Replace is the atomic step of a prune. It installs tmp (from CreateTemp,
// already written: typically the merge of a snapshot with the one it
// depends on) as the new file of the existing snapshot snap, and deletes
// the snapshots listed in remove, in one transaction:
//
//   - removing an incremental B of A -> B -> C: tmp holds B+C,
//     snap is C with Parent A, remove is [B];
//   - removing a full A of A -> B: tmp holds A+B as a full, snap is B with
//     Parent "", remove is [A].
//
// The new file gets a name of its own (<seq>-<id>.<n>.tbk) and is durable
// before the transaction; the files the transaction made obsolete (snap's
// old file, the removed snapshots' files) are deleted only after it. A
// crash at any point leaves the old chain or the new one, plus orphans.
// The transaction is refused if any remaining snapshot would still depend
// on a removed one (ErrInUse), or if snap's new parent is not an older
// snapshot of its volume. snap keeps its ID, volume and Seq; its File,
// FileSize (and a zero Created) are set. tmp is consumed as by Commit. If
// the catalog changed but old files could not be removed, the error is a
// LeftoverError.
func (s *Store) Replace(tmp *os.File, snap *Snapshot, remove ...string) error {
	rec, err := s.prepare(tmp, snap)
	if err != nil {
		return err
	}
	at("replace:synced")

	var old Snapshot
	if err := s.View(func(tx *Tx) (err error) {
		old, _, err = tx.checkReplace(&rec, remove)
		return err
	}); err != nil {
		return s.discardAfter(tmp, err)
	}
	rec.File = s.nextGeneration(old)
	if err := s.install(tmp, rec.File, "replace"); err != nil {
		return s.discardAfter(tmp, err)
	}
	var obsolete []string
	err = s.Update(func(tx *Tx) error {
		old, removed, err := tx.checkReplace(&rec, remove)
		if err != nil {
			return err
		}
		obsolete = obsolete[:0]
		for _, r := range removed {
			if err := tx.DeleteSnapshot(r.ID); err != nil {
				return err
			}
			obsolete = append(obsolete, r.File)
		}
		if old.File != rec.File {
			obsolete = append(obsolete, old.File)
		}
		return tx.PutSnapshot(&rec)
	})
	if err != nil {
		return s.settle(rec.ID, rec.File, err)
	}
	at("replace:recorded")
	*snap = rec
	return s.removeFiles(obsolete)
}

// nextGeneration picks a file name for a rewrite of old: the next
// generation whose name is free (a crashed earlier Replace may have left
// one behind as an orphan).
func (s *Store) nextGeneration(old Snapshot) string {
	gen := 1
	if _, _, g, ok := parseFileName(path.Base(old.File)); ok {
		gen = g + 1
	}
	for {
		rel := fileName(old.Volume, old.Seq, old.ID, gen)
		if _, err := os.Lstat(s.Path(rel)); errors.Is(err, fs.ErrNotExist) {
			return rel
		}
		gen++
	}
}

// checkReplace validates a Replace and returns snap's current record and
// the snapshots to remove. It fills rec's Seq and Created from the stored
// record.
func (tx *Tx) checkReplace(rec *Snapshot, remove []string) (old Snapshot, removed []Snapshot, err error) {
	old, err = tx.Snapshot(rec.ID)
	if err != nil {
		return old, nil, err
	}
	if old.Volume != rec.Volume {
		return old, nil, fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q", rec.ID, old.Volume, rec.Volume)
	}
	if rec.Seq == 0 {
		rec.Seq = old.Seq
	} else if rec.Seq != old.Seq {
		return old, nil, fmt.Errorf("catalog: snapshot %s has seq %d, cannot change it to %d", rec.ID, old.Seq, rec.Seq)
	}
	if rec.Created.IsZero() {
		rec.Created = old.Created
	}
	removing := make(map[string]bool, len(remove))
	for _, id := range remove {
		if id == rec.ID {
			return old, nil, fmt.Errorf("catalog: snapshot %s cannot be replaced and removed at once", id)
		}
		if removing[id] {
			continue
		}
		r, err := tx.Snapshot(id)
		if err != nil {
			return old, nil, err
		}
		if r.Volume != rec.Volume {
			return old, nil, fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q", id, r.Volume, rec.Volume)
		}
		removing[id] = true
		removed = append(removed, r)
	}
	if err := tx.checkParent(rec, removing); err != nil {
		return old, nil, err
	}
	snaps, err := tx.Snapshots(rec.Volume)
	if err != nil {
		return old, nil, err
	}
	for _, c := range snaps {
		if c.ID != rec.ID && !removing[c.ID] && removing[c.Parent] {
			return old, nil, fmt.Errorf("catalog: snapshot %s still depends on %s: %w", c.ID, c.Parent, ErrInUse)
		}
	}
	return old, removed, nil
}

// prepare is the first step of Commit and Replace: the record, checked,
// with the size of tmp once tmp is durable. On error tmp is discarded
// (unless it is not this store's).
func (s *Store) prepare(tmp *os.File, snap *Snapshot) (Snapshot, error) {
	if err := s.ownTemp(tmp); err != nil {
		return Snapshot{}, err
	}
	rec := *snap
	rec.File, rec.FileSize = "", 0
	if err := rec.validateFields(); err != nil {
		return rec, s.discardAfter(tmp, &RecordError{Bucket: string(bucketSnapshots), Key: rec.ID, Err: err, write: true})
	}
	size, err := syncTemp(tmp)
	if err != nil {
		return rec, s.discardAfter(tmp, err)
	}
	rec.FileSize = size
	return rec, nil
}

// discardAfter discards tmp after err and returns err, with the failure
// to discard if there was one: a temp file left behind is reported, never
// dropped silently.
func (s *Store) discardAfter(tmp *os.File, err error) error {
	if derr := s.Discard(tmp); derr != nil {
		return fmt.Errorf("%w; and the temp file was not removed: %v", err, derr)
	}
	return err
}
