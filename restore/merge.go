package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/thinback/thinback/archive"
)

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
	// Position, if set, is called after each step with the end of what it
	// wrote and the volume's size: the merge goes through the volume in
	// order, so this is how far it is (a progress line's ETA).
	Position func(end, size int64)

	// held, if set, is told how many records the merge holds each time
	// that changes, and how many it may hold: tests check the bound.
	held func(n, slots int64)

	// Key reads inputs encrypted under it and encrypts the merged file
	// under it, with a salt of its own (see Options.Key for the files
	// refused with and without it).
	Key *archive.Key

	// Rekey: the merged file is written under WriteKey instead (nil: in
	// the clear), the inputs still read with Key: how a file moves
	// between stores that do not share a key (thinback copy). Every
	// DATA record is then encoded again, so that its digests are those
	// of the new key (or unkeyed, in the clear).
	Rekey    bool
	WriteKey *archive.Key
}

// writeKey is the key the merged file is written under.
func (o *MergeOptions) writeKey() *archive.Key {
	if o.Rekey {
		return o.WriteKey
	}
	return o.Key
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
// With MergeOptions.Key, the inputs are read with the key and the merged
// file is encrypted under it, with a salt of its own: whole records are
// opened and sealed again (the digests, keyed by the master key alone,
// carry over), and its ParentTag is the first file's. Its digest and tag
// are in the returned Trailer. It is a file of the run's last snapshot,
// and an incremental binds its parent's snapshot, not its parent's file
// (archive.CheckParentTags): the encrypted incrementals made from the
// run's last file follow the merged file as they followed that file.
//
// On error, out holds an incomplete file without its END record, which every
// reader refuses as truncated: write to a temporary file and keep it only
// when Merge returns nil. The error names the input file at fault and wraps
// the archive sentinel (archive.ErrChecksum, archive.ErrTruncated, ...), or
// ErrNotChain or ErrBlockSize.
func Merge(ctx context.Context, out io.Writer, inputs []Input, opts MergeOptions) (*archive.Header, archive.Trailer, error) {
	if len(inputs) == 0 {
		return nil, archive.Trailer{}, errors.New("no delta files to merge")
	}
	files := make([]archive.ChainInput, len(inputs))
	for i, in := range inputs {
		s, ok := in.R.(seekReaderAt)
		if !ok || !isSeekable(s) {
			return nil, archive.Trailer{}, fmt.Errorf("%s cannot be read twice (a pipe?): files are merged only from regular files", in.Name)
		}
		if _, err := checkFile(in.Name, s, opts.Key); err != nil {
			return nil, archive.Trailer{}, err
		}
		files[i] = archive.ChainInput{Name: in.Name, File: s}
	}
	c, err := archive.OpenChain(files, archive.WithKey(opts.Key))
	if err != nil {
		return nil, archive.Trailer{}, advise(err)
	}
	h := mergedHeader(c.Files(), opts.Tool)
	if opts.writeKey() == nil && h.IsEncrypted() {
		// Decrypted: a header in the clear (a writer with a key sets
		// these fields itself).
		h.Required &^= archive.FeatureEncrypted
		h.KeyID, h.AEAD, h.ParentTag = archive.KeyID{}, 0, archive.Digest{}
	}
	w := archive.NewWriter(out, archive.WithKey(opts.writeKey()))
	if err := w.WriteHeader(h); err != nil {
		return nil, archive.Trailer{}, err
	}
	if err := mergeRecords(ctx, w, c, h, opts); err != nil {
		return nil, archive.Trailer{}, err
	}
	if err := w.Close(); err != nil {
		return nil, archive.Trailer{}, err
	}
	return w.Header(), w.Trailer(), nil
}

// mergedHeader describes the state of the last file relative to the first
// file's parent.
func mergedHeader(files []archive.ChainFile, tool string) *archive.Header {
	first, last := files[0].Header, files[len(files)-1].Header
	h := *last
	h.Attrs = append([]archive.Attr(nil), last.Attrs...)
	// An encrypted merge hangs where the first file did: from its parent
	// snapshot (the writer computes the tag again from these fields).
	h.Parent, h.ParentSize, h.ParentTag = first.Parent, first.ParentSize, first.ParentTag
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
// and verified once, by the first worker that needs it, however many
// segments it is cut into.
type mergeRec struct {
	input int
	rec   *archive.Record
	slot  *[2][]byte // payload, decoded data: a slot of the merge
	once  sync.Once
	data  []byte // the verified data
	err   error
	// refs counts the producer's hold (until the merge has left the
	// record behind) and the segments not yet written; the last release
	// returns the slot.
	refs atomic.Int32
}

// mergeSeg is a segment of the merged file on its way to the writer.
type mergeSeg struct {
	seg   archive.Segment
	mr    *mergeRec // DATA
	whole bool      // the segment is the whole record: copy its payload
	out   []byte    // a cut segment's compressed payloads
	recs  []archive.Record
}

// mergeRecords runs the merge on an archive.Ordered pipeline: the producer
// merges the files' metadata into segments, workers decode and verify
// records and re-encode cut segments, and this goroutine writes the records
// in order.
//
// Memory is bounded by two pools. A segment's encode buffer is the
// pipeline's item, reused. A slot holds one record's payload and data; a
// record holds its slot from its first segment until the merge has left it
// behind (the producer keeps the last record of each file) and all its
// segments are written, so at most one record per file plus one per
// segment in flight is held, and len(files)+inflight slots never run out
// for good.
func mergeRecords(ctx context.Context, w *archive.Writer, c *archive.Chain, h *archive.Header, opts MergeOptions) error {
	workers := archive.WorkerCount(opts.Workers)
	inflight := 2*workers + 2
	level := opts.Level
	if level == 0 {
		level = archive.LevelFastest
	}
	bs := h.BlockSize
	nfiles := len(c.Files())
	nslots := int64(nfiles + inflight)
	slots := make(chan *[2][]byte, nslots)
	for range nslots {
		slots <- new([2][]byte)
	}
	var held atomic.Int64
	hold := func(d int64) {
		if n := held.Add(d); opts.held != nil {
			opts.held(n, nslots)
		}
	}
	release := func(mr *mergeRec) {
		if mr.refs.Add(-1) == 0 {
			hold(-1)
			slots <- mr.slot // never blocks: there are nslots places
		}
	}
	decs := make([]*archive.Decoder, workers)
	encs := make([]*archive.Encoder, workers)
	defer func() {
		for i := range workers {
			if decs[i] != nil {
				decs[i].Close()
			}
			if encs[i] != nil {
				encs[i].Close()
			}
		}
	}()

	live := make([]*mergeRec, nfiles) // the record of each file in use
	return archive.Ordered[*mergeSeg]{
		Workers:  workers,
		InFlight: inflight,
		New:      func() *mergeSeg { return new(mergeSeg) },
		Produce: func(ctx context.Context, s *mergeSeg) error {
			seg, err := c.Next()
			if err == io.EOF {
				for i, mr := range live {
					if mr != nil {
						live[i] = nil
						release(mr)
					}
				}
				return io.EOF
			}
			if err != nil {
				return advise(err)
			}
			s.seg, s.mr, s.whole = seg, nil, false
			if seg.Kind != archive.KindData {
				return nil
			}
			mr := live[seg.Input]
			if mr == nil || mr.rec != seg.Record {
				if mr != nil {
					live[seg.Input] = nil
					release(mr) // the merge has left it behind
				}
				mr = &mergeRec{input: seg.Input, rec: seg.Record}
				select {
				case mr.slot = <-slots:
				case <-ctx.Done():
					return ctx.Err()
				}
				mr.refs.Store(1)
				hold(1)
				live[seg.Input] = mr
			}
			mr.refs.Add(1)
			s.mr = mr
			// A record keeps its payload only under the key its digests
			// were made with.
			s.whole = seg.Offset == seg.Record.Offset && seg.End() == seg.Record.End() && !opts.Rekey
			return nil
		},
		Work: func(worker int, s *mergeSeg) error {
			mr := s.mr
			if mr == nil {
				return nil
			}
			if decs[worker] == nil {
				decs[worker] = archive.NewDecoder()
			}
			mr.once.Do(func() { mr.err = mr.decode(decs[worker], c) })
			if mr.err != nil || s.whole {
				return mr.err
			}
			if encs[worker] == nil {
				encs[worker] = archive.NewEncoder(level, archive.WithKey(opts.writeKey()))
			}
			rec := mr.rec
			data := mr.data[s.seg.Offset-rec.Offset : s.seg.End()-rec.Offset]
			// Encode hashes the blocks again: the digests of whole blocks
			// equal the record's (the data was just verified), and a last
			// block cut short by a shrunk volume gets the digest of what is
			// left, or becomes ZERO if that is all zeroes.
			s.recs, s.out = encs[worker].Encode(s.recs[:0], s.seg.Offset, data, bs, s.out[:0])
			return nil
		},
		Consume: func(s *mergeSeg) error {
			seg := s.seg
			switch {
			case seg.Kind == archive.KindZero:
				if err := w.WriteRecord(&archive.Record{Kind: archive.KindZero, Offset: seg.Offset, Length: seg.Length}); err != nil {
					return err
				}
			case s.whole:
				rec := *s.mr.rec
				// Decode opened an encrypted payload in place: the
				// writer seals it again under the merged file's salt.
				rec.Payload = s.mr.slot[0][:rec.EncodedLen()]
				if err := w.WriteRecord(&rec); err != nil {
					return err
				}
			default:
				for i := range s.recs {
					if err := w.WriteRecord(&s.recs[i]); err != nil {
						return err
					}
				}
			}
			if s.mr != nil {
				release(s.mr)
			}
			if opts.Position != nil {
				opts.Position(seg.End(), h.VolumeSize)
			}
			if opts.Progress != nil {
				opts.Progress(seg.Length)
			}
			return nil
		},
	}.Run(ctx)
}

// decode reads the record's payload from its file, decodes it and checks
// every block against the record's digests.
func (mr *mergeRec) decode(dec *archive.Decoder, c *archive.Chain) error {
	rec := mr.rec
	p, err := c.ReadPayload(mr.input, rec, mr.slot[0])
	mr.slot[0] = p
	if err != nil {
		return advise(err)
	}
	data, err := dec.Decode(mr.slot[1], rec, p)
	if err != nil {
		return inputError(c.Files()[mr.input].Name, err)
	}
	if rec.Compressed {
		mr.slot[1] = data[:0]
	}
	mr.data = data
	return nil
}
