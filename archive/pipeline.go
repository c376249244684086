package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// SendOptions tune Send. The zero value is good.
type SendOptions struct {
	// Workers hashing and compressing in parallel; 0 means one per CPU
	// (see WorkerCount).
	Workers int
	// ChunkSize is the data per DATA record before zero runs split it;
	// 0 means 1 MiB. It is rounded to the block size.
	ChunkSize int
	Level     Level // 0 means LevelFastest
	// Progress, if set, is called from the writing goroutine with the
	// number of volume bytes each batch of records covered.
	Progress func(n int64)
}

const defaultChunk = 1 << 20

// Send writes the records of src to w, whose header must have been written.
// It aligns the source's extents to the block size (a block partly covered
// by a DATA extent, or only partly zeroed, is read whole), stores all-zero
// blocks as ZERO records and hashes and compresses the rest on all cores.
// Memory is bounded by the workers and the chunk size, whatever the size of
// the volume or the number of extents. Send does not close w.
//
// Of a resumed file (the header's ResumeFrom set), Send writes only the
// records at and after ResumeFrom: a source extent that straddles it is
// cut there, and nothing below it is read from the source.
func Send(ctx context.Context, w *Writer, src Source, opts SendOptions) error {
	h := w.Header()
	if h == nil {
		return errors.New("archive: Send before WriteHeader")
	}
	bs := h.BlockSize
	chunk := int64(opts.ChunkSize)
	if chunk <= 0 {
		chunk = defaultChunk
	}
	chunk = min(max(chunk/bs*bs, bs), MaxDataLen/bs*bs)
	level := opts.Level
	if level == 0 {
		level = LevelFastest
	}
	workers := WorkerCount(opts.Workers)
	inflight := 2*workers + 2
	encs := make([]*Encoder, workers)
	defer func() {
		for _, e := range encs {
			if e != nil {
				e.Close()
			}
		}
	}()

	// A run of DATA is handed on every inflight chunks (a multiple of the
	// chunk, so jobs and records are the same as for the whole run): a
	// source that hashes as it goes (DigestSource) is then read again
	// while its pages are still cached, not after it has walked a whole
	// changed volume.
	if h.ResumeFrom > 0 {
		src = &clipSource{Source: src, from: h.ResumeFrom}
	}
	al := &aligner{src: src, bs: bs, size: h.VolumeSize, maxData: chunk * int64(inflight)}
	var cur Extent // the rest of the current extent, cut into chunks
	return Ordered[*sendJob]{
		Workers:  workers,
		InFlight: inflight,
		New:      func() *sendJob { return new(sendJob) },
		Produce: func(_ context.Context, j *sendJob) error {
			if cur.Length == 0 {
				e, err := al.next()
				if err != nil {
					return err // io.EOF at the end
				}
				cur = e
			}
			j.ext = cur
			if cur.Kind == KindData {
				j.ext.Length = min(chunk, cur.Length)
			}
			cur.Offset += j.ext.Length
			cur.Length -= j.ext.Length
			return nil
		},
		Work: func(worker int, j *sendJob) error {
			if j.ext.Kind == KindZero {
				j.recs = append(j.recs[:0], Record{Kind: KindZero, Offset: j.ext.Offset, Length: j.ext.Length})
				return nil
			}
			if encs[worker] == nil {
				encs[worker] = NewEncoder(level, WithKey(w.key))
			}
			return j.encode(encs[worker], src, j.ext, bs)
		},
		Consume: func(j *sendJob) error {
			for i := range j.recs {
				if err := w.WriteRecord(&j.recs[i]); err != nil {
					return err
				}
			}
			if opts.Progress != nil {
				opts.Progress(j.ext.Length)
			}
			return nil
		},
	}.Run(ctx)
}

// clipSource is the part of a Source at and after from, a block boundary
// (a resumed file's ResumeFrom): extents that end before it are dropped
// unread, one that straddles it is cut there, so that nothing below it is
// read from the source.
type clipSource struct {
	Source
	from int64
}

func (c *clipSource) Next() (Extent, error) {
	for {
		e, err := c.Source.Next()
		if err != nil {
			return e, err
		}
		if e.End() <= c.from {
			continue
		}
		if e.Offset < c.from {
			e.Length = e.End() - c.from
			e.Offset = c.from
		}
		return e, nil
	}
}

// sendJob is one chunk of a Send: an aligned extent, the chunk read and
// its compressed copy, and the records made of them.
type sendJob struct {
	ext       Extent
	data, out []byte
	recs      []Record
}

func (b *sendJob) encode(enc *Encoder, src Source, e Extent, bs int64) error {
	n := int(e.Length)
	if cap(b.data) < n {
		b.data = make([]byte, n)
		b.out = make([]byte, 0, MaxEncodedLen(n))
	}
	data := b.data[:n]
	got, err := src.ReadAt(data, e.Offset)
	if got != n {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
			return fmt.Errorf("reading source at offset %d (%d bytes): got %d bytes: %w", e.Offset, n, got, err)
		}
		return locateReadError(src, "the source", data, e.Offset, n, got, err)
	}
	b.recs, _ = enc.Encode(b.recs[:0], e.Offset, data, bs, b.out[:0])
	return nil
}

// aligner turns a source's extents, in any alignment, into block-aligned
// extents: a block touched by a DATA extent, or only partly covered by a
// ZERO extent, is DATA (read whole from the source, which is correct
// whatever the rest of the block holds); a block wholly covered by ZERO
// extents is ZERO; adjacent extents of one kind are merged.
type aligner struct {
	src      Source
	bs, size int64
	last     int64
	cur      Extent
	pieces   []Extent
	srcDone  bool
	zeroRun  Extent // adjacent source ZERO extents, merged before aligning
	// maxData, if not 0, bounds the DATA extents returned: a longer run is
	// returned in pieces of maxData bytes as it grows.
	maxData int64
}

func (a *aligner) next() (Extent, error) {
	for {
		if a.maxData > 0 && a.cur.Kind == KindData && a.cur.Length > a.maxData {
			// cur.End() does not move, so a later piece sharing its last
			// block is handled as before.
			out := Extent{Offset: a.cur.Offset, Length: a.maxData, Kind: KindData}
			a.cur.Offset += a.maxData
			a.cur.Length -= a.maxData
			return out, nil
		}
		if len(a.pieces) == 0 {
			if a.srcDone {
				if a.zeroRun.Length > 0 {
					a.pieces = a.split(a.zeroRun)
					a.zeroRun = Extent{}
					continue
				}
				if a.cur.Length > 0 {
					out := a.cur
					a.cur = Extent{}
					return out, nil
				}
				return Extent{}, io.EOF
			}
			e, err := a.src.Next()
			if err == io.EOF {
				a.srcDone = true
				continue
			}
			if err != nil {
				return Extent{}, err
			}
			if e.Length <= 0 || e.Offset < a.last || e.End() > a.size || (e.Kind != KindData && e.Kind != KindZero) {
				return Extent{}, fmt.Errorf("archive: source extent %v [%d, %d) is empty, out of order or past the volume size %d", e.Kind, e.Offset, e.End(), a.size)
			}
			a.last = e.End()
			// Merge runs of adjacent ZERO extents first, so that a block
			// zeroed by two of them is recognised as wholly zero.
			if e.Kind == KindZero {
				if a.zeroRun.Length > 0 && a.zeroRun.End() == e.Offset {
					a.zeroRun.Length += e.Length
					continue
				}
				if a.zeroRun.Length > 0 {
					a.pieces = a.split(a.zeroRun)
				}
				a.zeroRun = e
				continue
			}
			if a.zeroRun.Length > 0 {
				a.pieces = a.split(a.zeroRun)
				a.zeroRun = Extent{}
			}
			a.pieces = append(a.pieces, a.split(e)...)
			continue
		}
		p := a.pieces[0]
		a.pieces = a.pieces[1:]
		if a.cur.Length == 0 {
			a.cur = p
			continue
		}
		if p.Offset < a.cur.End() { // the two share a boundary block
			if p.Kind == KindData && a.cur.Kind == KindZero {
				a.cur.Length = p.Offset - a.cur.Offset
			} else {
				if p.End() <= a.cur.End() {
					continue
				}
				p.Length = p.End() - a.cur.End()
				p.Offset = a.cur.End()
			}
		}
		if a.cur.Length == 0 {
			a.cur = p
			continue
		}
		if p.Kind == a.cur.Kind && p.Offset == a.cur.End() {
			a.cur.Length += p.Length
			continue
		}
		out := a.cur
		a.cur = p
		return out, nil
	}
}

// split aligns one source extent.
func (a *aligner) split(e Extent) []Extent {
	bs := a.bs
	lo := e.Offset / bs * bs
	hi := min((e.End()+bs-1)/bs*bs, a.size)
	if e.Kind == KindData {
		return []Extent{{Offset: lo, Length: hi - lo, Kind: KindData}}
	}
	zlo := (e.Offset + bs - 1) / bs * bs
	zhi := e.End() / bs * bs
	if e.End() == a.size {
		zhi = a.size
	}
	if zlo >= zhi {
		return []Extent{{Offset: lo, Length: hi - lo, Kind: KindData}}
	}
	var out []Extent
	if lo < zlo {
		out = append(out, Extent{Offset: lo, Length: zlo - lo, Kind: KindData})
	}
	out = append(out, Extent{Offset: zlo, Length: zhi - zlo, Kind: KindZero})
	if zhi < hi {
		out = append(out, Extent{Offset: zhi, Length: hi - zhi, Kind: KindData})
	}
	return out
}

// ScanOptions tune Scan. The zero value is good.
type ScanOptions struct {
	Workers int // decoders in parallel; 0 means one per CPU (see WorkerCount)

	// SkipSealedDigests, for a check of a file that hands its data to
	// no one (verify), does not recompute the block digests of an
	// encrypted file's DATA records: each payload is still read,
	// authenticated, decrypted and decompressed to the record's length,
	// and the digests, sealed in the record's metadata, were
	// authenticated with it. Under the key, the AEAD proves that the
	// encoded payload and the digests are the very bytes a holder of the
	// key sealed together for this record of this file; decompression is
	// deterministic; so recomputing the digests would test again what the
	// writer computed, never what the store did to the file. What it
	// would catch, and this does not, is a file whose writer sealed data
	// that does not match its own digests (a bug, a memory error between
	// hashing and compressing) or a decoder that decodes wrongly here:
	// every reader that hands data on (restore, apply, cat, mount, serve:
	// Decode, and Scan without this option) still checks each digest
	// before a byte leaves it, and verify --device compares a device with
	// the digests. A file in the clear has its digests checked always:
	// nothing but the digests vouches for its data. data passed to fn is
	// then authenticated, not digest-checked.
	SkipSealedDigests bool
}

// Scan reads every record of rd, decodes and verifies DATA records on all
// cores, and calls fn for each DATA and ZERO record in file order, on one
// goroutine, with its verified data (nil for ZERO). data is valid only
// during the call. Scan stops at the first error, from the file or from fn,
// and returns it; fn is never called for a record that failed verification,
// nor for any record after it. After a nil return the file was read to its
// verified END (rd.Trailer()).
func Scan(ctx context.Context, rd *Reader, opts ScanOptions, fn func(rec *Record, data []byte) error) error {
	if _, err := rd.Header(); err != nil {
		return err
	}
	workers := WorkerCount(opts.Workers)
	decs := make([]*Decoder, workers)
	defer func() {
		for _, d := range decs {
			if d != nil {
				d.Close()
			}
		}
	}()
	// From a seekable file, workers read their payloads themselves, in
	// parallel: the producer only walks the records' metadata, seeking over
	// payloads, so reading is not serialized on one goroutine.
	ra := rd.readerAt()
	return Ordered[*scanJob]{
		Workers: workers,
		New:     func() *scanJob { return new(scanJob) },
		Produce: func(_ context.Context, j *scanJob) error {
			rec, err := rd.Next()
			if err != nil {
				return err // io.EOF after the verified END
			}
			j.rec, j.data = rec, nil
			if rec.Kind == KindData && ra == nil {
				j.payload, err = rd.ReadPayload(j.payload)
			}
			return err
		},
		Work: func(worker int, j *scanJob) error {
			if j.rec.Kind != KindData {
				return nil
			}
			var err error
			if ra != nil {
				if j.payload, err = ReadPayloadAt(ra, j.rec, j.payload); err != nil {
					return err
				}
			}
			if decs[worker] == nil {
				decs[worker] = NewDecoder()
			}
			if j.data, err = decs[worker].decode(j.out, j.rec, j.payload, !opts.SkipSealedDigests); err != nil {
				return err
			}
			if j.rec.Compressed {
				// Keep the grown buffer; raw data aliases the payload.
				j.out = j.data[:0]
			}
			return nil
		},
		Consume: func(j *scanJob) error { return fn(j.rec, j.data) },
	}.Run(ctx)
}

// scanJob is one record of a Scan with its payload and decoded data.
type scanJob struct {
	rec          *Record
	payload, out []byte
	data         []byte
}

// ReadPayloadAt reads the payload of rec, a record that a Reader returned
// from the file ra reads, into buf (grown if too small) and returns it. It
// is how payloads are read in parallel, out of order, once a file's
// structure is known. A file that ends inside the payload (it shrank since
// its records were read) gives a *FormatError wrapping ErrTruncated.
func ReadPayloadAt(ra io.ReaderAt, rec *Record, buf []byte) ([]byte, error) {
	if int64(cap(buf)) < rec.PayloadLen {
		buf = make([]byte, rec.PayloadLen)
	}
	buf = buf[:rec.PayloadLen]
	n, err := ra.ReadAt(buf, rec.PayloadPos)
	if int64(n) == rec.PayloadLen {
		return buf, nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return buf, recordError(rec, ErrTruncated, fmt.Sprintf("the file ends inside the record's payload, at byte %d of %d (did it shrink while being read?)", n, rec.PayloadLen))
	}
	return buf, locateReadError(ra, fmt.Sprintf("the payload of record %d (bytes %d to %d)", rec.Num, rec.PayloadPos, rec.PayloadPos+rec.PayloadLen),
		buf, rec.PayloadPos, int(rec.PayloadLen), n, err)
}
