package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/thinback/thinback/archive"
)

// ErrBlockSize: files given together have different block sizes, so their
// records cannot be merged block by block.
var ErrBlockSize = errors.New("files have different block sizes")

// MergeOptions tune Merge. The zero value is good.
type MergeOptions struct {
	// Tool names the writer in the merged file's header, e.g.
	// "thinback 0.2.0"; empty keeps the last file's.
	Tool string
	// Workers decoding, verifying and compressing in parallel; 0 means one
	// per CPU.
	Workers int
	// Level is the compression of records that are cut; records used whole
	// are copied as they are. 0 means archive.LevelFastest.
	Level archive.Level
	// Progress, if set, is called with the volume bytes each step wrote.
	Progress func(n int64)
}

// Merge writes to out one delta file equivalent to inputs, a chain of delta
// files oldest first: applying it to the first file's parent (to anything,
// when the first file is a full) gives the last file's snapshot, as applying
// the chain would. It reads the files alone, never a volume: this is how a
// snapshot is removed from a store (an incremental is merged into its
// successor; a full with the next incremental into a new full).
//
// The merged header is the last file's (snapshot, volume, size, attributes)
// with the first file's parent and parent size, so merging a full with its
// incrementals gives a full. For each byte the newest record wins, clipped
// to the last file's volume size; a DATA record used whole is copied with
// its payload as it is, a DATA record used in part is cut to the blocks used
// and compressed again, and ranges that read as zeroes become ZERO records.
// Every DATA record used is decoded and checked against its digests first,
// on all cores, so a corrupt file is refused rather than copied into a new
// one that would look sound; records wholly superseded are not read.
//
// Inputs must be seekable regular files (see Input). Each is checked to its
// END record before anything is written. Work and reads are proportional to
// the size of the files, never to the volume; memory holds one record per
// file plus the records in the pipeline.
//
// On error, out holds an incomplete file without its END record, which every
// reader refuses as truncated: write to a temporary file and keep it only
// when Merge returns nil. The error names the input file at fault and wraps
// the archive sentinel (archive.ErrChecksum, archive.ErrTruncated, ...), or
// ErrNotChain or ErrBlockSize.
func Merge(ctx context.Context, out io.Writer, inputs []Input, opts MergeOptions) (*archive.Header, archive.Trailer, error) {
	return merge(ctx, out, inputs, opts, nil)
}

// mergeStats lets tests see how many records were held at once.
type mergeStats struct {
	live, maxLive atomic.Int64
	slots         int64
}

func merge(ctx context.Context, out io.Writer, inputs []Input, opts MergeOptions, stats *mergeStats) (*archive.Header, archive.Trailer, error) {
	if len(inputs) == 0 {
		return nil, archive.Trailer{}, errors.New("no delta files to merge")
	}
	files := make([]File, len(inputs))
	rds := make([]*archive.Reader, len(inputs))
	names := make([]string, len(inputs))
	ras := make([]io.ReaderAt, len(inputs))
	for i, in := range inputs {
		s, ok := in.R.(seekReaderAt)
		if !ok || !isSeekable(s) {
			return nil, archive.Trailer{}, fmt.Errorf("%s cannot be read twice (a pipe?): files are merged only from regular files", in.Name)
		}
		rd, _, err := prescan(in, s)
		if err != nil {
			return nil, archive.Trailer{}, err
		}
		h, _ := rd.Header()
		files[i], rds[i], names[i], ras[i] = File{Name: in.Name, Header: h}, rd, in.Name, s
	}
	if err := checkMergeable(files); err != nil {
		return nil, archive.Trailer{}, err
	}
	h := mergedHeader(files, opts.Tool)
	w := archive.NewWriter(out)
	if err := w.WriteHeader(h); err != nil {
		return nil, archive.Trailer{}, err
	}
	if err := mergeRecords(ctx, w, rds, names, ras, h, opts, stats); err != nil {
		return nil, archive.Trailer{}, err
	}
	if err := w.Close(); err != nil {
		return nil, archive.Trailer{}, err
	}
	return w.Header(), w.Trailer(), nil
}

// checkMergeable applies the rules between files of CheckChain (each file's
// parent is the previous file's snapshot, one volume, a full only first)
// and requires one block size, without which a record could not be cut
// into blocks of another file's size.
func checkMergeable(files []File) error {
	if err := CheckChain(files, "", State{}, true); err != nil {
		return err
	}
	bs := files[0].Header.BlockSize
	for _, f := range files[1:] {
		if f.Header.BlockSize != bs {
			return fmt.Errorf("%s has blocks of %d bytes, %s of %d bytes: %w; files of one chain share the block size of its full", files[0].Name, bs, f.Name, f.Header.BlockSize, ErrBlockSize)
		}
	}
	return nil
}

// mergedHeader describes the state of the last file relative to the first
// file's parent.
func mergedHeader(files []File, tool string) *archive.Header {
	first, last := files[0].Header, files[len(files)-1].Header
	h := *last
	h.Attrs = append([]archive.Attr(nil), last.Attrs...)
	h.Parent, h.ParentSize = first.Parent, first.ParentSize
	if tool != "" {
		h.Tool = tool
	}
	// An undo file is tied to the one apply it undoes (FORMAT.md, SNAPBACK);
	// a merge of it with other files is not one.
	for _, f := range files {
		if !f.Header.IsSnapback() {
			h.Optional &^= archive.FeatureSnapback
		}
	}
	return &h
}

// mergeRec is a DATA record some segment of the merge uses: read, decoded
// and verified once by a worker, however many segments it is cut into.
type mergeRec struct {
	input int
	rec   *archive.Record
	bufs  *[2][]byte // payload, decoded data: a slot of the merge
	data  []byte     // the verified data
	err   error
	done  chan struct{}
	// refs counts the producer's hold (until the merge leaves the record
	// behind) and the segments not yet written; the last release returns
	// the slot.
	refs atomic.Int32
}

// mergeSeg is a segment of the merged file on its way to the writer.
type mergeSeg struct {
	seg   segment
	mr    *mergeRec // DATA
	whole bool      // the segment is the whole record: copy its payload
	out   *[]byte   // a cut segment's compressed payloads
	recs  []archive.Record
	err   error
	done  chan struct{}
}

// mergeTask is a worker's job: decode a record, or cut a segment out of a
// decoded record and compress it.
type mergeTask struct {
	mr  *mergeRec
	seg *mergeSeg
}

// mergeRecords runs the merge: one goroutine merges the files' metadata
// into segments, workers decode and verify records and re-encode cut
// segments, and this goroutine writes the records in order.
//
// Memory is bounded by two pools. A slot holds one record's payload and
// data; a record holds its slot from its first segment until it was left
// behind by the merge and all its segments are written, so at most one
// record per file is held by the merge plus those with segments in the
// pipeline, and len(inputs)+inflight slots never run out for good. An
// encode buffer belongs to one cut segment until it is written.
//
// Workers take tasks in order, and a record's decode task is queued before
// the tasks of its segments, so a worker that waits for a record's data
// waits for a task already taken by a worker that does not wait: no cycle.
func mergeRecords(ctx context.Context, w *archive.Writer, rds []*archive.Reader, names []string, ras []io.ReaderAt,
	h *archive.Header, opts MergeOptions, stats *mergeStats) error {
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, 12)
	inflight := 2*workers + 2
	level := opts.Level
	if level == 0 {
		level = archive.LevelFastest
	}
	bs := h.BlockSize
	nslots := len(rds) + inflight

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		order   = make(chan *mergeSeg, inflight)
		work    = make(chan mergeTask, nslots+inflight)
		slots   = make(chan *[2][]byte, nslots)
		encBufs = make(chan *[]byte, inflight)
		wg      sync.WaitGroup
		prodErr error
	)
	for i := 0; i < nslots; i++ {
		slots <- new([2][]byte)
	}
	for i := 0; i < inflight; i++ {
		encBufs <- new([]byte)
	}
	if stats != nil {
		stats.slots = int64(nslots)
	}
	closed := make(chan struct{})
	close(closed)
	release := func(mr *mergeRec) {
		if mr.refs.Add(-1) == 0 {
			if stats != nil {
				stats.live.Add(-1)
			}
			slots <- mr.bufs // never blocks: there are nslots places
		}
	}

	m := newMerger(rds, names, h.VolumeSize)
	live := make([]*mergeRec, len(rds)) // the record of each file in use
	m.onRecord = func(i int, rec *archive.Record, used bool) error {
		if mr := live[i]; mr != nil && mr.rec == rec {
			live[i] = nil
			release(mr)
		}
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
				s := &mergeSeg{seg: seg, done: closed}
				if seg.kind == archive.KindData {
					mr := live[seg.input]
					if mr == nil || mr.rec != seg.rec {
						mr = &mergeRec{input: seg.input, rec: seg.rec, done: make(chan struct{})}
						select {
						case mr.bufs = <-slots:
						case <-ctx.Done():
							return ctx.Err()
						}
						mr.refs.Store(1)
						if stats != nil {
							n := stats.live.Add(1)
							for old := stats.maxLive.Load(); n > old && !stats.maxLive.CompareAndSwap(old, n); old = stats.maxLive.Load() {
							}
						}
						live[seg.input] = mr
						work <- mergeTask{mr: mr} // never blocks: work has room for every record and cut segment in flight
					}
					mr.refs.Add(1)
					s.mr = mr
					s.whole = seg.off == seg.rec.Offset && seg.end == seg.rec.End()
					if s.whole {
						s.done = mr.done
					} else {
						s.done = make(chan struct{})
						select {
						case s.out = <-encBufs:
						case <-ctx.Done():
							return ctx.Err()
						}
					}
				}
				select {
				case order <- s:
				case <-ctx.Done():
					return ctx.Err()
				}
				if s.out != nil {
					work <- mergeTask{seg: s}
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
			enc := archive.NewEncoder(level)
			defer enc.Close()
			for t := range work {
				switch {
				case t.mr != nil:
					if ctx.Err() != nil {
						t.mr.err = ctx.Err()
					} else if err := t.mr.decode(dec, ras[t.mr.input]); err != nil {
						t.mr.err = inputError(names[t.mr.input], err)
					}
					close(t.mr.done)
				default:
					s := t.seg
					<-s.mr.done // queued before this task: see mergeRecords
					switch {
					case s.mr.err != nil:
						s.err = s.mr.err
					case ctx.Err() != nil:
						s.err = ctx.Err()
					default:
						rec := s.mr.rec
						data := s.mr.data[s.seg.off-rec.Offset : s.seg.end-rec.Offset]
						// Encode hashes the blocks again: the digests of
						// whole blocks equal the record's (the data was
						// just verified), and a last block cut short by a
						// shrunk volume gets the digest of what is left,
						// or becomes ZERO if that is all zeroes.
						s.recs, *s.out = enc.Encode(s.recs[:0], s.seg.off, data, bs, (*s.out)[:0])
					}
					close(s.done)
				}
			}
		}()
	}

	err := func() error {
		for s := range order {
			select {
			case <-s.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			seg := s.seg
			switch {
			case seg.kind == archive.KindZero:
				if err := w.WriteRecord(&archive.Record{Kind: archive.KindZero, Offset: seg.off, Length: seg.end - seg.off}); err != nil {
					return err
				}
			case s.whole:
				if s.mr.err != nil {
					return s.mr.err
				}
				rec := *s.mr.rec
				rec.Payload = s.mr.bufs[0][:rec.PayloadLen]
				if err := w.WriteRecord(&rec); err != nil {
					return err
				}
			default:
				if s.err != nil {
					return s.err
				}
				for i := range s.recs {
					if err := w.WriteRecord(&s.recs[i]); err != nil {
						return err
					}
				}
				encBufs <- s.out
			}
			if s.mr != nil {
				release(s.mr)
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

// decode reads the record's payload from its file, decodes it and checks
// every block against the record's digests.
func (mr *mergeRec) decode(dec *archive.Decoder, ra io.ReaderAt) error {
	rec := mr.rec
	p := mr.bufs[0]
	if int64(cap(p)) < rec.PayloadLen {
		p = make([]byte, rec.PayloadLen)
	}
	p = p[:rec.PayloadLen]
	mr.bufs[0] = p
	if n, err := ra.ReadAt(p, rec.PayloadPos); int64(n) != rec.PayloadLen {
		if err == nil || errors.Is(err, io.EOF) {
			// The file was checked to its END: it shrank since.
			return &archive.FormatError{Offset: rec.PayloadPos, Record: rec.Num, Err: archive.ErrTruncated,
				Detail: fmt.Sprintf("the file ends inside the payload of record %d (was it truncated while being read?)", rec.Num)}
		}
		return fmt.Errorf("reading the payload of record %d at byte %d: %w", rec.Num, rec.PayloadPos, err)
	}
	data, err := dec.Decode(mr.bufs[1], rec, p)
	if err != nil {
		return err
	}
	if rec.Compressed {
		mr.bufs[1] = data[:0]
	}
	mr.data = data
	return nil
}
