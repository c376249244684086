package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
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
	// Snapback, if set, is the path of an undo file to create.
	Snapback string
	// State is what is known about the target.
	State State
	// Begin is called, after every check and before the first write, with
	// the state to record durably: the target's state with its
	// InProgress mark set. An error stops the apply.
	Begin func(State) error
	// Finish is called after the target was fsynced, with its new state.
	Finish func(State) error
	// Workers decoding in parallel; 0 means one per CPU.
	Workers int
	// Progress, if set, is called with the volume bytes each step wrote.
	Progress func(n int64)
	// Now returns the time (tests set it); nil means time.Now.
	Now func() time.Time
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
func Apply(ctx context.Context, t *Target, inputs []Input, opts Options) (*Result, error) {
	began := false
	defer func() {
		if !began {
			t.removeIfCreated()
		}
	}()
	start := time.Now()
	now := opts.Now
	if now == nil {
		now = time.Now
	}
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
	var supersedable int64
	for i, in := range inputs {
		rd, trailer, err := prescan(in, seekable[i])
		if err != nil {
			return nil, err
		}
		h, _ := rd.Header()
		files[i] = File{Name: in.Name, Header: h}
		rds[i], names[i] = rd, in.Name
		supersedable += trailer.DataBytes + trailer.ZeroBytes
	}
	if err := CheckChain(files, t.Path, opts.State, opts.Force); err != nil {
		return nil, err
	}
	first, last := files[0].Header, files[len(files)-1].Header
	finalSize := last.VolumeSize
	if err := t.checkSize(finalSize); err != nil {
		return nil, err
	}

	// The snapback file, before anything is marked or written.
	var sb *snapback
	mark := &Mark{Snapshot: last.Snapshot.ID, Parent: first.Parent.ID, Started: now().UTC()}
	for _, f := range files {
		mark.Files = append(mark.Files, f.Name)
	}
	if opts.Snapback != "" {
		var err error
		sb, err = createSnapback(opts.Snapback, t, snapbackHeader(t, files, opts.State, now()))
		if err != nil {
			return nil, err
		}
		mark.Undo = sb.w.Header().Snapshot.ID
	}
	closeSnapback := func() (*archive.Trailer, error) {
		if sb == nil {
			return nil, nil
		}
		tr, err := sb.close()
		sb = nil
		return &tr, err
	}
	fail := func(err error) (*Result, error) {
		if _, cerr := closeSnapback(); cerr != nil {
			err = fmt.Errorf("%w (and closing the snapback file failed: %v)", err, cerr)
		}
		return nil, err
	}

	began = true
	begin := opts.State
	begin.InProgress = mark
	if opts.Begin != nil {
		if err := opts.Begin(begin); err != nil {
			return fail(fmt.Errorf("recording the apply in the state file: %w", err))
		}
	}
	interrupted := func(err error) (*Result, error) {
		advice := fmt.Sprintf("the target %s is partly written; run the same apply again to finish it", t.Path)
		if opts.Snapback != "" {
			advice += fmt.Sprintf(", or apply %s to undo what was written", opts.Snapback)
		}
		return fail(fmt.Errorf("%w\n%s", err, advice))
	}

	oldSize := t.Size()
	if !t.block && finalSize > oldSize {
		if err := t.Resize(finalSize); err != nil {
			return interrupted(err)
		}
	}

	res := &Result{Snapshot: last.Snapshot, VolumeName: last.VolumeName, VolumeSize: finalSize}
	if err := runSegments(ctx, t, rds, names, seekable, finalSize, sb, opts, res); err != nil {
		return interrupted(err)
	}
	res.Skipped = max(supersedable-res.DataBytes-res.ZeroBytes, 0)

	if !t.block && finalSize < oldSize {
		if sb != nil {
			if err := sb.save(finalSize, oldSize); err != nil {
				return interrupted(err)
			}
		}
		if err := t.Resize(finalSize); err != nil {
			return interrupted(err)
		}
	}
	if err := t.Sync(); err != nil {
		return interrupted(err)
	}
	tr, err := closeSnapback()
	if err != nil {
		return interrupted(err)
	}
	res.Snapback = tr
	if opts.Finish != nil {
		done := State{VolumeName: last.VolumeName, VolumeUUID: last.VolumeUUID, VolumeSize: finalSize, Snapshot: last.Snapshot}
		if err := opts.Finish(done); err != nil {
			return nil, fmt.Errorf("the target %s holds %s, but recording that in the state file failed: %w", t.Path, describe(last.Snapshot), err)
		}
	}
	res.Duration = time.Since(start)
	return res, nil
}

func isSeekable(s io.Seeker) bool {
	_, err := s.Seek(0, io.SeekCurrent)
	return err == nil
}

// prescan reads a file's header and, when it is seekable, every record's
// metadata up to its verified END (seeking over payloads). It returns the
// reader to apply the file with: a stream's, positioned after its header,
// or a new one over the rewound file.
func prescan(in Input, s seekReaderAt) (*archive.Reader, archive.Trailer, error) {
	var at int64
	if s != nil {
		var err error
		if at, err = s.Seek(0, io.SeekCurrent); err != nil {
			return nil, archive.Trailer{}, fmt.Errorf("%s: %w", in.Name, err)
		}
	}
	rd := archive.NewReader(in.R)
	if _, err := rd.Header(); err != nil {
		return nil, archive.Trailer{}, inputError(in.Name, err)
	}
	if s == nil {
		return rd, archive.Trailer{}, nil
	}
	for {
		if _, err := rd.Next(); err == io.EOF {
			break
		} else if err != nil {
			return nil, archive.Trailer{}, inputError(in.Name, err)
		}
	}
	if _, err := s.Seek(at, io.SeekStart); err != nil {
		return nil, archive.Trailer{}, fmt.Errorf("%s: %w", in.Name, err)
	}
	again := archive.NewReader(in.R)
	if _, err := again.Header(); err != nil {
		return nil, archive.Trailer{}, inputError(in.Name, err)
	}
	return again, rd.Trailer(), nil
}

// inputError names the file and says what to do about a bad one.
func inputError(name string, err error) error {
	var fe *archive.FormatError
	if !errors.As(err, &fe) {
		return fmt.Errorf("%s: %w", name, err)
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
	}
	return fmt.Errorf("%s: %w\n%s", name, err, advice)
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
	h.SetAttr("snapback.target", t.Path)
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Name
	}
	h.SetAttr("snapback.applied", strings.Join(names, " "))
	return h
}

// job is one segment on its way through the pipeline.
type job struct {
	seg     segment
	ra      io.ReaderAt // where a DATA payload is read from, or nil (stream)
	bufs    *[2][]byte  // payload, decoded data
	payload []byte
	data    []byte
	err     error
	done    chan struct{}
}

// runSegments merges the files' records and writes each segment of the
// final state: payloads are read and verified by workers in parallel, and
// written (after their old contents are saved) in order by this goroutine.
func runSegments(ctx context.Context, t *Target, rds []*archive.Reader, names []string, seekable []seekReaderAt,
	size int64, sb *snapback, opts Options, res *Result) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, 12)
	inflight := 2*workers + 2

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		order   = make(chan *job, inflight)
		work    = make(chan *job, inflight)
		free    = make(chan *[2][]byte, inflight)
		wg      sync.WaitGroup
		prodErr error
	)
	for i := 0; i < inflight; i++ {
		free <- new([2][]byte)
	}
	closed := make(chan struct{})
	close(closed)

	m := newMerger(rds, names, size)
	// A stream's payload can be read only while its record is current.
	var streamJobs []*job
	m.onRecord = func(i int, rec *archive.Record, used bool) error {
		if seekable[i] != nil || !used || rec.Kind != archive.KindData {
			return nil
		}
		p, err := rds[i].ReadPayload(streamJobs[0].bufs[0])
		if err != nil {
			return inputError(names[i], err)
		}
		for _, j := range streamJobs {
			j.payload = p
		}
		for _, j := range streamJobs {
			work <- j
		}
		streamJobs = streamJobs[:0]
		return nil
	}

	wg.Add(1)
	go func() { // producer: the merge, in order
		defer wg.Done()
		defer close(order)
		defer close(work)
		err := func() error {
			if err := m.start(); err != nil {
				return err
			}
			for {
				seg, err := m.next()
				if err == io.EOF {
					return m.finish()
				}
				if err != nil {
					return err
				}
				j := &job{seg: seg, done: closed}
				if seg.kind == archive.KindData {
					j.done = make(chan struct{})
					if s := seekable[seg.input]; s != nil {
						j.ra = s
					}
					select {
					case j.bufs = <-free:
					case <-ctx.Done():
						return ctx.Err()
					}
					if j.ra == nil {
						// Wait for the record to be left behind; all of a
						// stream's segments of a record share one payload.
						if len(streamJobs) > 0 && streamJobs[0].seg.rec != seg.rec {
							return fmt.Errorf("internal error: stream segments of two records pending")
						}
						streamJobs = append(streamJobs, j)
					}
				}
				select {
				case order <- j:
				case <-ctx.Done():
					return ctx.Err()
				}
				if seg.kind == archive.KindData && j.ra != nil {
					work <- j
				}
			}
		}()
		if err != nil {
			prodErr = err
			cancel()
		}
	}()

	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := archive.NewDecoder()
			defer dec.Close()
			for j := range work {
				if ctx.Err() != nil {
					j.err = ctx.Err()
				} else if err := j.decode(dec); err != nil {
					j.err = inputError(names[j.seg.input], err)
				}
				close(j.done)
			}
		}()
	}

	err := func() error {
		for j := range order {
			select {
			case <-j.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if j.err != nil {
				return j.err
			}
			seg := j.seg
			if sb != nil {
				if err := sb.save(seg.off, seg.end); err != nil {
					return err
				}
			}
			if seg.kind == archive.KindZero {
				if err := t.Zero(seg.off, seg.end-seg.off); err != nil {
					return err
				}
				res.ZeroBytes += seg.end - seg.off
			} else {
				if err := t.WriteAt(j.data, seg.off); err != nil {
					return err
				}
				res.DataBytes += seg.end - seg.off
				free <- j.bufs
			}
			if opts.Progress != nil {
				opts.Progress(seg.end - seg.off)
			}
		}
		return nil
	}()
	if err != nil {
		cancel()
	}
	go func() {
		for range order {
		}
	}()
	wg.Wait()
	if prodErr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		return prodErr
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// decode reads (if needed), decodes and verifies the job's record, and
// keeps the part of it the segment covers.
func (j *job) decode(dec *archive.Decoder) error {
	rec := j.seg.rec
	if j.ra != nil {
		p := j.bufs[0]
		if int64(cap(p)) < rec.PayloadLen {
			p = make([]byte, rec.PayloadLen)
		}
		p = p[:rec.PayloadLen]
		if n, err := j.ra.ReadAt(p, rec.PayloadPos); int64(n) != rec.PayloadLen {
			return fmt.Errorf("reading the payload of record %d at byte %d: %v", rec.Num, rec.PayloadPos, err)
		}
		j.bufs[0] = p
		j.payload = p
	}
	data, err := dec.Decode(j.bufs[1], rec, j.payload)
	if err != nil {
		return err
	}
	if rec.Compressed {
		j.bufs[1] = data[:0]
	}
	j.data = data[j.seg.off-rec.Offset : j.seg.end-rec.Offset]
	return nil
}
