package restore

import (
	"errors"
	"fmt"
	"io"

	"github.com/thinback/thinback/archive"
)

// snapback saves the contents of the target's ranges before they are
// overwritten, into a delta file whose parent is the state being applied
// and whose snapshot is the target's state before the apply.
type snapback struct {
	path  string
	f     SnapbackFile
	w     *archive.Writer
	enc   *archive.Encoder
	t     *Target
	data  *archive.DataRegions // a regular-file target's holes; nil for a device
	bs    int64
	size  int64 // the snapback file's volume size: what it can restore
	saved int64 // everything below is saved
	buf   []byte
	out   []byte
	recs  []archive.Record
}

const snapbackChunk = 1 << 20

// createSnapback starts the snapback file in f, which the caller created
// (see Options.Snapback), and writes h; encrypted under key, when set.
func createSnapback(f SnapbackFile, t *Target, h *archive.Header, key *archive.Key) (*snapback, error) {
	s := startSnapback(f, archive.NewWriter(f, archive.WithKey(key)), t, h, 0, key)
	if err := s.w.WriteHeader(h); err != nil {
		s.abandon()
		return nil, s.wrap(err)
	}
	if err := s.checkpoint(); err != nil {
		s.abandon()
		return nil, err
	}
	return s, nil
}

// startSnapback is the state of saving t's ranges into f through w, whose
// file has header h and covers the target below saved. The file is
// encrypted under key when set: its block digests are keyed too.
func startSnapback(f SnapbackFile, w *archive.Writer, t *Target, h *archive.Header, saved int64, key *archive.Key) *snapback {
	s := &snapback{path: f.Name(), f: f, w: w, enc: archive.NewEncoder(archive.LevelFastest, archive.WithKey(key)),
		t: t, bs: h.BlockSize, size: h.VolumeSize, saved: saved}
	if !t.block {
		// Saving walks ascending ranges, each saved before it is
		// overwritten, so the regions still to be asked about do not change.
		s.data = archive.NewDataRegions(t.f)
	}
	chunk := max(snapbackChunk/s.bs, 1) * s.bs
	s.buf = make([]byte, chunk)
	s.out = make([]byte, 0, archive.MaxEncodedLen(int(chunk)))
	return s
}

// resumeSnapback continues f, the snapback file of the interrupted apply
// (mark) that this one runs again, which applies the same files and so
// overwrites the same ranges in the same order: those the file covers
// were saved before the interrupted run overwrote them (later runs see
// their new contents, which must not be saved over the old), so saving
// starts where the file ends. A file that a crash tore during a
// checkpoint is cut back to its records that verify (see
// archive.RecoverWriter) and made complete again first. An encrypted
// file is continued under key, the only key it can be read with.
func resumeSnapback(f SnapbackFile, t *Target, mark *Mark, key *archive.Key) (*snapback, error) {
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		return nil, fmt.Errorf("snapback file %s cannot be read back to continue it", f.Name())
	}
	if _, err := rs.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("snapback file %s: %w", f.Name(), err)
	}
	w, torn, err := archive.RecoverWriter(rs, f, archive.WithKey(key))
	if err != nil {
		return nil, fmt.Errorf("snapback file %s exists but cannot be continued: %w; give the apply a new snapback file name", f.Name(), err)
	}
	h := w.Header()
	if !h.IsSnapback() || h.Snapshot.ID != mark.Undo || h.Parent.ID != mark.Snapshot {
		return nil, fmt.Errorf("snapback file %s already exists and is not the one of the interrupted apply of %s to %s: choose another name (it would be overwritten)",
			f.Name(), describe(archive.Snapshot{ID: mark.Snapshot}), t.Path)
	}
	if torn && mark.WroteTo > 0 && w.Covered() < min(mark.WroteTo, h.VolumeSize) {
		return nil, fmt.Errorf("snapback file %s ends inside a record and, read up to its last record that verifies, covers the target %s only up to byte %d, but the interrupted apply wrote up to byte %d: it is not the file that apply wrote (a copy cut short?); give the apply a new snapback file name",
			f.Name(), t.Path, w.Covered(), mark.WroteTo)
	}
	if _, err := rs.Seek(w.Offset(), io.SeekStart); err != nil {
		return nil, fmt.Errorf("snapback file %s: %w", f.Name(), err)
	}
	s := startSnapback(f, w, t, h, w.Covered(), key)
	if torn {
		// A crash tore the last checkpoint (see archive.RecoverWriter):
		// what verifies is kept, which is everything the interrupted run
		// overwrote, since it overwrote a range only once the checkpoint
		// saving it was durable. The file is made complete again before
		// anything is overwritten.
		tr, ok := f.(interface{ Truncate(int64) error })
		if !ok {
			s.abandon()
			return nil, fmt.Errorf("snapback file %s was torn by a crash and cannot be cut back to repair it", f.Name())
		}
		if err := tr.Truncate(w.Offset()); err != nil {
			s.abandon()
			return nil, s.wrap(err)
		}
		if err := s.checkpoint(); err != nil {
			s.abandon()
			return nil, err
		}
	}
	return s, nil
}

// save saves the target's contents of [off, end), widened to the snapback
// file's blocks and clipped to its volume, then makes them durable. Ranges
// must come in ascending order; what was saved already is skipped.
func (s *snapback) save(off, end int64) error {
	lo := max(off/s.bs*s.bs, s.saved)
	hi := min((end+s.bs-1)/s.bs*s.bs, s.size)
	if lo >= hi {
		return nil
	}
	for lo < hi {
		n, hole, err := s.nextRun(lo, hi)
		if err != nil {
			return err
		}
		if hole {
			if err := s.w.WriteRecord(&archive.Record{Kind: archive.KindZero, Offset: lo, Length: n}); err != nil {
				return s.wrap(err)
			}
			lo += n
			continue
		}
		for a := lo; a < lo+n; {
			c := min(int64(len(s.buf)), lo+n-a)
			buf := s.buf[:c]
			if got, err := s.t.ReadAt(buf, a); int64(got) != c {
				if err == nil || errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF // the target shrank under us
				}
				return fmt.Errorf("snapback: reading target %s at offset %d (%d bytes): %w", s.t.Path, a, c, err)
			}
			s.recs, _ = s.enc.Encode(s.recs[:0], a, buf, s.bs, s.out[:0])
			for i := range s.recs {
				if err := s.w.WriteRecord(&s.recs[i]); err != nil {
					return s.wrap(err)
				}
			}
			a += c
		}
		lo += n
	}
	s.saved = hi
	return s.checkpoint()
}

// nextRun returns the length of the run of data or hole starting at lo in
// a regular-file target (holes need not be read), or all of it otherwise.
// Holes are rounded inward to blocks: a partial hole is read.
func (s *snapback) nextRun(lo, hi int64) (int64, bool, error) {
	if s.data == nil {
		return hi - lo, false, nil
	}
	start, end, err := s.data.At(lo)
	if err != nil {
		return 0, false, fmt.Errorf("snapback: target %w", err)
	}
	if hole := min(start, hi) / s.bs * s.bs; hole > lo {
		return hole - lo, true, nil
	}
	data := hi
	if end < hi {
		data = max((end+s.bs-1)/s.bs*s.bs, lo+s.bs)
	}
	return min(data, hi) - lo, false, nil
}

// checkpoint makes the file a complete delta file of what was saved so far
// and makes it durable, before the caller overwrites anything.
func (s *snapback) checkpoint() error {
	end, err := s.w.Checkpoint()
	if err != nil {
		return s.wrap(err)
	}
	if _, err := s.f.WriteAt(end, s.w.Offset()); err != nil {
		return s.wrap(err)
	}
	if err := s.f.Sync(); err != nil {
		return s.wrap(err)
	}
	return nil
}

// close writes the END record and makes the file durable. The caller of
// Apply closes the file.
func (s *snapback) close() (archive.Trailer, error) {
	defer s.enc.Close()
	if err := s.w.Close(); err != nil {
		return archive.Trailer{}, s.wrap(err)
	}
	if err := s.f.Sync(); err != nil {
		return archive.Trailer{}, s.wrap(err)
	}
	return s.w.Trailer(), nil
}

// abandon gives up a snapback file that never covered anything.
func (s *snapback) abandon() { s.enc.Close() }

func (s *snapback) wrap(err error) error {
	return fmt.Errorf("snapback file %s: %w", s.path, err)
}

// recoverUndo returns a view of s, the first file being applied, as the
// complete delta file it was at its last checkpoint, when it is the
// snapback file of the interrupted apply that st records and a crash tore
// it (see archive.RecoverWriter): its records that verify, then the END
// record that the crash lost. They hold everything the interrupted apply
// overwrote. It returns nil for any other file, which is then refused as
// it would have been. An encrypted file is read with key.
func recoverUndo(s seekReaderAt, st State, key *archive.Key) seekReaderAt {
	m := st.InProgress
	if m == nil || m.Undo.IsZero() {
		return nil
	}
	if _, err := s.Seek(0, io.SeekStart); err != nil {
		return nil
	}
	w, torn, err := archive.RecoverWriter(s, io.Discard, archive.WithKey(key))
	if err != nil || !torn {
		return nil
	}
	h := w.Header()
	if !h.IsSnapback() || h.Snapshot.ID != m.Undo || h.Parent.ID != m.Snapshot {
		return nil
	}
	if m.WroteTo > 0 && w.Covered() < min(m.WroteTo, h.VolumeSize) {
		return nil // it does not cover what the stopped apply recorded writing
	}
	end, err := w.Checkpoint()
	if err != nil {
		return nil
	}
	q := w.Offset()
	return io.NewSectionReader(&withEnd{ra: s, at: q, end: end}, 0, q+int64(len(end)))
}

// withEnd reads ra's first at bytes followed by end.
type withEnd struct {
	ra  io.ReaderAt
	at  int64
	end []byte
}

func (e *withEnd) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < e.at {
		k := int(min(int64(len(p)), e.at-off))
		got, err := e.ra.ReadAt(p[:k], off)
		n += got
		if got < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
	}
	if rel := off + int64(n) - e.at; n < len(p) && rel < int64(len(e.end)) {
		n += copy(p[n:], e.end[rel:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
