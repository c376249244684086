package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
)

// SendOptions tune Send. The zero value is good.
type SendOptions struct {
	// Workers hashing and compressing in parallel; 0 means one per CPU
	// (at most maxWorkers).
	Workers int
	// ChunkSize is the data per DATA record before zero runs split it;
	// 0 means 1 MiB. It is rounded to the block size.
	ChunkSize int
	Level     Level // 0 means LevelFastest
	// Progress, if set, is called from the writing goroutine with the
	// number of volume bytes each batch of records covered.
	Progress func(n int64)
}

// maxWorkers bounds parallelism, and with it memory: each job in flight
// holds a chunk and its compressed copy. Beyond this, disks are the limit.
const maxWorkers = 12

const defaultChunk = 1 << 20

func workerCount(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return min(max(n, 1), maxWorkers)
}

// Send writes the records of src to w, whose header must have been written.
// It aligns the source's extents to the block size (a block partly covered
// by a DATA extent, or only partly zeroed, is read whole), stores all-zero
// blocks as ZERO records and hashes and compresses the rest on all cores.
// Memory is bounded by the workers and the chunk size, whatever the size of
// the volume or the number of extents. Send does not close w.
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
	workers := workerCount(opts.Workers)
	inflight := 2*workers + 2

	type job struct {
		ext  Extent
		buf  *sendBuf
		recs []Record
		err  error
		done chan struct{}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		order   = make(chan *job, inflight)
		work    = make(chan *job, inflight)
		free    = make(chan *sendBuf, inflight)
		wg      sync.WaitGroup
		prodErr error
	)
	for i := 0; i < inflight; i++ {
		free <- &sendBuf{}
	}
	closed := make(chan struct{})
	close(closed)

	wg.Add(1)
	go func() { // producer: extents -> aligned jobs, in order
		defer wg.Done()
		defer close(order)
		defer close(work)
		// A run of DATA is handed on every inflight chunks (a multiple of
		// the chunk, so jobs and records are the same as for the whole
		// run): a source that hashes as it goes (DigestSource) is then
		// read again while its pages are still cached, not after it has
		// walked a whole changed volume.
		al := &aligner{src: src, bs: bs, size: h.VolumeSize, maxData: chunk * int64(inflight)}
		for {
			e, err := al.next()
			if err == io.EOF {
				return
			}
			if err != nil {
				prodErr = err
				cancel()
				return
			}
			if e.Kind == KindZero {
				select {
				case order <- &job{ext: e, done: closed}:
				case <-ctx.Done():
					return
				}
				continue
			}
			for off := e.Offset; off < e.End(); off += chunk {
				j := &job{ext: Extent{Offset: off, Length: min(chunk, e.End()-off), Kind: KindData}, done: make(chan struct{})}
				select {
				case j.buf = <-free:
				case <-ctx.Done():
					return
				}
				select {
				case order <- j:
				case <-ctx.Done():
					return
				}
				work <- j // never blocks for long: work has room for every buffer
			}
		}
	}()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			enc := NewEncoder(level)
			defer enc.Close()
			for j := range work {
				if ctx.Err() != nil {
					j.err = ctx.Err()
				} else {
					j.recs, j.err = j.buf.encode(enc, src, j.ext, bs)
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
			if j.ext.Kind == KindZero {
				j.recs = append(j.recs[:0], Record{Kind: KindZero, Offset: j.ext.Offset, Length: j.ext.Length})
			}
			for i := range j.recs {
				if err := w.WriteRecord(&j.recs[i]); err != nil {
					return err
				}
			}
			if j.buf != nil {
				free <- j.buf
			}
			if opts.Progress != nil {
				opts.Progress(j.ext.Length)
			}
		}
		return nil
	}()
	if err != nil {
		cancel()
	}
	// Drain so that the producer and workers exit and nothing uses src or
	// the buffers after Send returns.
	go func() {
		for j := range order {
			_ = j
		}
	}()
	wg.Wait()
	if prodErr != nil {
		return prodErr
	}
	if err == nil {
		err = ctx.Err()
	}
	return err
}

// sendBuf is one job's memory: the chunk read and its compressed copy.
type sendBuf struct {
	data, out []byte
	recs      []Record
}

func (b *sendBuf) encode(enc *Encoder, src Source, e Extent, bs int64) ([]Record, error) {
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
		}
		return nil, fmt.Errorf("reading source at offset %d (%d bytes): got %d bytes: %w", e.Offset, n, got, err)
	}
	b.recs, _ = enc.Encode(b.recs[:0], e.Offset, data, bs, b.out[:0])
	return b.recs, nil
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
	Workers int // decoders in parallel; 0 means one per CPU
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
	workers := workerCount(opts.Workers)
	inflight := 2*workers + 2
	// From a seekable file, workers read their payloads themselves, in
	// parallel: the producer only walks the records' metadata, seeking over
	// payloads, so reading is not serialized on one goroutine.
	ra := rd.readerAt()
	type job struct {
		rec       *Record
		payload   *[]byte
		out       *[]byte
		data      []byte
		err       error
		done      chan struct{}
		readError error // set on the sentinel job that ends the stream
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		order = make(chan *job, inflight)
		work  = make(chan *job, inflight)
		free  = make(chan [2]*[]byte, inflight)
		wg    sync.WaitGroup
	)
	for i := 0; i < inflight; i++ {
		free <- [2]*[]byte{new([]byte), new([]byte)}
	}
	closed := make(chan struct{})
	close(closed)

	wg.Add(1)
	go func() { // producer: the file is read by one goroutine, in order
		defer wg.Done()
		defer close(order)
		defer close(work)
		for {
			rec, err := rd.Next()
			if err != nil {
				if err != io.EOF {
					select {
					case order <- &job{readError: err, done: closed}:
					case <-ctx.Done():
					}
				}
				return
			}
			j := &job{rec: rec, done: closed}
			if rec.Kind == KindData {
				var bufs [2]*[]byte
				select {
				case bufs = <-free:
				case <-ctx.Done():
					return
				}
				j.payload, j.out, j.done = bufs[0], bufs[1], make(chan struct{})
				if ra == nil {
					p, err := rd.ReadPayload(*j.payload)
					if err != nil {
						free <- bufs
						select {
						case order <- &job{readError: err, done: closed}:
						case <-ctx.Done():
						}
						return
					}
					*j.payload = p
				}
			}
			select {
			case order <- j:
			case <-ctx.Done():
				return
			}
			if rec.Kind == KindData {
				work <- j
			}
		}
	}()
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dec := NewDecoder()
			defer dec.Close()
			for j := range work {
				if ctx.Err() == nil && ra != nil {
					j.err = readPayloadAt(ra, j.rec, j.payload)
				}
				if ctx.Err() == nil && j.err == nil {
					j.data, j.err = dec.Decode(*j.out, j.rec, *j.payload)
					if j.err == nil && !j.rec.Compressed {
						// data aliases the payload buffer; keep the output
						// buffer for the next job as it was.
					} else if j.err == nil {
						*j.out = j.data[:0]
					}
				} else if j.err == nil {
					j.err = ctx.Err()
				}
				close(j.done)
			}
		}()
	}

	err := func() error {
		for j := range order {
			if j.readError != nil {
				return j.readError
			}
			select {
			case <-j.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if j.err != nil {
				return j.err
			}
			if err := fn(j.rec, j.data); err != nil {
				return err
			}
			if j.payload != nil {
				free <- [2]*[]byte{j.payload, j.out}
			}
		}
		return ctx.Err()
	}()
	cancel()
	go func() {
		for range order {
		}
	}()
	wg.Wait()
	return err
}

// readPayloadAt reads rec's payload with ReadAt into *buf.
func readPayloadAt(ra io.ReaderAt, rec *Record, buf *[]byte) error {
	p := *buf
	if int64(cap(p)) < rec.PayloadLen {
		p = make([]byte, rec.PayloadLen)
	}
	p = p[:rec.PayloadLen]
	n, err := ra.ReadAt(p, rec.PayloadPos)
	*buf = p
	if int64(n) == rec.PayloadLen {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return recordError(rec, ErrTruncated, "the file ends inside the record's payload")
	}
	return err
}
