package archive

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// A Reader reads a delta file front to back. Header returns the verified
// header; Next returns each DATA and ZERO record after verifying its link in
// the chain and its place in the volume, and io.EOF after a verified END
// record with nothing after it. Unknown optional records are verified and
// skipped. Errors are sticky.
//
// Next does not read payloads: call ReadPayload for the current record, or
// call Next again to skip it (with a seek when the underlying reader is an
// io.Seeker, so reading the structure of a file costs only its metadata).
type Reader struct {
	r       io.Reader
	seeker  io.Seeker
	pos     int64
	hdr     *Header
	lay     layout
	chain   Digest
	hasher  *blake3.Hasher
	n       int64 // records read, END excluded
	counts  Trailer
	trailer Trailer
	skipped int64 // optional records skipped
	pending int64 // unread payload bytes of the current record
	zeroBS  Digest
	zeroEnd Digest // digest of the volume's last, short block
	meta    []byte
	err     error
	done    bool
	// endAt and endChain are where the END record starts and the chain
	// before it, for ResumeWriter.
	endAt    int64
	endChain Digest

	key   *Key
	crypt *fileCrypt // of an encrypted file, once its header is verified
	plain []byte     // opened metadata of an encrypted file, reused
	// keyless reads an encrypted file without its key: the chain and the
	// framing only (CheckStructure).
	keyless    bool
	sealedData int64 // DATA records seen keyless
}

// NewReader returns a Reader reading from r. WithKey gives it the key of
// an encrypted file; without it, Header reads an encrypted file's header
// (checked by its digest only, not authenticated) and Next fails with
// ErrKeyRequired.
func NewReader(r io.Reader, opts ...Option) *Reader {
	rd := &Reader{r: r, hasher: blake3.New(), key: applyOptions(opts).key}
	if s, ok := r.(io.Seeker); ok {
		rd.seeker = s
		if cur, err := s.Seek(0, io.SeekCurrent); err == nil {
			rd.pos = cur
		} else {
			rd.seeker = nil // a pipe or terminal: not seekable after all
		}
	}
	return rd
}

// readerAt returns the underlying file for positioned reads, when it is
// seekable and has ReadAt; nil otherwise.
func (r *Reader) readerAt() io.ReaderAt {
	if r.seeker == nil {
		return nil
	}
	ra, _ := r.r.(io.ReaderAt)
	return ra
}

// Offset returns the reader's byte offset in the file.
func (r *Reader) Offset() int64 { return r.pos }

// Trailer returns the verified END record; valid after Next returned io.EOF.
func (r *Reader) Trailer() Trailer { return r.trailer }

// SkippedOptional returns how many unknown optional records were skipped.
func (r *Reader) SkippedOptional() int64 { return r.skipped }

// Header reads and verifies the file header (once) and returns it.
func (r *Reader) Header() (*Header, error) {
	if r.hdr != nil {
		return r.hdr, nil
	}
	if r.err != nil {
		return nil, r.err
	}
	var fixed [fixedHeaderLen]byte
	n, err := io.ReadFull(r.r, fixed[:])
	r.pos += int64(n)
	if err != nil {
		switch {
		case n == 0 && errors.Is(err, io.EOF):
			return nil, r.corrupt(0, 0, ErrTruncated, "the input is empty")
		case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
			if !bytes.HasPrefix([]byte(magic), fixed[:min(n, len(magic))]) {
				return nil, r.corrupt(0, 0, ErrHeader, "not a thinback delta file (bad magic)")
			}
			return nil, r.corrupt(0, 0, ErrTruncated, fmt.Sprintf("the file ends after %d bytes, inside the header", n))
		}
		return nil, r.readFailed("the header", fixed[:], r.pos-int64(n), n, err)
	}
	if string(fixed[:8]) != magic {
		if string(fixed[:4]) == magic[:4] {
			return nil, r.corrupt(0, 0, ErrHeader, "bad magic: line endings were changed (copied in text mode?)")
		}
		return nil, r.corrupt(0, 0, ErrHeader, "not a thinback delta file (bad magic)")
	}
	version := binary.LittleEndian.Uint16(fixed[8:])
	bodyLen := binary.LittleEndian.Uint32(fixed[10:])
	if version != Version {
		// The first 14 bytes are the same in every version; what follows
		// may not be, so nothing more can be checked.
		return nil, r.corrupt(0, 0, ErrVersion, fmt.Sprintf("format version %d (or a corrupt header): this thinback reads version %d; use a newer thinback", version, Version))
	}
	if bodyLen < minHeaderBody || bodyLen > maxHeaderBody {
		return nil, r.corrupt(0, 0, ErrHeader, fmt.Sprintf("header length %d out of range [%d, %d]", bodyLen, minHeaderBody, maxHeaderBody))
	}
	buf := make([]byte, fixedHeaderLen+int(bodyLen)+DigestSize)
	copy(buf, fixed[:])
	n, err = io.ReadFull(r.r, buf[fixedHeaderLen:])
	r.pos += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, r.corrupt(0, 0, ErrTruncated, fmt.Sprintf("the file ends after %d bytes, inside the header", r.pos))
		}
		return nil, r.readFailed("the header", buf[fixedHeaderLen:], r.pos-int64(n), n, err)
	}
	tagAt := fixedHeaderLen + int(bodyLen)
	if Digest(blake3.Sum256(buf[:tagAt])) != Digest(buf[tagAt:]) {
		return nil, r.corrupt(0, 0, ErrChecksum, "header digest does not match: the header is corrupt")
	}
	h, detail := parseBody(buf[fixedHeaderLen:tagAt])
	if detail != "" {
		return nil, r.corrupt(0, 0, ErrHeader, detail)
	}
	if unknown := h.Required &^ knownRequired; unknown != 0 {
		return nil, r.corrupt(0, 0, ErrVersion, fmt.Sprintf("unknown required features %#x: use a newer thinback", uint64(unknown)))
	}
	var key *Key
	if !h.IsEncrypted() && r.key != nil {
		return nil, r.corrupt(0, 0, ErrAuth, fmt.Sprintf("the file is not encrypted, but it is read with key %s: it was not written under that key (put in place of an encrypted file?)", r.key.ID()))
	}
	if h.IsEncrypted() && r.key != nil {
		if h.KeyID != r.key.ID() {
			return nil, r.corrupt(0, 0, ErrWrongKey, fmt.Sprintf("the file is encrypted with key %s, the key given is %s: give the key of the store it was written into", h.KeyID, r.key.ID()))
		}
		if r.key.headerMAC(buf[:tagAt-headerMACLen]) != h.mac {
			return nil, r.corrupt(0, 0, ErrWrongKey, fmt.Sprintf("the header does not authenticate under key %s: the key is not the one that wrote the file, or the header was altered", h.KeyID))
		}
		key = r.key
		r.crypt = key.file(h.salt)
	}
	copy(r.chain[:], buf[tagAt:])
	r.hdr = h
	r.lay = newLayout(h)
	r.zeroBS = key.zeroDigest(h.BlockSize)
	if tail := h.VolumeSize % h.BlockSize; tail != 0 {
		r.zeroEnd = key.zeroDigest(tail)
	}
	return h, nil
}

// Next returns the next DATA or ZERO record, or io.EOF after the END record.
// The record's payload, if any, is skipped unless ReadPayload is called
// before the next call to Next.
func (r *Reader) Next() (*Record, error) {
	if _, err := r.Header(); err != nil {
		return nil, err
	}
	if r.hdr.IsEncrypted() && r.crypt == nil && !r.keyless && r.err == nil {
		return nil, r.corrupt(r.pos, 0, ErrKeyRequired, fmt.Sprintf("its key is %s; give that key", r.hdr.KeyID))
	}
	for {
		if r.err != nil {
			return nil, r.err
		}
		if r.done {
			return nil, io.EOF
		}
		if err := r.skipPayload(); err != nil {
			return nil, err
		}
		rec, err := r.next()
		if err != nil || rec != nil {
			return rec, err
		}
	}
}

// next reads one record; it returns (nil, nil) after an END or a skipped
// optional record.
func (r *Reader) next() (*Record, error) {
	num, at := r.n+1, r.pos
	var rh [rhdrLen]byte
	n, err := io.ReadFull(r.r, rh[:])
	r.pos += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if n == 0 {
				if r.seeker != nil {
					// A payload skipped with a seek may have run past the end.
					if end, serr := r.seeker.Seek(0, io.SeekEnd); serr == nil && end < at {
						return nil, r.corrupt(end, r.n, ErrTruncated, fmt.Sprintf("the file ends at byte %d, inside the payload of record %d", end, r.n))
					}
				}
				return nil, r.corrupt(at, num, ErrTruncated, fmt.Sprintf("the file ends after %d records without an END record", r.n))
			}
			return nil, r.corrupt(at, num, ErrTruncated, "the file ends inside a record header")
		}
		return nil, r.readFailed(fmt.Sprintf("record %d", num), rh[:], at, n, err)
	}
	typ, flags := rh[0], rh[1]
	metaLen := binary.LittleEndian.Uint32(rh[4:])
	payloadLen := binary.LittleEndian.Uint32(rh[8:])
	most := uint32(maxPayload)
	if r.hdr.IsEncrypted() {
		most += aeadOverhead // a raw record of MaxDataLen, sealed
	}
	if metaLen > maxOptionalMeta || payloadLen > most {
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("record lengths (meta %d, payload %d) exceed the format's bounds", metaLen, payloadLen))
	}
	if cap(r.meta) < int(metaLen)+DigestSize {
		r.meta = make([]byte, int(metaLen)+DigestSize)
	}
	buf := r.meta[:int(metaLen)+DigestSize]
	n, err = io.ReadFull(r.r, buf)
	r.pos += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, r.corrupt(at, num, ErrTruncated, "the file ends inside a record")
		}
		return nil, r.readFailed(fmt.Sprintf("record %d", num), buf, r.pos-int64(n), n, err)
	}
	meta := buf[:metaLen]
	next := chainNext(r.hasher, r.chain, rh[:], meta)
	if next != Digest(buf[metaLen:]) {
		return nil, r.corrupt(at, num, ErrChecksum, "record digest does not match the chain: the record is corrupt, or records were reordered, dropped or spliced from another file")
	}
	prev := r.chain
	if typ == typeEnd {
		r.endAt, r.endChain = at, r.chain
	}
	r.chain = next
	if rh[2] != 0 || rh[3] != 0 {
		return nil, r.corrupt(at, num, ErrHeader, "reserved record header bytes are not zero")
	}
	r.pending = int64(payloadLen)
	payloadPos := r.pos
	sealed := r.hdr.IsEncrypted()
	if sealed {
		if typ == typeEnd {
			// The link before END is stored with it, so that END can be
			// authenticated on its own (docs/FORMAT.md "Encryption").
			if len(meta) < endClearLen || Digest(meta[:DigestSize]) != prev || binary.LittleEndian.Uint64(meta[DigestSize:]) != uint64(r.n) {
				return nil, r.corrupt(at, num, ErrHeader, "the END record of an encrypted file does not hold the chain link before it and the number of records")
			}
			meta = meta[endClearLen:]
		}
		if r.keyless {
			return nil, r.skimSealed(at, num, typ, flags, len(meta), payloadLen)
		}
		if len(meta) < aeadOverhead {
			return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("sealed record metadata of %d bytes", len(meta)))
		}
		plain, err := r.crypt.openMeta(r.plain[:0], num, typ == typeEnd, rh[:], prev, meta)
		if err != nil {
			return nil, r.corrupt(at, num, ErrAuth, fmt.Sprintf("the record's metadata does not authenticate under key %s: the file was altered, or the record was moved or spliced from another file", r.hdr.KeyID))
		}
		r.plain = plain
		meta = plain
		metaLen = uint32(len(meta))
	}

	switch {
	case typ == typeEnd:
		return nil, r.readEnd(at, num, flags, meta, payloadLen)
	case typ == typeData:
		return r.readData(at, num, flags, meta, payloadLen, payloadPos, sealed)
	case typ == typeZero:
		if flags != 0 || metaLen != zeroMetaLen || payloadLen != 0 {
			return nil, r.corrupt(at, num, ErrHeader, "malformed ZERO record")
		}
		off := binary.LittleEndian.Uint64(meta[0:])
		length := binary.LittleEndian.Uint64(meta[8:])
		if off > MaxVolumeSize || length > MaxVolumeSize {
			return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("ZERO record range (%d, %d) out of range", off, length))
		}
		rec := &Record{Kind: KindZero, Offset: int64(off), Length: int64(length), Num: num, Pos: at, PayloadPos: payloadPos, blockSize: r.hdr.BlockSize}
		if d := r.lay.add(KindZero, rec.Offset, rec.Length); d != "" {
			return nil, r.corrupt(at, num, ErrHeader, d)
		}
		r.n++
		r.counts.ZeroBytes += rec.Length
		return rec, nil
	case typ&typeOptional != 0:
		r.n++
		r.skipped++
		r.counts.PayloadBytes += int64(payloadLen)
		return nil, nil
	}
	return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("unknown record type %d", typ))
}

func (r *Reader) readData(at, num int64, flags byte, meta []byte, stored uint32, payloadPos int64, sealed bool) (*Record, error) {
	payloadLen := stored
	if sealed {
		if stored <= aeadOverhead {
			return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("sealed DATA payload of %d bytes", stored))
		}
		payloadLen -= aeadOverhead
	}
	if len(meta) < dataMetaFixed || len(meta) > maxDataMeta {
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record metadata of %d bytes", len(meta)))
	}
	if flags&^encMask != 0 || flags&encMask > encZstd {
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record has unknown flags %#x", flags))
	}
	off := binary.LittleEndian.Uint64(meta[0:])
	length := int64(binary.LittleEndian.Uint32(meta[8:]))
	bs := r.hdr.BlockSize
	switch {
	case off > MaxVolumeSize:
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record offset %d out of range", off))
	case length < 1 || length > MaxDataLen:
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record length %d not in [1, %d]", length, MaxDataLen))
	case int64(len(meta)) != dataMetaFixed+DigestSize*blocks(length, bs):
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record of %d bytes has %d bytes of digests, want %d", length, len(meta)-dataMetaFixed, DigestSize*blocks(length, bs)))
	}
	compressed := flags&encMask == encZstd
	if compressed && int64(payloadLen) >= length || !compressed && int64(payloadLen) != length {
		return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record of %d bytes has a payload of %d bytes", length, payloadLen))
	}
	rec := &Record{Kind: KindData, Offset: int64(off), Length: length, Compressed: compressed,
		Num: num, Pos: at, PayloadPos: payloadPos, PayloadLen: int64(stored), blockSize: bs, crypt: r.crypt}
	if d := r.lay.add(KindData, rec.Offset, rec.Length); d != "" {
		return nil, r.corrupt(at, num, ErrHeader, d)
	}
	rec.Digests = make([]Digest, blocks(length, bs))
	for i := range rec.Digests {
		copy(rec.Digests[i][:], meta[dataMetaFixed+i*DigestSize:])
		zero := r.zeroBS
		if blockEnd := rec.Offset + int64(i+1)*bs; blockEnd > r.hdr.VolumeSize {
			zero = r.zeroEnd
		}
		if rec.Digests[i] == zero {
			return nil, r.corrupt(at, num, ErrHeader, fmt.Sprintf("DATA record stores an all-zero block at volume offset %d (must be a ZERO record)", rec.Offset+int64(i)*bs))
		}
	}
	r.n++
	r.counts.DataBytes += length
	r.counts.PayloadBytes += int64(stored)
	return rec, nil
}

func (r *Reader) readEnd(at, num int64, flags byte, meta []byte, payloadLen uint32) error {
	if flags != 0 || len(meta) != endMetaLen || payloadLen != 0 {
		return r.corrupt(at, num, ErrHeader, "malformed END record")
	}
	t := Trailer{
		Records:      int64(binary.LittleEndian.Uint64(meta[0:])),
		DataBytes:    int64(binary.LittleEndian.Uint64(meta[8:])),
		ZeroBytes:    int64(binary.LittleEndian.Uint64(meta[16:])),
		PayloadBytes: int64(binary.LittleEndian.Uint64(meta[24:])),
		Digest:       r.chain,
	}
	if r.crypt != nil {
		t.Tag = r.crypt.key.FileTag(r.chain)
	}
	c := r.counts
	if t.Records != r.n || t.DataBytes != c.DataBytes || t.ZeroBytes != c.ZeroBytes || t.PayloadBytes != c.PayloadBytes {
		return r.corrupt(at, num, ErrHeader, fmt.Sprintf("END record counts (%d records, %d data, %d zero, %d payload bytes) differ from the file's (%d, %d, %d, %d)",
			t.Records, t.DataBytes, t.ZeroBytes, t.PayloadBytes, r.n, c.DataBytes, c.ZeroBytes, c.PayloadBytes))
	}
	if d := r.lay.finish(); d != "" {
		return r.corrupt(at, num, ErrHeader, d)
	}
	var one [1]byte
	n, err := io.ReadFull(r.r, one[:])
	if n > 0 {
		return r.corrupt(r.pos, num+1, ErrTrailingData, "bytes follow the END record (two files concatenated?)")
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return r.fail(err)
	}
	r.trailer = t
	r.done = true
	return nil
}

// ReadPayload reads the current record's payload into dst (grown if too
// small) and returns it. It may be called once per record, after Next.
func (r *Reader) ReadPayload(dst []byte) ([]byte, error) {
	if r.err != nil {
		return nil, r.err
	}
	n := int(r.pending)
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	dst = dst[:n]
	got, err := io.ReadFull(r.r, dst)
	r.pos += int64(got)
	r.pending = 0
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, r.corrupt(r.pos-int64(got), r.n, ErrTruncated, "the file ends inside a record's payload")
		}
		return nil, r.readFailed(fmt.Sprintf("the payload of record %d", r.n), dst, r.pos-int64(got), got, err)
	}
	return dst, nil
}

// readFailed makes the sticky error of a read of len(buf) bytes at off
// that failed with err after got bytes: a *ReadError at the first
// unreadable block when the file can be read at offsets again, else at
// the first byte not read (a stream's offset).
func (r *Reader) readFailed(what string, buf []byte, off int64, got int, err error) error {
	if ra := r.readerAt(); ra != nil {
		return r.fail(locateReadError(ra, what, buf, off, len(buf), got, err))
	}
	return r.fail(&ReadError{What: what, Offset: off + int64(got), Err: err})
}

func (r *Reader) skipPayload() error {
	if r.pending == 0 {
		return nil
	}
	n := r.pending
	r.pending = 0
	if r.seeker != nil {
		pos, err := r.seeker.Seek(n, io.SeekCurrent)
		if err != nil {
			return r.fail(err)
		}
		r.pos = pos
		return nil
	}
	got, err := io.CopyN(io.Discard, r.r, n)
	r.pos += got
	if err != nil {
		if errors.Is(err, io.EOF) {
			return r.corrupt(r.pos, r.n, ErrTruncated, "the file ends inside a record's payload")
		}
		return r.fail(err)
	}
	return nil
}

func (r *Reader) corrupt(at, num int64, sentinel error, detail string) error {
	return r.fail(&FormatError{Offset: at, Record: num, Err: sentinel, Detail: detail})
}

func (r *Reader) fail(err error) error {
	if r.err == nil {
		r.err = err
	}
	return r.err
}
