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
//
// WithKey continues a file encrypted under the key (under the file's own
// salt, so the records written next are sealed as the file's are).
func ResumeWriter(r io.Reader, w io.Writer, opts ...Option) (*Writer, error) {
	rd := NewReader(r, opts...)
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
		key:    rd.key,
		crypt:  rd.crypt,
		hdr:    h,
		lay:    rd.lay,
		chain:  rd.endChain,
		hasher: blake3.New(),
		pos:    rd.endAt,
		trailer: Trailer{Records: rd.n, DataBytes: c.DataBytes, ZeroBytes: c.ZeroBytes,
			PayloadBytes: c.PayloadBytes},
	}, nil
}

// EndRecordLen is the length of an END record: what a snapback file's
// checkpoint writes, and what the first records after it overwrite.
// An encrypted file's is longer (see Header.EndRecordLen).
const EndRecordLen = rhdrLen + endMetaLen + DigestSize

// EndRecordLen returns the length of the END record of a file with header
// h: EndRecordLen, or more for an encrypted file.
func (h *Header) EndRecordLen() int64 {
	if h.IsEncrypted() {
		return sealedEndLen
	}
	return EndRecordLen
}

// RecoverWriter is ResumeWriter for a file whose last checkpoint a crash
// may have torn: a Writer continued (see Writer.Checkpoint) writes its next
// records over the END record it had made durable, and a crash before the
// file's new size is durable leaves the old size with that END gone.
// RecoverWriter reads r from its header, verifying the digest chain and
// every DATA record's data against its block digests, and stops at the END
// record or, in a torn file, after the last record that verifies. A torn
// tail is one the file ends inside of (ErrTruncated), or that fails to
// verify and is no longer than an END record (a torn page over it; see
// Header.EndRecordLen);
// anything else wrong (a bad record followed by more bytes, bytes after
// the END, an unreadable sector) is returned as the error it is. The
// Writer's Offset is where the next record (or the END) goes: torn says
// that the file holds more bytes there, which the caller truncates.
//
// Every record kept is one the writer had written whole; it says nothing
// about how many records a torn file lost. A writer that overwrites
// nothing a record covers until that record's checkpoint is durable, as
// Apply's snapback does, loses none that mattered.
//
// WithKey recovers a file encrypted under the key; a record verifies when
// its metadata and payload authenticate too.
func RecoverWriter(r io.Reader, w io.Writer, opts ...Option) (wr *Writer, torn bool, err error) {
	rd := NewReader(r, opts...)
	h, err := rd.Header()
	if err != nil {
		return nil, false, err
	}
	dec := NewDecoder()
	defer dec.Close()
	type mark struct {
		pos    int64
		chain  Digest
		lay    layout
		n      int64
		counts Trailer
	}
	good := mark{pos: rd.pos, chain: rd.chain, lay: rd.lay}
	var buf, dst []byte
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			c := rd.counts
			return &Writer{w: w, key: rd.key, crypt: rd.crypt, hdr: h, lay: rd.lay, chain: rd.endChain, hasher: blake3.New(), pos: rd.endAt,
				trailer: Trailer{Records: rd.n, DataBytes: c.DataBytes, ZeroBytes: c.ZeroBytes, PayloadBytes: c.PayloadBytes}}, false, nil
		}
		if err == nil && rec.Kind == KindData {
			if buf, err = rd.ReadPayload(buf); err == nil {
				var data []byte
				if data, err = dec.Decode(dst, rec, buf); err == nil && rec.Compressed {
					dst = data // a raw record's data is buf itself
				}
			}
		}
		if err != nil {
			if !tornTail(r, err, good.pos, h.EndRecordLen()) {
				return nil, false, err
			}
			c := good.counts
			return &Writer{w: w, key: rd.key, crypt: rd.crypt, hdr: h, lay: good.lay, chain: good.chain, hasher: blake3.New(), pos: good.pos,
				trailer: Trailer{Records: good.n, DataBytes: c.DataBytes, ZeroBytes: c.ZeroBytes, PayloadBytes: c.PayloadBytes}}, true, nil
		}
		good = mark{pos: rd.pos, chain: rd.chain, lay: rd.lay, n: rd.n, counts: rd.counts}
	}
}

// tornTail reports whether err, met reading the record at pos, is a torn
// tail (see RecoverWriter).
func tornTail(r io.Reader, err error, pos, endLen int64) bool {
	if errors.Is(err, ErrTruncated) {
		return true
	}
	var fe *FormatError
	if !errors.As(err, &fe) {
		return false // a read error: the bytes may be fine
	}
	s, ok := r.(io.Seeker)
	if !ok {
		return false
	}
	size, serr := s.Seek(0, io.SeekEnd)
	return serr == nil && size-pos <= endLen
}
