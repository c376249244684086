package archive

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// A Writer writes a delta file: WriteHeader, then records in increasing
// offset order, then Close, which writes the END record. It does not close
// the underlying writer. Errors are sticky.
type Writer struct {
	w       io.Writer
	hdr     *Header
	lay     layout
	chain   Digest
	hasher  *blake3.Hasher
	pos     int64
	trailer Trailer
	zero    Extent // pending ZERO, coalesced with adjacent ones
	buf     []byte
	err     error
	closed  bool
	key     *Key
	crypt   *fileCrypt // of an encrypted file
	sealed  []byte     // sealed metadata or payload, reused
}

// Trailer is what the END record says about a file.
type Trailer struct {
	Records      int64 // records before END
	DataBytes    int64 // bytes of the volume held by DATA records
	ZeroBytes    int64 // bytes of the volume covered by ZERO records
	PayloadBytes int64 // bytes of payload stored
	// Digest is the file digest: the last link of the chain, committing to
	// the header, every record and, through the block digests, every byte.
	// Of an encrypted file, it is computed over what the file stores, so
	// it is checked without the key.
	Digest Digest
	// Tag is an encrypted file's tag (Key.FileTag of Digest), the proof
	// under the key that the file is the one written; zero for a file that
	// is not encrypted.
	Tag Digest
}

// NewWriter returns a Writer writing to w. WithKey makes it write an
// encrypted file.
func NewWriter(w io.Writer, opts ...Option) *Writer {
	o := applyOptions(opts)
	return &Writer{w: w, hasher: blake3.New(), key: o.key}
}

// Header returns the header written, or nil before WriteHeader.
func (w *Writer) Header() *Header { return w.hdr }

// Offset returns the number of bytes written so far.
func (w *Writer) Offset() int64 { return w.pos }

// Covered returns the volume offset where the last record written ends
// (0 before the first): the next record starts at or after it.
func (w *Writer) Covered() int64 { return w.lay.prevEnd }

// Trailer returns the END record's contents; valid after Close.
func (w *Writer) Trailer() Trailer { return w.trailer }

// WriteHeader validates h and writes it. It must be called once, first.
func (w *Writer) WriteHeader(h *Header) error {
	if w.err != nil {
		return w.err
	}
	if w.hdr != nil {
		return w.fail(errors.New("archive: WriteHeader called twice"))
	}
	hc := *h
	hc.Version = Version
	hc.Attrs = append([]Attr(nil), h.Attrs...)
	if hc.ResumeFrom != 0 {
		hc.Required |= FeatureResumed
	}
	if w.key != nil {
		hc.Required |= FeatureEncrypted
		hc.KeyID, hc.AEAD, hc.ParentTag = w.key.ID(), AEADAES256GCM, Digest{}
		if !hc.IsFull() && !hc.IsSnapback() {
			hc.ParentTag = w.key.ownParentTag(&hc)
		}
		if _, err := rand.Read(hc.salt[:]); err != nil {
			return w.fail(fmt.Errorf("archive: the file's salt: %w", err))
		}
		w.crypt = w.key.file(hc.salt)
	} else if hc.IsEncrypted() {
		return w.fail(errors.New("archive: an encrypted header without a key (see WithKey)"))
	}
	if d := hc.validate(); d != "" {
		return w.fail(fmt.Errorf("archive: invalid header: %s", d))
	}
	if hc.Required&^knownRequired != 0 {
		return w.fail(fmt.Errorf("archive: unknown required features %#x", uint64(hc.Required&^knownRequired)))
	}
	w.hdr = &hc
	w.lay = newLayout(&hc)

	body := hc.appendBody(nil)
	for len(body) < minHeaderBody {
		// Keep every header at least minHeaderBody long so a reader can
		// tell a truncated header from a short one by length alone.
		body = append(body, 0)
	}
	macLen := 0
	if w.crypt != nil {
		macLen = headerMACLen
	}
	if len(body)+macLen > maxHeaderBody {
		return w.fail(fmt.Errorf("archive: header is %d bytes, at most %d", len(body)+macLen, maxHeaderBody))
	}
	b := make([]byte, 0, fixedHeaderLen+len(body)+macLen+DigestSize)
	b = append(b, magic...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(body)+macLen))
	b = append(b, body...)
	if w.crypt != nil {
		mac := w.key.headerMAC(b)
		hc.mac = mac
		b = append(b, mac[:]...)
	}
	w.chain = blake3.Sum256(b)
	b = append(b, w.chain[:]...)
	return w.write(b)
}

// WriteRecord writes a DATA or ZERO record. DATA records must carry their
// digests and encoded payload (see Encoder). Adjacent ZERO records are
// coalesced into one.
func (w *Writer) WriteRecord(r *Record) error {
	if w.err != nil {
		return w.err
	}
	if w.hdr == nil || w.closed {
		return w.fail(errors.New("archive: WriteRecord outside WriteHeader..Close"))
	}
	switch r.Kind {
	case KindZero:
		// Checked now, not when the coalesced record is written, so the
		// caller learns of its mistake at the record that made it.
		if d := w.lay.add(KindZero, r.Offset, r.Length); d != "" {
			return w.fail(fmt.Errorf("%w: %s", ErrWriteOrder, d))
		}
		if w.zero.Length > 0 && w.zero.End() == r.Offset {
			w.zero.Length += r.Length
			return nil
		}
		if err := w.flushZero(); err != nil {
			return err
		}
		w.zero = Extent{Offset: r.Offset, Length: r.Length, Kind: KindZero}
		return nil
	case KindData:
		if err := w.flushZero(); err != nil {
			return err
		}
		return w.writeData(r)
	}
	return w.fail(fmt.Errorf("%w: cannot write a record of kind %v", ErrWriteOrder, r.Kind))
}

func (w *Writer) writeData(r *Record) error {
	bs := w.hdr.BlockSize
	switch {
	case r.Length > MaxDataLen:
		return w.fail(fmt.Errorf("%w: DATA record of %d bytes, at most %d", ErrWriteOrder, r.Length, MaxDataLen))
	case int64(len(r.Digests)) != blocks(r.Length, bs):
		return w.fail(fmt.Errorf("%w: DATA record of %d bytes has %d digests, want %d", ErrWriteOrder, r.Length, len(r.Digests), blocks(r.Length, bs)))
	case !r.Compressed && int64(len(r.Payload)) != r.Length:
		return w.fail(fmt.Errorf("%w: raw DATA payload of %d bytes for a record of %d", ErrWriteOrder, len(r.Payload), r.Length))
	case r.Compressed && int64(len(r.Payload)) >= r.Length:
		return w.fail(fmt.Errorf("%w: compressed DATA payload of %d bytes does not shrink %d bytes", ErrWriteOrder, len(r.Payload), r.Length))
	}
	if d := w.lay.add(KindData, r.Offset, r.Length); d != "" {
		return w.fail(fmt.Errorf("%w: %s", ErrWriteOrder, d))
	}
	meta := w.buf[:0]
	meta = binary.LittleEndian.AppendUint64(meta, uint64(r.Offset))
	meta = binary.LittleEndian.AppendUint32(meta, uint32(r.Length))
	for i := range r.Digests {
		meta = append(meta, r.Digests[i][:]...)
	}
	w.buf = meta
	flags := byte(encRaw)
	if r.Compressed {
		flags = encZstd
	}
	payload := r.Payload
	if w.crypt != nil {
		// The AEAD allocates exactly what a payload needs when the buffer
		// is short, and payloads grow unevenly until a raw one comes:
		// grow the buffer once to what the record can hold (a payload
		// never exceeds its record's length), so that a send leaves one
		// buffer behind, not a trail of ever larger garbage that raises
		// its peak memory.
		if need := len(payload) + aeadOverhead; cap(w.sealed) < need {
			w.sealed = make([]byte, 0, max(need, int(r.Length)+aeadOverhead, min(2*cap(w.sealed), MaxDataLen+aeadOverhead)))
		}
		w.sealed = w.crypt.sealPayload(w.sealed[:0], w.trailer.Records+1, flags, r.Offset, r.Length, payload)
		payload = w.sealed
	}
	if err := w.writeRecord(typeData, flags, meta, payload); err != nil {
		return err
	}
	w.trailer.DataBytes += r.Length
	return nil
}

func (w *Writer) flushZero() error {
	z := w.zero
	if z.Length == 0 {
		return nil
	}
	w.zero = Extent{}
	var meta [zeroMetaLen]byte
	binary.LittleEndian.PutUint64(meta[0:], uint64(z.Offset))
	binary.LittleEndian.PutUint64(meta[8:], uint64(z.Length))
	if err := w.writeRecord(typeZero, 0, meta[:], nil); err != nil {
		return err
	}
	w.trailer.ZeroBytes += z.Length
	return nil
}

// writeRecord frames one record and advances the chain. The metadata of
// an encrypted file is sealed here.
func (w *Writer) writeRecord(typ, flags byte, meta, payload []byte) error {
	rh, meta := w.frame(typ, flags, meta, len(payload))
	w.chain = chainNext(w.hasher, w.chain, rh[:], meta)
	b := make([]byte, 0, rhdrLen+len(meta)+DigestSize)
	b = append(b, rh[:]...)
	b = append(b, meta...)
	b = append(b, w.chain[:]...)
	if err := w.write(b); err != nil {
		return err
	}
	if len(payload) > 0 {
		if err := w.write(payload); err != nil {
			return err
		}
	}
	if typ != typeEnd {
		w.trailer.Records++
		w.trailer.PayloadBytes += int64(len(payload))
	}
	return nil
}

// Checkpoint returns the bytes of an END record for the records written so
// far, without writing it. A caller writing to a file can put them at
// Offset() (with WriteAt, leaving the file offset where it was) and fsync:
// the file is then a complete delta file, and the next record overwrites
// those bytes. Snapback files use this so that they are valid at every
// moment, even after a crash. Its errors are sticky, as every Writer's.
func (w *Writer) Checkpoint() ([]byte, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.hdr == nil || w.closed {
		return nil, w.fail(errors.New("archive: Checkpoint outside WriteHeader..Close"))
	}
	if err := w.flushZero(); err != nil {
		return nil, err
	}
	if d := w.lay.finish(); d != "" {
		return nil, w.fail(fmt.Errorf("%w: %s", ErrWriteOrder, d))
	}
	plain := w.endMeta()
	rh, meta := w.frame(typeEnd, 0, plain[:], 0)
	tag := chainNext(w.hasher, w.chain, rh[:], meta)
	b := append(rh[:], meta...)
	return append(b, tag[:]...), nil
}

// frame returns the record header and the stored metadata of the next
// record: meta itself, or sealed in an encrypted file (an END record's
// after the chain link before it and the number of records,
// docs/FORMAT.md "Encryption").
func (w *Writer) frame(typ, flags byte, meta []byte, payloadLen int) ([rhdrLen]byte, []byte) {
	var rh [rhdrLen]byte
	rh[0], rh[1] = typ, flags
	stored := len(meta)
	if w.crypt != nil {
		stored += aeadOverhead
		if typ == typeEnd {
			stored += endClearLen
		}
	}
	binary.LittleEndian.PutUint32(rh[4:], uint32(stored))
	binary.LittleEndian.PutUint32(rh[8:], uint32(payloadLen))
	if w.crypt == nil {
		return rh, meta
	}
	var out []byte
	if typ == typeEnd {
		out = append(make([]byte, 0, stored), w.chain[:]...)
		out = binary.LittleEndian.AppendUint64(out, uint64(w.trailer.Records))
	} else {
		out = make([]byte, 0, stored)
	}
	return rh, w.crypt.sealMeta(out, w.trailer.Records+1, typ == typeEnd, rh[:], w.chain, meta)
}

func (w *Writer) endMeta() (meta [endMetaLen]byte) {
	binary.LittleEndian.PutUint64(meta[0:], uint64(w.trailer.Records))
	binary.LittleEndian.PutUint64(meta[8:], uint64(w.trailer.DataBytes))
	binary.LittleEndian.PutUint64(meta[16:], uint64(w.trailer.ZeroBytes))
	binary.LittleEndian.PutUint64(meta[24:], uint64(w.trailer.PayloadBytes))
	return meta
}

// Close writes the END record. It fails if the records do not cover what
// the file must define (all of a full, the grown part of an incremental).
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.hdr == nil {
		return w.fail(errors.New("archive: Close before WriteHeader"))
	}
	if w.closed {
		return nil
	}
	if err := w.flushZero(); err != nil {
		return err
	}
	if d := w.lay.finish(); d != "" {
		return w.fail(fmt.Errorf("%w: %s", ErrWriteOrder, d))
	}
	meta := w.endMeta()
	if err := w.writeRecord(typeEnd, 0, meta[:], nil); err != nil {
		return err
	}
	w.trailer.Digest = w.chain
	if w.key != nil {
		w.trailer.Tag = w.key.FileTag(w.chain)
	}
	w.closed = true
	return nil
}

func (w *Writer) write(b []byte) error {
	n, err := w.w.Write(b)
	w.pos += int64(n)
	if err != nil {
		return w.fail(err)
	}
	return nil
}

func (w *Writer) fail(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// chainNext computes the next link: H(prev || rhdr || meta).
func chainNext(h *blake3.Hasher, prev Digest, rh, meta []byte) Digest {
	h.Reset()
	h.Write(prev[:])
	h.Write(rh)
	h.Write(meta)
	var d Digest
	h.Sum(d[:0])
	return d
}
