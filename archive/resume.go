package archive

import (
	"errors"
	"io"

	"github.com/zeebo/blake3"
)

// ResumeWriter continues the complete delta file that r holds. It reads
// the file to its END record, checking its structure and digest chain (not
// the payloads' digests: what is written next does not depend on them),
// and returns a Writer that writes to w as if it had written the file's
// header and records itself: its first write replaces the END record,
// which starts at the Writer's Offset (position w there), and Checkpoint
// and Close end the longer file. Records must continue after the file's
// last one. Snapback files use it to go on covering an interrupted apply
// when it is run again.
func ResumeWriter(r io.Reader, w io.Writer) (*Writer, error) {
	rd := NewReader(r)
	h, err := rd.Header()
	if err != nil {
		return nil, err
	}
	for {
		_, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	c := rd.counts
	return &Writer{
		w:      w,
		hdr:    h,
		lay:    rd.lay,
		chain:  rd.endChain,
		hasher: blake3.New(),
		pos:    rd.endAt,
		trailer: Trailer{Records: rd.n, DataBytes: c.DataBytes, ZeroBytes: c.ZeroBytes,
			PayloadBytes: c.PayloadBytes},
	}, nil
}
