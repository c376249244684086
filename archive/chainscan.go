package archive

import (
	"context"
	"fmt"
)

// Scan reads the chain's segments (see Merger) in ascending order, reads,
// decodes and verifies the record of each DATA segment on all cores, and
// calls fn for each segment in order, on one goroutine, with the
// segment's verified data (nil for ZERO). data is valid only during the
// call. It is how a snapshot is written out as an image, in order, at the
// speed of decoding on every core.
//
// Ranges no record covers are skipped, as by the Merger; with a full as
// the first file there are none. Scan stops at the first error, of a file
// (naming it) or of fn, and returns it; fn is never called for a segment
// whose record failed its checks, nor for any after it. After a nil
// return every file was read to its verified END record.
func (c *Chain) Scan(ctx context.Context, opts ScanOptions, fn func(seg Segment, data []byte) error) error {
	workers := WorkerCount(opts.Workers)
	decs := make([]*Decoder, workers)
	defer func() {
		for _, d := range decs {
			if d != nil {
				d.Close()
			}
		}
	}()
	return Ordered[*chainScanJob]{
		Workers: workers,
		New:     func() *chainScanJob { return new(chainScanJob) },
		Produce: func(_ context.Context, j *chainScanJob) error {
			seg, err := c.Next()
			if err != nil {
				return err // io.EOF after every file's verified END
			}
			j.seg, j.data = seg, nil
			return nil
		},
		Work: func(worker int, j *chainScanJob) error {
			if j.seg.Kind != KindData {
				return nil
			}
			if decs[worker] == nil {
				decs[worker] = NewDecoder()
			}
			return j.decode(c, decs[worker])
		},
		Consume: func(j *chainScanJob) error { return fn(j.seg, j.data) },
	}.Run(ctx)
}

// chainScanJob is one segment of a Chain's Scan with its record's payload
// and decoded data.
type chainScanJob struct {
	seg          Segment
	payload, out []byte
	data         []byte // the segment's part of the verified data
}

func (j *chainScanJob) decode(c *Chain, dec *Decoder) error {
	rec := j.seg.Record
	var err error
	if j.payload, err = c.ReadPayload(j.seg.Input, rec, j.payload); err != nil {
		return err
	}
	data, err := dec.Decode(j.out, rec, j.payload)
	if err != nil {
		return fmt.Errorf("%s: %w", c.Files()[j.seg.Input].Name, err)
	}
	if rec.Compressed {
		j.out = data[:0] // keep the grown buffer; raw data aliases the payload
	}
	j.data = data[j.seg.Offset-rec.Offset : j.seg.End()-rec.Offset]
	return nil
}
