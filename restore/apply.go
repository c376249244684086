package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/thinback/thinback/archive"
)

// Input is one delta file to apply.
type Input struct {
	// Name is used in messages ("-" for standard input).
	Name string
	// R reads the file from its start. When it is also an io.Seeker and an
	// io.ReaderAt (an *os.File on a regular file), Apply checks the whole
	// file before writing anything and reads payloads in parallel; a
	// stream is checked as it is applied. Several inputs must all be
	// seekable.
	R io.Reader
}

// Options tune Apply.
type Options struct {
	// Force applies an incremental whatever the target holds.
	Force bool
	// Snapback, if set, is a new, empty file to write the undo file
	// into: the caller creates it (exclusively, with a durable name) and
	// closes it after Apply. Apply writes it in place, complete and
	// fsynced before anything it covers is overwritten, and fsyncs it at
	// the end. If Apply fails before calling Begin, nothing was
	// overwritten and the file is not needed.
	Snapback SnapbackFile
	// ResumeSnapback says Snapback is not new but the snapback file of
	// the interrupted apply that this one runs again (the same files):
	// it is continued, so it goes on undoing everything both runs
	// overwrote. Apply refuses any other file.
	ResumeSnapback bool
	// State is what is known about the target.
	State State
	// Begin is called, after every check and before the first write, with
	// the state to record durably: the target's state with its
	// InProgress mark set. An error stops the apply.
	Begin func(State) error
	// Finish is called after the target was fsynced, with its new state;
	// also after Revert, when a failed apply grew a file and shrank it
	// back, with the state put back and the file's new times.
	Finish func(State) error
	// Workers decoding in parallel; 0 means one per CPU.
	Workers int
	// Progress, if set, is called with the volume bytes each step wrote.
	Progress func(n int64)
	// Position, if set, is called after each step with the end of what it
	// wrote and the volume's size: the volume is written in order, so this
	// is how far through it the apply is (a progress line's ETA).
	Position func(end, size int64)
	// Now returns the time (tests set it); nil means time.Now.
	Now func() time.Time
	// Revert is called when an apply that called Begin fails having left
	// nothing on the target (it stopped before the first write, or it
	// removed the file it had created): the caller puts back the state it
	// had before Begin, and the snapback file is not needed.
	Revert func() error
	// Stopped is called when an apply that called Begin fails after it
	// wrote to the target, with the state to record: its mark says which
	// bytes were overwritten and, when the same apply cannot finish it,
	// why it stopped.
	Stopped func(State) error
	// Checkpoint, if set, records the apply's durable prefix as it goes
	// (Mark.Done): every CheckpointBytes of the target written (in
	// volume order), the target is fsynced and Checkpoint is called with
	// the state to record, its mark's Done raised. An error stops the
	// apply. Once one is recorded, a regular file the apply created is
	// kept when the apply stops: it holds a transfer to resume.
	Checkpoint func(State) error
	// CheckpointBytes is how much is written between checkpoints; 0
	// means DefaultCheckpointBytes.
	CheckpointBytes int64
	// Key reads files encrypted under it, and encrypts the snapback file
	// under it: an undo file in the clear would give away the data the
	// apply overwrote. Without it, an encrypted file is refused with
	// archive.ErrKeyRequired; with it, a file that is not encrypted is
	// refused (archive.ErrAuth), so a file put in place of an encrypted
	// one is never written to the target. Both before anything is written.
	Key *archive.Key
}

// SnapbackFile is where a snapback file is written (an *os.File).
type SnapbackFile interface {
	io.Writer
	io.WriterAt
	Sync() error
	Name() string
}

// Result says what an apply did.
type Result struct {
	Snapshot   archive.Snapshot // what the target holds now
	VolumeName string
	VolumeSize int64
	DataBytes  int64 // bytes written from DATA records
	ZeroBytes  int64 // bytes zeroed
	Skipped    int64 // bytes of older records superseded by newer ones
	Snapback   *archive.Trailer
	Duration   time.Duration
}

type seekReaderAt interface {
	io.ReadSeeker
	io.ReaderAt
}

// Apply applies inputs, a chain oldest first, to t. See the package
// documentation for the guarantees.
func Apply(ctx context.Context, t *Target, inputs []Input, opts Options) (_ *Result, err error) {
	start := time.Now()
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	run := &applyRun{t: t, opts: opts, oldSize: t.Size()}
	defer func() {
		if err != nil {
			err = run.stop(err)
		}
	}()
	if len(inputs) == 0 {
		return nil, errors.New("no delta files to apply")
	}
	seekable := make([]seekReaderAt, len(inputs))
	for i, in := range inputs {
		if s, ok := in.R.(seekReaderAt); ok && isSeekable(s) {
			seekable[i] = s
		} else if len(inputs) > 1 {
			return nil, fmt.Errorf("%s cannot be read twice (a pipe?): several files are applied together only from regular files; apply a stream on its own", in.Name)
		}
	}

	// Check every seekable file completely, and read the headers.
	files := make([]File, len(inputs))
	rds := make([]*archive.Reader, len(inputs))
	names := make([]string, len(inputs))
	var supersedable, payload int64
	starts := make([]int64, len(inputs))
	inputs = append([]Input(nil), inputs...)
	for i, in := range inputs {
		rd, trailer, at, err := prescan(in, seekable[i], opts.Key)
		if err != nil && i == 0 && seekable[0] != nil {
			// Undoing an apply that a crash interrupted, with the
			// snapback file the crash tore.
			if v := recoverUndo(seekable[0], opts.State, opts.Key); v != nil {
				in.R, inputs[0], seekable[0] = v, Input{Name: in.Name, R: v}, v
				rd, trailer, at, err = prescan(in, v, opts.Key)
			}
		}
		if err != nil {
			return nil, err
		}
		h, _ := rd.Header()
		files[i] = File{Name: in.Name, Header: h}
		rds[i], names[i], starts[i] = rd, in.Name, at
		supersedable += trailer.DataBytes + trailer.ZeroBytes
		payload += trailer.PayloadBytes
	}
	// Small files are read twice: every payload is verified before the
	// first write, so a damaged record stops the apply with nothing done.
	if payload <= VerifyFirstLimit {
		for i, in := range inputs {
			if seekable[i] != nil {
				if err := verifyPayloads(ctx, in, seekable[i], starts[i], opts.Key); err != nil {
					return nil, err
				}
			}
		}
	}
	st, err := t.Verify(opts.State)
	if err != nil {
		return nil, err
	}
	if err := checkResumed(files, t.Path, st); err != nil {
		return nil, err
	}
	if err := CheckChain(files, t.Path, st, opts.Force); err != nil {
		return nil, err
	}
	if err := checkParentTags(files, opts.Key); err != nil {
		return nil, err
	}
	first, last := files[0].Header, files[len(files)-1].Header
	finalSize := last.VolumeSize
	if err := t.checkSize(finalSize); err != nil {
		return nil, err
	}
	run.files, run.last = names, last.Snapshot

	// The snapback file, before anything is marked or written; it
	// describes the target as it is (its size before any resize).
	mark := &Mark{Snapshot: last.Snapshot.ID, Parent: first.Parent.ID, Started: now().UTC(), Size: finalSize}
	if prev := st.InProgress; prev != nil && prev.Snapshot == mark.Snapshot && prev.Parent == mark.Parent && !opts.Force {
		// The same apply again writes the same bytes: what the
		// interrupted one made durable stays so.
		mark.Done = prev.Done
	}
	for _, f := range files {
		mark.Files = append(mark.Files, f.Name)
	}
	if opts.Snapback != nil {
		var sb *snapback
		if opts.ResumeSnapback {
			prev := st.InProgress
			if prev == nil || prev.Undo.IsZero() || prev.Snapshot != mark.Snapshot || prev.Parent != mark.Parent {
				return nil, fmt.Errorf("snapback file %s already exists, and %s holds no interrupted apply of these files that it belongs to: choose another name (it would be overwritten)",
					opts.Snapback.Name(), t.Path)
			}
			sb, err = resumeSnapback(opts.Snapback, t, prev, opts.Key)
		} else {
			sb, err = createSnapback(opts.Snapback, t, snapbackHeader(t, files, st, now()), opts.Key)
		}
		if err != nil {
			return nil, err
		}
		run.sb = sb
		mark.Undo = sb.w.Header().Snapshot.ID
	}
	// A file grows before the mark is written: a size the filesystem
	// cannot hold (a crafted 4 EiB volume) fails here, with nothing
	// recorded and nothing written.
	if !t.block && finalSize > run.oldSize {
		if err := t.Resize(finalSize); err != nil {
			return nil, err
		}
	}

	begin := st
	begin.InProgress = mark
	if opts.Begin != nil {
		if err := opts.Begin(begin); err != nil {
			return nil, fmt.Errorf("recording the apply in the state file: %w", err)
		}
	}
	run.began, run.mark = true, begin

	t.log = writeLog{s: newSampler(seedOf(last.Snapshot.ID))}
	res := &Result{Snapshot: last.Snapshot, VolumeName: last.VolumeName, VolumeSize: finalSize}
	if err := runSegments(ctx, t, rds, names, seekable, finalSize, run.sb, opts, res, run.checkpointer(last.BlockSize)); err != nil {
		return nil, err
	}
	res.Skipped = max(supersedable-res.DataBytes-res.ZeroBytes, 0)

	if !t.block && finalSize < run.oldSize {
		if run.sb != nil {
			if err := run.sb.save(finalSize, run.oldSize); err != nil {
				return nil, err
			}
		}
		t.log.add(finalSize, run.oldSize-finalSize, true) // what was cut off is gone
		if err := t.Resize(finalSize); err != nil {
			return nil, err
		}
	}
	// The file's times are set and made durable with the data, and read
	// after the fsync: nothing of thinback's changes them later.
	t.stampMtime(time.Now())
	if err := t.Sync(); err != nil {
		return nil, err
	}
	var fst *FileStat
	if !t.block {
		s, err := t.fileStat()
		if err != nil {
			return nil, err
		}
		fst = &s
	}
	fp, err := t.fingerprint(t.log.s.offsets(finalSize, priorFingerprint(st)))
	if err != nil {
		return nil, err
	}
	tr, err := run.closeSnapback()
	if err != nil {
		return nil, err
	}
	res.Snapback = tr
	run.done = true
	t.created = false // complete: the file is the user's now
	if opts.Finish != nil {
		done := State{VolumeName: last.VolumeName, VolumeUUID: last.VolumeUUID, VolumeSize: finalSize, Snapshot: last.Snapshot, Fingerprint: fp, FileStat: fst}
		if err := opts.Finish(done); err != nil {
			return nil, fmt.Errorf("the target %s holds %s, but recording that in the state file failed: %w", t.Path, describe(last.Snapshot), err)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

// VerifyFirstLimit is the most payload bytes of seekable files that Apply
// verifies completely before the first write, reading them twice: below
// it, a damaged record is found with nothing written. Above it, a record
// is verified just before it is written, and damage found half-way stops
// the apply with the target partly written (the snapback file undoes that;
// a good copy of the file finishes it). The bound keeps the cost, a second
// read and decode, to a fraction of a second; tests lower it.
var VerifyFirstLimit int64 = 64 << 20

// priorFingerprint returns the fingerprint of what the target held before,
// whose blocks the next fingerprint may sample again.
func priorFingerprint(st State) *Fingerprint {
	if st.Modified != "" || st.InProgress != nil {
		return nil
	}
	return st.Fingerprint
}

// applyRun is what an apply must undo or record when it stops.
type applyRun struct {
	t       *Target
	opts    Options
	oldSize int64
	sb      *snapback
	began   bool  // Begin recorded the mark
	mark    State // what Begin recorded
	files   []string
	last    archive.Snapshot
	done    bool // the target holds the snapshot
}

// DefaultCheckpointBytes is how much an apply that records its progress
// writes between checkpoints (see Options.Checkpoint): an fsync of the
// target and a state file write per 64 MiB cost little next to writing
// it, and an interrupted transfer then sends at most that much again.
const DefaultCheckpointBytes = 64 << 20

// checkpointer returns what runSegments calls after each segment written,
// with the bytes it wrote and its end: nil without Options.Checkpoint.
func (r *applyRun) checkpointer(bs int64) func(n, end int64) error {
	if r.opts.Checkpoint == nil {
		return nil
	}
	every := r.opts.CheckpointBytes
	if every <= 0 {
		every = DefaultCheckpointBytes
	}
	var since int64
	return func(n, end int64) error {
		since += n
		if since < every {
			return nil
		}
		since = 0
		done := end / bs * bs
		m := r.mark.InProgress
		if done <= m.Done {
			return nil
		}
		// The snapback file saved every range before it was overwritten,
		// and is fsynced as it saves: the target is what is left.
		if err := r.t.Sync(); err != nil {
			return err
		}
		m.Done = done
		if err := r.opts.Checkpoint(r.mark); err != nil {
			return fmt.Errorf("recording the apply's progress in the state file: %w", err)
		}
		r.t.created = false // the file holds a transfer to resume now
		return nil
	}
}

func (r *applyRun) closeSnapback() (*archive.Trailer, error) {
	if r.sb == nil {
		return nil, nil
	}
	tr, err := r.sb.close()
	r.sb = nil
	return &tr, err
}

// stop ends a failed apply and says what is true of the target: that
// nothing was written (the state is put back, a grown file shrunk back),
// that the file this run created was removed, or which bytes were
// overwritten and what to do about it (the mark records that too).
func (r *applyRun) stop(err error) error {
	t := r.t
	if r.done {
		return err // the target is complete; only the state file failed
	}
	note := func(what string, e error) {
		if e != nil {
			err = fmt.Errorf("%w\n(and %s failed: %v)", err, what, e)
		}
	}
	if created := t.created; created || !t.log.wrote {
		// Nothing of the apply stays: the snapback file undoes nothing.
		if r.sb != nil {
			r.sb.abandon()
			r.sb = nil
		}
		shrunk := false
		if t.created {
			note("removing "+t.Path, t.RemoveCreated())
		} else if !t.block && t.Size() != r.oldSize {
			serr := t.Resize(r.oldSize)
			note("shrinking "+t.Path+" back", serr)
			shrunk = serr == nil
		}
		if r.began && r.opts.Revert != nil {
			note("restoring the state file", r.opts.Revert())
			if shrunk {
				note("recording the file's times in the state file", r.restamp())
			}
		}
		switch {
		case created:
			return fmt.Errorf("%w\n%s, which this run created, was removed", err, t.Path)
		case r.began:
			return fmt.Errorf("%w\nnothing was written to %s", err, t.Path)
		}
		return err
	}

	_, cerr := r.closeSnapback()
	note("closing the snapback file", cerr)
	lo, hi := t.log.lo, t.log.hi
	mark := *r.mark.InProgress
	mark.WroteFrom, mark.WroteTo = lo, hi
	var advice string
	var fe *archive.FormatError
	if errors.As(err, &fe) {
		mark.Stopped = "a delta file is damaged"
		if errors.Is(err, archive.ErrTruncated) {
			mark.Stopped = "a delta file ended early"
		}
		advice = fmt.Sprintf("bytes %d to %d of %s were overwritten, in part, before that was found: it now matches neither the snapshot it held nor %s; ", lo, hi, t.Path, describe(r.last))
		if r.opts.Snapback != nil {
			advice += fmt.Sprintf("apply %s to undo what was written, or ", r.opts.Snapback.Name())
		}
		advice += fmt.Sprintf("apply a good copy of %s (the same apply with it finishes this one), or apply the chain again from its full", strings.Join(r.files, " "))
	} else {
		advice = fmt.Sprintf("the target %s is partly written (bytes %d to %d); run the same apply again to finish it", t.Path, lo, hi)
		if r.opts.Snapback != nil {
			advice += fmt.Sprintf(", or apply %s to undo what was written", r.opts.Snapback.Name())
		}
	}
	if r.began && r.opts.Stopped != nil {
		st := r.mark
		st.InProgress = &mark
		note("recording where the apply stopped in the state file", r.opts.Stopped(st))
	}
	return fmt.Errorf("%w\n%s", err, advice)
}

// restamp records the times a file grown and shrunk back to its size has
// now, when the state put back says, exactly, that it held its snapshot
// before the apply: it holds the same bytes, and the grow and shrink of
// this run are not a write to be noticed by the next apply.
func (r *applyRun) restamp() error {
	st := r.mark
	st.InProgress = nil
	if st.FileStat == nil || st.Modified != "" || st.Snapshot.ID.IsZero() || r.opts.Finish == nil {
		return nil
	}
	t := r.t
	t.stampMtime(time.Now())
	if err := t.Sync(); err != nil {
		return err
	}
	fs, err := t.fileStat()
	if err != nil {
		return err
	}
	st.FileStat = &fs
	return r.opts.Finish(st)
}

// verifyPayloads reads every payload of a seekable file that starts at
// byte at and checks its digests, then puts the file offset back where
// the reader Apply will use left it.
func verifyPayloads(ctx context.Context, in Input, s seekReaderAt, at int64, key *archive.Key) error {
	cur, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("%s: %w", in.Name, err)
	}
	if _, err := s.Seek(at, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", in.Name, err)
	}
	rd := archive.NewReader(in.R, archive.WithKey(key))
	err = archive.Scan(ctx, rd, archive.ScanOptions{}, func(*archive.Record, []byte) error { return nil })
	if err != nil {
		return inputError(in.Name, err)
	}
	if _, err := s.Seek(cur, io.SeekStart); err != nil {
		return fmt.Errorf("%s: %w", in.Name, err)
	}
	return nil
}

func isSeekable(s io.Seeker) bool {
	_, err := s.Seek(0, io.SeekCurrent)
	return err == nil
}

// prescan reads a file's header and, when it is seekable, every record's
// metadata up to its verified END (seeking over payloads). It returns the
// reader to apply the file with (a stream's, positioned after its header,
// or a new one over the rewound file) and the offset a seekable file
// starts at. Files are read with key (see Options.Key).
func prescan(in Input, s seekReaderAt, key *archive.Key) (*archive.Reader, archive.Trailer, int64, error) {
	var tr archive.Trailer
	var at int64
	if s != nil {
		var err error
		if at, err = s.Seek(0, io.SeekCurrent); err != nil {
			return nil, archive.Trailer{}, 0, fmt.Errorf("%s: %w", in.Name, err)
		}
		if tr, err = checkFile(in.Name, s, key); err != nil {
			return nil, archive.Trailer{}, 0, err
		}
	}
	rd := archive.NewReader(in.R, archive.WithKey(key))
	if _, err := rd.Header(); err != nil {
		return nil, archive.Trailer{}, 0, inputError(in.Name, err)
	}
	return rd, tr, at, nil
}

// checkFile reads a seekable file's structure from where it is to its
// verified END record, seeking over payloads, and rewinds it. An
// encrypted file is read with key: without it, it fails here with
// archive.ErrKeyRequired.
func checkFile(name string, s seekReaderAt, key *archive.Key) (archive.Trailer, error) {
	at, err := s.Seek(0, io.SeekCurrent)
	if err != nil {
		return archive.Trailer{}, fmt.Errorf("%s: %w", name, err)
	}
	rd := archive.NewReader(s, archive.WithKey(key))
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			return archive.Trailer{}, inputError(name, err)
		}
	}
	if _, err := s.Seek(at, io.SeekStart); err != nil {
		return archive.Trailer{}, fmt.Errorf("%s: %w", name, err)
	}
	return rd.Trailer(), nil
}

// inputError names the file and says what to do about a bad one.
func inputError(name string, err error) error {
	return advise(fmt.Errorf("%s: %w", name, err))
}

// advise adds to err, which names the file at fault (as archive's chain
// errors do), what to do about a bad file.
func advise(err error) error {
	var fe *archive.FormatError
	if !errors.As(err, &fe) {
		return err
	}
	advice := "the file is damaged; use another copy of it"
	switch {
	case errors.Is(err, archive.ErrTruncated) && fe.Offset == 0 && strings.Contains(fe.Detail, "empty"):
		advice = "no delta file was given (did the sending command fail?)"
	case errors.Is(err, archive.ErrTruncated):
		advice = "the file is incomplete (an interrupted copy or send?); copy or send it again"
	case errors.Is(err, archive.ErrVersion):
		advice = "it was written by a newer thinback; upgrade thinback to apply it"
	case errors.Is(err, archive.ErrTrailingData):
		advice = "give each file separately, in chain order"
	case errors.Is(err, archive.ErrHeader) && fe.Record == 0:
		advice = "is this a thinback delta file?"
	case errors.Is(err, archive.ErrKeyRequired), errors.Is(err, archive.ErrWrongKey):
		advice = "give the key of the store the file was written into"
	case errors.Is(err, archive.ErrAuth) && fe.Record == 0:
		advice = "only files encrypted under the key given are read with it: use a copy of the file from the store it was written into"
	}
	return fmt.Errorf("%w\n%s", err, advice)
}

// checkParentTags checks, as archive.OpenChain does, that each encrypted
// incremental applied after another file is from that file's snapshot
// (archive.CheckParentTags; FORMAT.md, "Chain binding"), from the headers
// prescan read and authenticated. A stream is applied alone, so it has
// no file before it.
func checkParentTags(files []File, k *archive.Key) error {
	if err := archive.CheckParentTags(files, k); err != nil {
		return fmt.Errorf("%w; give the files of one chain, from one store", err)
	}
	return nil
}

// snapbackHeader describes the undo file: its parent is the state being
// applied, its snapshot the target's state before the apply.
func snapbackHeader(t *Target, files []File, st State, now time.Time) *archive.Header {
	first, last := files[0].Header, files[len(files)-1].Header
	size := t.Size() // a block device: all of it can be written
	bs := first.BlockSize
	for _, f := range files {
		if f.Header.BlockSize != bs {
			bs = archive.MinBlockSize
		}
	}
	pre := st.Snapshot
	if pre.ID.IsZero() || st.InProgress != nil || pre.ID == last.Snapshot.ID {
		pre = archive.Snapshot{ID: archive.NewID(), Name: fmt.Sprintf("%s before applying %s", t.Path, last.Snapshot.Name), Time: now.UTC()}
	}
	name, uuid := st.VolumeName, st.VolumeUUID
	if name == "" {
		name, uuid = first.VolumeName, first.VolumeUUID
	}
	h := &archive.Header{
		Optional:   archive.FeatureSnapback,
		BlockSize:  bs,
		Codec:      archive.CodecZstd,
		Hash:       archive.HashBLAKE3,
		VolumeName: name,
		VolumeUUID: uuid,
		VolumeSize: size,
		Snapshot:   pre,
		Parent:     last.Snapshot,
		// The undo file restores bytes of the target as they were; the
		// bytes it does not name were not touched (see FORMAT.md, SNAPBACK).
		ParentSize: size,
		Tool:       last.Tool,
	}
	h.SetAttr(archive.AttrSnapbackTarget, t.Path)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	h.SetAttr(archive.AttrSnapbackApplied, strings.Join(names, " "))
	return h
}

// applyJob is one segment on its way through the pipeline, with the
// buffers of its record's payload and data.
type applyJob struct {
	seg          archive.Segment
	payload, out []byte
	data         []byte // the segment's verified data
}

// runSegments merges the files' records and writes each segment of the
// final state: payloads are read and verified by workers in parallel, and
// written (after their old contents are saved) in order by this goroutine.
func runSegments(ctx context.Context, t *Target, rds []*archive.Reader, names []string, seekable []seekReaderAt,
	size int64, sb *snapback, opts Options, res *Result, progress func(n, end int64) error) error {
	workers := archive.WorkerCount(opts.Workers)
	decs := make([]*archive.Decoder, workers)
	defer func() {
		for _, d := range decs {
			if d != nil {
				d.Close()
			}
		}
	}()
	m := archive.NewMerger(names, rds, size)
	var streamRec *archive.Record // the last stream record whose payload was read
	return archive.Ordered[*applyJob]{
		Workers: workers,
		New:     func() *applyJob { return new(applyJob) },
		Produce: func(_ context.Context, j *applyJob) error {
			seg, err := m.Next()
			if err != nil {
				if err == io.EOF {
					return err
				}
				return advise(err)
			}
			j.seg, j.data = seg, nil
			if seg.Kind == archive.KindData && seekable[seg.Input] == nil {
				// A stream's payload can be read only while its record is
				// current: now. A stream is applied alone, so each of its
				// records is one segment.
				if seg.Record == streamRec {
					return fmt.Errorf("internal error: record %d of %s is in two segments", seg.Record.Num, names[seg.Input])
				}
				streamRec = seg.Record
				if j.payload, err = rds[seg.Input].ReadPayload(j.payload); err != nil {
					return inputError(names[seg.Input], err)
				}
			}
			return nil
		},
		Work: func(worker int, j *applyJob) error {
			if j.seg.Kind != archive.KindData {
				return nil
			}
			if decs[worker] == nil {
				decs[worker] = archive.NewDecoder()
			}
			if err := j.decode(decs[worker], seekable[j.seg.Input]); err != nil {
				return inputError(names[j.seg.Input], err)
			}
			return nil
		},
		Consume: func(j *applyJob) error {
			seg := j.seg
			if sb != nil {
				if err := sb.save(seg.Offset, seg.End()); err != nil {
					return err
				}
			}
			if seg.Kind == archive.KindZero {
				if err := t.Zero(seg.Offset, seg.Length); err != nil {
					return err
				}
				res.ZeroBytes += seg.Length
			} else {
				if err := t.WriteAt(j.data, seg.Offset); err != nil {
					return err
				}
				res.DataBytes += seg.Length
			}
			if opts.Progress != nil {
				opts.Progress(seg.Length)
			}
			if opts.Position != nil {
				opts.Position(seg.End(), size)
			}
			if progress != nil {
				return progress(seg.Length, seg.End())
			}
			return nil
		},
	}.Run(ctx)
}

// decode reads (from a seekable file ra; a stream's payload is read
// already), decodes and verifies the job's record, and keeps the part of it
// the segment covers.
func (j *applyJob) decode(dec *archive.Decoder, ra io.ReaderAt) error {
	rec := j.seg.Record
	if ra != nil {
		var err error
		if j.payload, err = archive.ReadPayloadAt(ra, rec, j.payload); err != nil {
			return err
		}
	}
	data, err := dec.Decode(j.out, rec, j.payload)
	if err != nil {
		return err
	}
	if rec.Compressed {
		j.out = data[:0] // keep the grown buffer; raw data aliases the payload
	}
	j.data = data[j.seg.Offset-rec.Offset : j.seg.End()-rec.Offset]
	return nil
}
