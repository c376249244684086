package archive

import (
	"errors"
	"fmt"
	"io"
)

// Structure is what CheckStructure found in a delta file.
type Structure struct {
	Header *Header
	// Records counts the records before END; DataRecords those of DATA.
	Records, DataRecords int64
	// PayloadBytes is the bytes of payload the file stores.
	PayloadBytes int64
	// Digest is the file digest (the END record's tag), verified: the
	// chain over everything the file stores, which a catalog records.
	Digest Digest
	// Contents reports whether the records' contents were checked too (a
	// file that is not encrypted: every record's metadata and place in
	// the volume, not the payloads' digests). For an encrypted file
	// without its key only the structure was: that the contents are the
	// ones written is not known.
	Contents bool
}

// CheckStructure reads a delta file to its END record without a key and
// checks what can be checked so: the header and its digest, every
// record's link in the digest chain, record lengths within the format's
// bounds, the END record present and last, no bytes after it, and so the
// file digest. It is what a keyless verify can say of an encrypted file:
// the file is whole and is the file the catalog names (compare Digest),
// not that its contents are authentic, which takes the key. A file that is
// not encrypted has its records' metadata checked too (Contents). Payloads
// are skipped, with a seek when r is an io.Seeker.
func CheckStructure(r io.Reader) (*Structure, error) {
	rd := NewReader(r)
	rd.keyless = true
	h, err := rd.Header()
	if err != nil {
		return nil, err
	}
	st := &Structure{Header: h, Contents: !h.IsEncrypted()}
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if rec.Kind == KindData {
			st.DataRecords++
		}
	}
	if h.IsEncrypted() {
		st.DataRecords = rd.sealedData
	}
	st.Records, st.PayloadBytes, st.Digest = rd.n, rd.counts.PayloadBytes, rd.trailer.Digest
	return st, nil
}

// skimSealed checks the framing of a record of an encrypted file read
// without its key (see CheckStructure): its lengths are those its type
// can have, and END is last. meta is the sealed metadata.
func (r *Reader) skimSealed(at, num int64, typ, flags byte, metaLen int, payloadLen uint32) error {
	plainMeta := metaLen - aeadOverhead
	switch {
	case typ == typeEnd:
		if flags != 0 || plainMeta != endMetaLen || payloadLen != 0 {
			return r.corrupt(at, num, ErrHeader, "malformed END record")
		}
		var one [1]byte
		n, err := io.ReadFull(r.r, one[:])
		if n > 0 {
			return r.corrupt(r.pos, num+1, ErrTrailingData, "bytes follow the END record (two files concatenated?)")
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return r.fail(err)
		}
		r.trailer = Trailer{Records: r.n, PayloadBytes: r.counts.PayloadBytes, Digest: r.chain}
		r.done = true
		return nil
	case typ == typeData:
		digests := plainMeta - dataMetaFixed
		if flags&^encMask != 0 || flags&encMask > encZstd || plainMeta > maxDataMeta || digests < DigestSize || digests%DigestSize != 0 {
			return r.corrupt(at, num, ErrHeader, fmt.Sprintf("malformed DATA record (flags %#x, %d bytes of sealed metadata)", flags, metaLen))
		}
		// A payload holds at most the record's blocks, sealed.
		if most := int64(digests/DigestSize) * r.hdr.BlockSize; payloadLen <= aeadOverhead || int64(payloadLen)-aeadOverhead > most {
			return r.corrupt(at, num, ErrHeader, fmt.Sprintf("a DATA record of at most %d bytes has a sealed payload of %d bytes", most, payloadLen))
		}
		r.sealedData++
	case typ == typeZero:
		if flags != 0 || plainMeta != zeroMetaLen || payloadLen != 0 {
			return r.corrupt(at, num, ErrHeader, "malformed ZERO record")
		}
	case typ&typeOptional != 0:
		r.skipped++
	default:
		return r.corrupt(at, num, ErrHeader, fmt.Sprintf("unknown record type %d", typ))
	}
	r.n++
	r.counts.PayloadBytes += int64(payloadLen)
	return nil
}
