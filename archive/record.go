package archive

import (
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
)

// Digest is the BLAKE3-256 digest of one block of data.
type Digest [DigestSize]byte

// Record is one DATA or ZERO record of a delta file.
type Record struct {
	Kind   Kind
	Offset int64 // byte offset in the volume
	Length int64 // bytes of the volume it covers

	// DATA only.
	Compressed bool     // Payload is a zstd frame (else raw data)
	Digests    []Digest // one per block of BlockSize, the last maybe short
	Payload    []byte   // encoded bytes; a Reader leaves it nil (see ReadPayload)

	// Set by a Reader: where the record is in the file.
	Num        int64 // 1-based record number
	Pos        int64 // byte offset of the record header
	PayloadPos int64 // byte offset of the payload
	PayloadLen int64

	blockSize int64
	crypt     *fileCrypt // the keys of an encrypted file
}

// End returns the offset just past the record's range.
func (r *Record) End() int64 { return r.Offset + r.Length }

// BlockSize returns the block size of the file the record belongs to.
func (r *Record) BlockSize() int64 { return r.blockSize }

// blocks returns how many digests a DATA record of length bytes carries.
func blocks(length, blockSize int64) int64 { return (length + blockSize - 1) / blockSize }

// layout enforces the order and coverage rules of docs/FORMAT.md ("Order and
// coverage") for a Writer or a Reader. The two share it so that a Writer
// cannot produce a file its Reader refuses.
type layout struct {
	blockSize  int64
	volumeSize int64
	prevEnd    int64
	// need is the next byte that must be covered by a record: the start of
	// the region a full, or the grown part of an incremental, must cover.
	// When need >= volumeSize nothing more is required.
	need int64
	// resumeFrom is a resumed file's ResumeFrom: no record starts below.
	resumeFrom int64
}

func newLayout(h *Header) layout {
	l := layout{blockSize: h.BlockSize, volumeSize: h.VolumeSize, need: h.VolumeSize}
	if h.IsFull() {
		l.need = 0
	} else if h.VolumeSize > h.ParentSize {
		l.need = h.ParentSize
	}
	if h.IsResumed() {
		// As if a record had ended there: the file it continues defined
		// everything below.
		l.resumeFrom, l.prevEnd = h.ResumeFrom, h.ResumeFrom
		l.need = max(l.need, h.ResumeFrom)
	}
	return l
}

// add checks the range of the next record and returns a detail on error.
func (l *layout) add(kind Kind, off, length int64) string {
	end := off + length
	switch {
	case length <= 0:
		return fmt.Sprintf("%v record at volume offset %d has length %d", kind, off, length)
	case off < 0 || off > l.volumeSize || length > l.volumeSize-off:
		return fmt.Sprintf("%v record [%d, %d) extends past the volume size %d", kind, off, end, l.volumeSize)
	case off < l.resumeFrom:
		return fmt.Sprintf("%v record at volume offset %d precedes the resume offset %d", kind, off, l.resumeFrom)
	case off < l.prevEnd:
		return fmt.Sprintf("%v record at volume offset %d overlaps or precedes the previous record, which ends at %d", kind, off, l.prevEnd)
	case off%l.blockSize != 0:
		return fmt.Sprintf("%v record at volume offset %d is not aligned to the block size %d", kind, off, l.blockSize)
	case length%l.blockSize != 0 && end != l.volumeSize:
		return fmt.Sprintf("%v record [%d, %d) does not end on a block boundary or at the end of the volume", kind, off, end)
	}
	if end > l.need && l.need < l.volumeSize {
		if off > l.need {
			return fmt.Sprintf("bytes [%d, %d) are not covered by any record, but this file must define them (a full, or the grown part of a volume)", l.need, off)
		}
		l.need = end
	}
	l.prevEnd = end
	return ""
}

// finish checks that everything that had to be covered was.
func (l *layout) finish() string {
	if l.need < l.volumeSize {
		return fmt.Sprintf("bytes [%d, %d) are not covered by any record, but this file must define them (a full, or the grown part of a volume)", l.need, l.volumeSize)
	}
	return ""
}

// zeroDigest returns the digest of n zero bytes, cached: readers compare
// every DATA digest against it and hashing 4 MiB of zeroes per call would
// cost more than the record.
func zeroDigest(n int64) Digest {
	if v, ok := zeroDigests.Load(n); ok {
		return v.(Digest)
	}
	d := Digest(blake3.Sum256(zeroes[:n]))
	zeroDigests.Store(n, d)
	return d
}

var (
	zeroDigests sync.Map
	// zeroes is never written: its pages stay the kernel's shared zero page.
	zeroes = make([]byte, MaxDataLen)
)
