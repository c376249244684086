package archive

import (
	"bytes"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
)

// Level is a compression effort.
type Level int

// Compression levels, mapped onto klauspost/compress/zstd's.
const (
	LevelFastest Level = 1 // about zstd -1: the default, keeps up with disks
	LevelDefault Level = 3 // about zstd -3
	LevelBetter  Level = 7 // about zstd -7
)

func (l Level) zstd() zstd.EncoderLevel {
	switch {
	case l <= LevelFastest:
		return zstd.SpeedFastest
	case l < LevelBetter:
		return zstd.SpeedDefault
	}
	return zstd.SpeedBetterCompression
}

// An Encoder turns volume data into records: all-zero blocks become ZERO
// records, runs of other blocks DATA records with their digests, compressed
// when that shrinks them. An Encoder is not safe for concurrent use; the
// send pipeline gives each worker its own.
type Encoder struct {
	enc *zstd.Encoder
	key *Key // digests are keyed under it, for an encrypted file
}

// NewEncoder returns an Encoder compressing at level. WithKey makes its
// digests the keyed digests of a file encrypted under the key.
func NewEncoder(level Level, opts ...Option) *Encoder {
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(level.zstd()),
		zstd.WithEncoderConcurrency(1),
		// BLAKE3 digests cover the data; zstd's own checksum would only
		// cost time and four bytes per record.
		zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true),
		zstd.WithLowerEncoderMem(true))
	if err != nil {
		panic("archive: zstd encoder options: " + err.Error())
	}
	return &Encoder{enc: enc, key: applyOptions(opts).key}
}

// Close releases the Encoder's compression state.
func (e *Encoder) Close() { e.enc.Close() }

// MaxEncodedLen is the most payload bytes Encode can produce for n bytes of
// data, for sizing the buffer passed to Encode.
func MaxEncodedLen(n int) int { return n + n/255 + 64 }

// Encode splits data, which holds the volume bytes at offset off, into
// records appended to dst. data must start on a block boundary and be at
// most MaxDataLen bytes; it may end short of a block only at the end of the
// volume. Compressed payloads are appended to buf (give it capacity
// MaxEncodedLen(len(data)) to avoid allocations); raw payloads alias data.
// The records are valid as long as data and buf are.
func (e *Encoder) Encode(dst []Record, off int64, data []byte, blockSize int64, buf []byte) ([]Record, []byte) {
	bs := int(blockSize)
	for start := 0; start < len(data); {
		// A run of blocks of one kind: zero or not.
		zero := isZero(data[start:min(start+bs, len(data))])
		end := start
		for end < len(data) && isZero(data[end:min(end+bs, len(data))]) == zero {
			end = min(end+bs, len(data))
		}
		if zero {
			dst = append(dst, Record{Kind: KindZero, Offset: off + int64(start), Length: int64(end - start), blockSize: blockSize})
		} else {
			dst, buf = e.encodeData(dst, off+int64(start), data[start:end], bs, buf)
		}
		start = end
	}
	return dst, buf
}

func (e *Encoder) encodeData(dst []Record, off int64, data []byte, bs int, buf []byte) ([]Record, []byte) {
	rec := Record{Kind: KindData, Offset: off, Length: int64(len(data)), blockSize: int64(bs)}
	rec.Digests = make([]Digest, (len(data)+bs-1)/bs)
	for i := range rec.Digests {
		rec.Digests[i] = e.key.blockDigest(data[i*bs : min((i+1)*bs, len(data))])
	}
	mark := len(buf)
	buf = e.enc.EncodeAll(data, buf)
	if n := len(buf) - mark; n < len(data) {
		rec.Compressed = true
		rec.Payload = buf[mark:len(buf):len(buf)]
	} else {
		buf = buf[:mark]
		rec.Payload = data
	}
	return append(dst, rec), buf
}

// isZero reports whether b is all zeroes, at memory speed.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroes))
		if !bytes.Equal(b[:n], zeroes[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// A Decoder turns a DATA record's payload into verified data. It is not safe
// for concurrent use.
type Decoder struct {
	dec *zstd.Decoder
}

// NewDecoder returns a Decoder.
func NewDecoder() *Decoder {
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		// Never let a frame header decide how much memory to take: the
		// record's length, checked against MaxDataLen, does.
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(2*MaxDataLen),
		zstd.WithDecoderMaxWindow(2*MaxDataLen))
	if err != nil {
		panic("archive: zstd decoder options: " + err.Error())
	}
	return &Decoder{dec: dec}
}

// Close releases the Decoder's state.
func (d *Decoder) Close() { d.dec.Close() }

// Decode decodes payload, the payload of DATA record rec, into dst (grown if
// its capacity is less than rec.Length) and verifies every block against the
// record's digests. It returns the data (which aliases payload when the
// record is stored raw), or a *FormatError wrapping
// ErrChecksum that names the first bad block. The payload of a record of
// an encrypted file is authenticated first and decrypted in place (a
// *FormatError wrapping ErrAuth if it does not authenticate): no byte of
// it is decrypted, decompressed or returned before.
func (d *Decoder) Decode(dst []byte, rec *Record, payload []byte) ([]byte, error) {
	return d.decode(dst, rec, payload, true)
}

// decode is Decode; without digests, the block digests of a record of an
// encrypted file are not recomputed once its payload authenticated (see
// ScanOptions.SkipSealedDigests). A record of a file in the clear has its
// digests checked whatever digests says: nothing else vouches for them.
func (d *Decoder) decode(dst []byte, rec *Record, payload []byte, digests bool) ([]byte, error) {
	if rec.Kind != KindData {
		return nil, fmt.Errorf("archive: Decode of a %v record", rec.Kind)
	}
	if rec.crypt != nil {
		var err error
		if payload, err = rec.crypt.openPayload(rec, payload); err != nil {
			return nil, err
		}
	}
	n := int(rec.Length)
	var data []byte
	if rec.Compressed {
		// Only now: a raw payload is verified in place and needs no dst.
		if cap(dst) < n {
			dst = make([]byte, 0, n)
		}
		out, err := d.dec.DecodeAll(payload, dst[:0:n])
		if err != nil {
			return nil, recordError(rec, ErrChecksum, fmt.Sprintf("payload does not decompress (%v): the payload is corrupt", err))
		}
		if len(out) != n {
			return nil, recordError(rec, ErrChecksum, fmt.Sprintf("payload decompresses to %d bytes, want %d: the payload is corrupt", len(out), n))
		}
		data = out
	} else {
		if len(payload) != n {
			return nil, recordError(rec, ErrChecksum, fmt.Sprintf("raw payload of %d bytes, want %d", len(payload), n))
		}
		data = payload // verified in place, no copy
	}
	if !digests && rec.crypt != nil {
		return data, nil
	}
	if err := Verify(rec, data); err != nil {
		return nil, err
	}
	return data, nil
}

// Verify checks data, the decoded data of DATA record rec, against the
// record's block digests.
func Verify(rec *Record, data []byte) error {
	bs := int(rec.blockSize)
	if bs == 0 || int64(len(data)) != rec.Length || len(rec.Digests) != (len(data)+bs-1)/bs {
		return recordError(rec, ErrChecksum, "data does not match the record's length")
	}
	var key *Key
	if rec.crypt != nil {
		key = rec.crypt.key
	}
	for i := range rec.Digests {
		if key.blockDigest(data[i*bs:min((i+1)*bs, len(data))]) != rec.Digests[i] {
			off := rec.Offset + int64(i*bs)
			return recordError(rec, ErrChecksum, fmt.Sprintf("block %d (volume bytes %d to %d) does not match its digest: the payload is corrupt", i, off, off+int64(min(bs, len(data)-i*bs))))
		}
	}
	return nil
}

// blockDigest is the digest of a block: keyed under k, or plain BLAKE3-256
// when k is nil.
func (k *Key) blockDigest(b []byte) Digest {
	if k == nil {
		return blake3.Sum256(b)
	}
	return k.sum(b)
}

// OpenPayload returns the payload of rec, a DATA record of an encrypted
// file, authenticated and decrypted in place: the encoded data (zstd or
// raw, as rec.Compressed says) that a Writer takes, which is how records
// are copied into another file under the same key (merging a chain, under
// the new file's salt). Under another key the digests differ: the data is
// decoded and encoded again (an Encoder given that key). A payload of a
// file that is not encrypted is returned as it is.
func OpenPayload(rec *Record, payload []byte) ([]byte, error) {
	if rec.crypt == nil {
		return payload, nil
	}
	return rec.crypt.openPayload(rec, payload)
}

// Encrypted reports whether the record belongs to an encrypted file: its
// payload is sealed and its digests keyed.
func (r *Record) Encrypted() bool { return r.crypt != nil }

// EncodedLen returns the length of the record's encoded payload (zstd or
// raw): PayloadLen, less the AEAD's tag for an encrypted record. After
// Decode or OpenPayload, the payload buffer's first EncodedLen bytes are
// the encoded payload, which a Writer takes (a merge copying a whole
// record into a file under the same key).
func (r *Record) EncodedLen() int64 {
	if r.crypt != nil {
		return r.PayloadLen - aeadOverhead
	}
	return r.PayloadLen
}

func recordError(rec *Record, sentinel error, detail string) error {
	return &FormatError{Offset: rec.Pos, Record: rec.Num, Err: sentinel, Detail: detail}
}
