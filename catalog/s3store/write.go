package s3store

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// hook, when set by a test, is called at named points of the writes, so a
// test can kill the process exactly there and check what is left. It is
// nil in production.
var hook func(point string)

func at(point string) {
	if hook != nil {
		hook(point)
	}
}

// cleanupTimeout bounds the requests that undo a failed write; they run
// even when the command's context is done.
const cleanupTimeout = 2 * time.Minute

var _ catalog.Repository = (*Store)(nil)

// WriteDelta implements catalog.DeltaWriter: the file is streamed to
// volumes/<dir>/<seq>-<id>.tbk as a multipart upload, then its record
// object is created, which is the commit. The caller must hold
// LockVolume(volume) (ErrNotLocked otherwise).
func (s *Store) WriteDelta(volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return s.writeNew(volume, nil, id, write)
}

// WriteVolumeDelta is WriteDelta for what may be vol's first snapshot:
// for a volume without records, volume.json is written before the
// record, so the volume appears with its first snapshot.
func (s *Store) WriteVolumeDelta(vol catalog.Volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	return s.writeNew(vol.Name, &vol, id, write)
}

// writeNew is the commit of a new snapshot:
//
//  1. a journal naming the new file, so that whatever of it a crash
//     leaves is removed by the volume's next writer;
//  2. the file, streamed as multipart uploads of at most PieceSize
//     bytes each (invisible until completed);
//  3. the checks Commit makes, against the cache (synced under the lock);
//  4. for a new volume, volume.json;
//  5. the record object, created only if absent: the commit;
//  6. the cache, then the journal is removed.
func (s *Store) writeNew(volume string, vol *catalog.Volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	vl, err := s.held(volume)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	if err := catalog.ValidID(id); err != nil {
		return catalog.Snapshot{}, fmt.Errorf("store %s: %w", s.loc, err)
	}
	if vol != nil && vol.Name != volume {
		return catalog.Snapshot{}, fmt.Errorf("store %s: snapshot %s of volume %q written with the record of volume %q", s.loc, id, volume, vol.Name)
	}
	var (
		seq       uint64
		volRecord catalog.Volume
		newVolume bool
	)
	err = s.View(func(tx *catalog.Tx) error {
		if _, err := tx.Snapshot(id); err == nil {
			return fmt.Errorf("catalog: snapshot %s: %w", id, catalog.ErrExist)
		} else if !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		v, err := tx.Volume(volume)
		switch {
		case errors.Is(err, catalog.ErrNotFound) && vol != nil:
			newVolume, volRecord = true, *vol
			if volRecord.Created.IsZero() {
				volRecord.Created = time.Now().UTC()
			}
			if err := catalog.ValidateVolume(volRecord); err != nil {
				return err
			}
		case errors.Is(err, catalog.ErrNotFound):
			return fmt.Errorf("catalog: snapshot %s: %w (record the volume first)", id, err)
		case err != nil:
			return err
		default:
			volRecord = v
		}
		seq = max(tx.NextSeq(volume), vl.maxSeq+1)
		return nil
	})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	file := catalog.FileName(volume, seq, id, 0)
	journal, err := s.writeJournal(volume, "write", []string{file})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	at("write:journal")
	ctx, stop := vl.writeContext()
	defer stop()
	rec, w, fail, err := s.upload(ctx, journal, file, volume, id, write)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	rec.Seq, rec.File, rec.FileSize = seq, file, w.size
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	if err := catalog.ValidateSnapshot(rec); err != nil {
		return fail(err)
	}
	if err := s.View(func(tx *catalog.Tx) error { return tx.CheckNew(rec) }); err != nil {
		return fail(err)
	}
	if err := w.Complete(); err != nil {
		return fail(err)
	}
	vl.note(catalog.DeltaFile{Seq: seq, ID: id})
	at("write:uploaded")
	if err := vl.stillHeld(); err != nil {
		return fail(err)
	}
	etags := map[string]string{}
	if newVolume {
		// No record of the volume exists (the cache was synced under the
		// lock), so a volume.json there is a failed first backup's.
		info, err := s.putObject(ctx, volumeObjectName(volume), volumeObject{Format: volumeFormat, Volume: volRecord})
		if err != nil {
			return fail(err)
		}
		etags[info.Name] = info.ETag
	}
	name := recordName(volume, seq, id)
	info, err := s.createRecord(ctx, name, recordObject{Format: recordFormat, Volume: volRecord, Snapshot: rec})
	if err != nil {
		return fail(err)
	}
	etags[name] = info.ETag
	at("write:recorded")
	if err := s.cacheUpdate(func(tx *catalog.Tx) error {
		if newVolume {
			if _, err := tx.Volume(volume); errors.Is(err, catalog.ErrNotFound) {
				v := volRecord
				if err := tx.PutVolume(&v); err != nil {
					return err
				}
			}
		}
		r := rec
		return tx.PutSnapshot(&r)
	}, etags, nil); err != nil {
		// The commit stands: the record is in the bucket, and the next
		// command's sync puts it in the cache.
		s.notify("snapshot %s is recorded in store %s, but the local cache could not be updated (the next command brings it up to date): %v", id, s.loc, err)
	}
	s.dropJournal(journal)
	return rec, nil
}

// ReplaceDelta implements catalog.DeltaWriter for a prune's merge. The
// steps, each of which a crash may stop after:
//
//  1. a journal naming the new file and the files the replace makes
//     obsolete (the snapshot's old file and the removed snapshots');
//  2. the new file, under the next generation's name;
//  3. the checks Replace makes;
//  4. the snapshot's record replaced (If-Match) to point at the new file:
//     from here the merge is committed;
//  5. the removed snapshots' records deleted, newest first, so every
//     record left has its parent;
//  6. the cache, the obsolete files, the journal.
//
// A crash before 4 leaves the old chain (the new file is removed by the
// next writer, as the journal says); after 4 the new one, with removed
// snapshots that are still valid (their parents are kept until they are
// removed) for the next prune to remove, and obsolete files for the next
// writer to remove. Every state verifies.
func (s *Store) ReplaceDelta(volume, id string, remove []string, write func(io.Writer) (catalog.Snapshot, error)) (catalog.Snapshot, error) {
	vl, err := s.held(volume)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	var (
		old       catalog.Snapshot
		volRecord catalog.Volume
		obsolete  []catalog.Snapshot
	)
	err = s.View(func(tx *catalog.Tx) error {
		var err error
		if old, err = tx.Snapshot(id); err != nil {
			return err
		}
		if old.Volume != volume {
			return fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q", id, old.Volume, volume)
		}
		if volRecord, err = tx.Volume(volume); err != nil {
			return err
		}
		obsolete = append(obsolete, old)
		for _, r := range remove {
			sn, err := tx.Snapshot(r)
			if err != nil {
				return err
			}
			obsolete = append(obsolete, sn)
		}
		return nil
	})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	gen := 1
	if f, ok := catalog.ParseFile(old.File); ok {
		gen = f.Gen + 1
	}
	if g, ok := vl.maxGen[fmt.Sprintf("%d-%s", old.Seq, old.ID)]; ok && g >= gen {
		gen = g + 1
	}
	file := catalog.FileName(volume, old.Seq, id, gen)
	files := []string{file}
	for _, sn := range obsolete {
		files = append(files, sn.File)
	}
	journal, err := s.writeJournal(volume, "replace", files)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	ctx, stop := vl.writeContext()
	defer stop()
	rec, w, fail, err := s.upload(ctx, journal, file, volume, id, write)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	rec.File, rec.FileSize = file, w.size
	var removed []catalog.Snapshot
	if err := s.View(func(tx *catalog.Tx) (err error) {
		_, removed, err = tx.CheckReplace(&rec, remove)
		return err
	}); err != nil {
		return fail(err)
	}
	if err := catalog.ValidateSnapshot(rec); err != nil {
		return fail(err)
	}
	if err := w.Complete(); err != nil {
		return fail(err)
	}
	vl.note(catalog.DeltaFile{Seq: old.Seq, ID: id, Gen: gen})
	at("replace:uploaded")
	if err := vl.stillHeld(); err != nil {
		return fail(err)
	}
	name := recordName(volume, rec.Seq, id)
	info, err := s.switchRecord(ctx, name, old, recordObject{Format: recordFormat, Volume: volRecord, Snapshot: rec})
	if err != nil {
		return fail(err)
	}
	at("replace:switched")
	// Newest first: each record deleted is one no remaining record
	// depends on (the kept snapshot no longer does).
	sort.Slice(removed, func(i, j int) bool { return removed[i].Seq > removed[j].Seq })
	var gone []catalog.Snapshot
	var unrecErr error
	for _, r := range removed {
		if err := s.s3.Delete(ctx, recordName(volume, r.Seq, r.ID)); err != nil {
			unrecErr = err
			break
		}
		gone = append(gone, r)
		at("replace:unrecorded")
	}
	drop := make([]string, 0, len(gone))
	for _, r := range gone {
		drop = append(drop, recordName(volume, r.Seq, r.ID))
	}
	if err := s.cacheUpdate(func(tx *catalog.Tx) error {
		for _, r := range gone {
			if err := tx.DeleteSnapshot(r.ID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
		}
		r := rec
		return tx.PutSnapshot(&r)
	}, map[string]string{name: info.ETag}, drop); err != nil {
		s.notify("snapshot %s was rewritten in store %s, but the local cache could not be updated (the next command brings it up to date): %v", id, s.loc, err)
	}
	if unrecErr != nil {
		// Committed as far as it got; the journal stays, so the next
		// writer removes the files no record references any more.
		return rec, fmt.Errorf("snapshot %s of %s now holds the merge, but removing the records of the snapshots merged into it failed: %w; they are still valid snapshots: prune again",
			id, volume, unrecErr)
	}
	left := s.removeFiles(ctx, append([]catalog.Snapshot{old}, gone...))
	at("replace:deleted")
	if left != nil {
		return rec, left
	}
	s.dropJournal(journal)
	return rec, nil
}

// Remove deletes a snapshot that no other depends on: a journal naming
// its file, its record (from here it is gone), the cache, its file, the
// journal. The caller must hold LockVolume(volume).
func (s *Store) Remove(volume, id string) error {
	if _, err := s.held(volume); err != nil {
		return err
	}
	var sn catalog.Snapshot
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if sn, err = tx.Snapshot(id); err != nil {
			return err
		}
		if sn.Volume != volume {
			return fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q: %w", id, sn.Volume, volume, catalog.ErrNotFound)
		}
		kids, err := tx.Children(id)
		if err != nil {
			return err
		}
		if len(kids) > 0 {
			return fmt.Errorf("catalog: snapshot %s of volume %q is the parent of %s: %w", id, volume, kids[0].ID, catalog.ErrInUse)
		}
		return nil
	})
	if err != nil {
		return err
	}
	journal, err := s.writeJournal(volume, "remove", []string{sn.File})
	if err != nil {
		return err
	}
	name := recordName(volume, sn.Seq, sn.ID)
	if err := s.s3.Delete(s.ctx, name); err != nil {
		s.dropJournal(journal)
		return err
	}
	at("remove:unrecorded")
	if err := s.cacheUpdate(func(tx *catalog.Tx) error {
		if err := tx.DeleteSnapshot(id); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		return nil
	}, nil, []string{name}); err != nil {
		s.notify("snapshot %s was removed from store %s, but the local cache could not be updated (the next command brings it up to date): %v", id, s.loc, err)
	}
	if left := s.removeFiles(s.ctx, []catalog.Snapshot{sn}); left != nil {
		return left
	}
	s.dropJournal(journal)
	return nil
}

// removeFiles removes the pieces of the snapshots' files (by their
// recorded sizes), first piece last. What it cannot remove is a
// catalog.LeftoverError: the change stands, and the journal left in
// place has the next writer remove them.
func (s *Store) removeFiles(ctx context.Context, snaps []catalog.Snapshot) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var left []string
	var firstErr error
	for _, sn := range snaps {
		for n := pieces(sn.FileSize, s.meta.PieceSize); n >= 1; n-- {
			name := pieceName(sn.File, n)
			if err := s.s3.Delete(ctx, name); err != nil {
				left = append(left, name)
				if firstErr == nil {
					firstErr = err
				}
			}
		}
	}
	if firstErr != nil {
		return &catalog.LeftoverError{Paths: left, Err: firstErr}
	}
	return nil
}

// stillHeld refuses to commit when the lock was lost, or is so close to
// its expiry that renewals must have been failing: another host may
// break an expired lock and become the volume's writer, and its cleanup
// would remove the file a late commit here pointed at.
func (vl *volLock) stillHeld() error {
	if err := vl.l.Err(); err != nil {
		return fmt.Errorf("store %s: volume %q: %w; nothing was committed", vl.s.loc, vl.volume, err)
	}
	if left := time.Until(vl.l.Owner().Expires); left < vl.s.opts.LockTTL/3 {
		return fmt.Errorf("store %s: volume %q: the lock has not been renewed for %s and expires in %s: %w; nothing was committed",
			vl.s.loc, vl.volume, (vl.s.opts.LockTTL - left).Round(time.Second), left.Round(time.Second), s3.ErrNotHolder)
	}
	return nil
}

// upload streams the delta that write produces as file (named by
// journal) and checks the record write returns. fail removes what was
// uploaded and the journal and returns its error: the caller sends every
// later failure of its commit through it too. When upload returns an
// error, it has already gone through fail.
func (s *Store) upload(ctx context.Context, journal, file, volume, id string, write func(io.Writer) (catalog.Snapshot, error)) (
	rec catalog.Snapshot, w *pieceWriter, fail func(error) (catalog.Snapshot, error), err error) {
	w = &pieceWriter{s: s, ctx: ctx, file: file, piece: s.meta.PieceSize, n: 1}
	fail = func(err error) (catalog.Snapshot, error) {
		if aerr := w.Abort(); aerr != nil {
			return catalog.Snapshot{}, fmt.Errorf("%w (and removing what was uploaded failed: %v; the volume's next writer removes it)", err, aerr)
		}
		s.dropJournal(journal)
		return catalog.Snapshot{}, err
	}
	if rec, err = write(w); err != nil {
		// An error of the upload itself (a full bucket, a lost lock) wins
		// over how the callback wrapped it: it is what to act on.
		if w.err != nil && !errors.Is(err, w.err) {
			err = fmt.Errorf("%w (%v)", w.err, err)
		}
		_, err = fail(err)
		return catalog.Snapshot{}, nil, nil, err
	}
	if err = catalog.CheckWritten(volume, id, rec); err != nil {
		_, err = fail(err)
		return catalog.Snapshot{}, nil, nil, err
	}
	return rec, w, fail, nil
}

// writeJournal writes a journal naming files for the volume's next
// writer to remove unless a record references them.
func (s *Store) writeJournal(volume, op string, files []string) (string, error) {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	name := recordPrefix(volume) + fmt.Sprintf("journal-%d-%s.json", time.Now().UnixNano(), hex.EncodeToString(rnd[:]))
	if _, err := s.putObject(s.ctx, name, journalObject{Format: journalFormat, Op: op, Files: files, Time: time.Now().UTC()}); err != nil {
		return "", err
	}
	return name, nil
}

// dropJournal removes a journal whose write is done. If that fails, the
// journal only makes the next writer check files that are referenced.
func (s *Store) dropJournal(name string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), cleanupTimeout)
	defer cancel()
	if err := s.s3.Delete(ctx, name); err != nil {
		s.notify("removing %s: %v (the volume's next writer removes it)", name, err)
	}
}

// putObject writes a small object, replacing any.
func (s *Store) putObject(ctx context.Context, name string, v any) (s3.ObjectInfo, error) {
	data, err := encode(v)
	if err != nil {
		return s3.ObjectInfo{}, err
	}
	return s.s3.Put(ctx, name, data)
}

// createRecord creates a record object only if none has its name. A
// create whose answer was lost and that the client retried finds its own
// object, which is told from someone else's by reading it back.
func (s *Store) createRecord(ctx context.Context, name string, r recordObject) (s3.ObjectInfo, error) {
	data, err := encode(r)
	if err != nil {
		return s3.ObjectInfo{}, err
	}
	info, err := s.s3.Create(ctx, name, data)
	if err == nil {
		return info, nil
	}
	if got, ginfo, gerr := s.s3.Get(ctx, name, maxRecordObject); gerr == nil && bytes.Equal(got, data) {
		return ginfo, nil
	}
	return info, err
}

// switchRecord replaces the record of old with r, only if the record in
// the bucket is still old's (If-Match on what was read).
func (s *Store) switchRecord(ctx context.Context, name string, old catalog.Snapshot, r recordObject) (s3.ObjectInfo, error) {
	data, err := encode(r)
	if err != nil {
		return s3.ObjectInfo{}, err
	}
	cur, info, err := s.s3.Get(ctx, name, maxRecordObject)
	if err != nil {
		return info, err
	}
	ro, err := decodeRecord(name, cur)
	if err != nil {
		return info, &DamagedError{Store: s.loc.String(), Object: name, Err: err}
	}
	if ro.Snapshot.File != old.File {
		return info, fmt.Errorf("store %s: %s points at %s, not %s as it did when the volume was locked: %w",
			s.loc, name, ro.Snapshot.File, old.File, s3.ErrChanged)
	}
	ninfo, err := s.s3.Replace(ctx, name, info.ETag, data)
	if err == nil {
		return ninfo, nil
	}
	if got, ginfo, gerr := s.s3.Get(ctx, name, maxRecordObject); gerr == nil && bytes.Equal(got, data) {
		return ginfo, nil
	}
	return ninfo, err
}

// pieceWriter streams a delta file into objects of at most piece bytes,
// each a multipart upload (see s3.Upload), completed as it fills. Its
// memory is one upload's, whatever the file's size.
type pieceWriter struct {
	s     *Store
	ctx   context.Context
	file  string
	piece int64
	cur   *s3.Upload
	n     int // number of the current piece, from 1
	done  []string
	size  int64
	err   error
}

func (w *pieceWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	written := 0
	for len(p) > 0 {
		if w.cur == nil {
			u, err := w.s.s3.NewUpload(w.ctx, pieceName(w.file, w.n))
			if err != nil {
				w.err = err
				return written, err
			}
			w.cur = u
		}
		k := int(min(int64(len(p)), w.piece-w.cur.Size()))
		m, err := w.cur.Write(p[:k])
		written += m
		w.size += int64(m)
		if err != nil {
			w.err = err
			return written, err
		}
		p = p[k:]
		if w.cur.Size() == w.piece {
			if err := w.finishPiece(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

func (w *pieceWriter) finishPiece() error {
	info, err := w.cur.Complete()
	w.cur = nil
	if err != nil {
		w.err = err
		return err
	}
	w.done = append(w.done, info.Name)
	w.n++
	return nil
}

// Complete completes the last piece.
func (w *pieceWriter) Complete() error {
	if w.err != nil {
		return w.err
	}
	if w.cur != nil {
		return w.finishPiece()
	}
	if len(w.done) == 0 {
		// Nothing written: an empty object, which no reader takes for a
		// delta file.
		info, err := w.s.s3.Put(w.ctx, w.file, nil)
		if err != nil {
			w.err = err
			return err
		}
		w.done = append(w.done, info.Name)
	}
	return nil
}

// Abort aborts the piece being uploaded and removes the completed ones.
func (w *pieceWriter) Abort() error {
	var first error
	if w.cur != nil {
		first = w.cur.Abort()
		w.cur = nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), cleanupTimeout)
	defer cancel()
	for i := len(w.done) - 1; i >= 0; i-- {
		if err := w.s.s3.Delete(ctx, w.done[i]); err != nil && first == nil {
			first = err
		}
	}
	w.done = nil
	if w.err == nil {
		w.err = errors.New("write aborted")
	}
	return first
}

// objectPath names an object of the store in messages.
func (s *Store) objectPath(name string) string {
	return s.loc.String() + "/" + path.Clean(name)
}
