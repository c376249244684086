package archive

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
)

// Encryption of a delta file (docs/FORMAT.md "Encryption"). A Key is made
// from a master key, a random secret held by whoever owns the store; every
// key used in a file is derived from it with HKDF-SHA256, under an info
// string per purpose and, for the keys that encrypt, the file's random
// salt, so no two files share an encryption key and the record numbers
// can serve as nonces.
const (
	// MasterKeySize is the size of a master key: 256 bits.
	MasterKeySize = 32
	// KeyIDSize is the size of a key id, the part of a key a file names in
	// the clear.
	KeyIDSize = 8
	// SaltSize is the size of a file's random salt.
	SaltSize = 32
	// aeadOverhead is what sealing adds to a plaintext: the AEAD's tag.
	aeadOverhead = 16
	nonceSize    = 12

	infoKeyID   = "thinback key id v1"
	infoMAC     = "thinback mac v1"
	infoDigest  = "thinback block digest v1"
	infoMeta    = "thinback record metadata v1"
	infoPayload = "thinback payload v1"

	// Domain separation of the uses of the MAC key.
	macHeader    = "thinback header\x00"
	macFileTag   = "thinback file tag\x00"
	macParentTag = "thinback parent\x00"
)

// AEAD is the header's authenticated cipher for records.
type AEAD uint8

// AEADAES256GCM is AES-256-GCM (NIST SP 800-38D), the only AEAD of version
// 1: with AES-NI it seals faster than XChaCha20-Poly1305 on the machines
// thinback backs up, from the standard library (BENCHMARKS.md "Encryption
// (format)").
const AEADAES256GCM AEAD = 1

// KDF is the header's key derivation.
type KDF uint8

// KDFHKDFSHA256 is HKDF with SHA-256 (RFC 5869).
const KDFHKDFSHA256 KDF = 1

// A KeyID names a master key without revealing it: the first 8 bytes of
// HKDF-SHA256(master, info "thinback key id v1").
type KeyID [KeyIDSize]byte

// String returns the id in hexadecimal, as messages name it.
func (id KeyID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether the id is unset.
func (id KeyID) IsZero() bool { return id == KeyID{} }

// A Key encrypts and authenticates delta files. It is safe for concurrent
// use.
type Key struct {
	master [MasterKeySize]byte
	id     KeyID
	mac    [32]byte
	// digests holds keyed BLAKE3 hashers of block digests: a Hasher
	// carries an 8 KiB buffer, too much to allocate per block.
	digests sync.Pool
	zeros   sync.Map // keyed digests of zero blocks, by length
}

// NewKey returns the Key of master, a secret of MasterKeySize random
// bytes.
func NewKey(master []byte) (*Key, error) {
	if len(master) != MasterKeySize {
		return nil, fmt.Errorf("archive: a master key is %d bytes, not %d", MasterKeySize, len(master))
	}
	k := &Key{id: MasterKeyID(master)}
	copy(k.master[:], master)
	copy(k.mac[:], derive(master, nil, infoMAC, 32))
	dk := derive(master, nil, infoDigest, 32)
	if _, err := blake3.NewKeyed(dk); err != nil {
		return nil, err
	}
	k.digests.New = func() any {
		h, _ := blake3.NewKeyed(dk)
		return h
	}
	return k, nil
}

// ID returns the key's id.
func (k *Key) ID() KeyID { return k.id }

// MasterKeyID returns the id of the master key master: the id its files
// and its key slots name it by.
func MasterKeyID(master []byte) KeyID {
	var id KeyID
	copy(id[:], derive(master, nil, infoKeyID, KeyIDSize))
	return id
}

// FileTag returns the tag of the file whose digest (Trailer.Digest, the
// last link of its chain) is d: a MAC under the key, which only a holder
// of the key can compute. A catalog or a host may keep it, to know a file
// is the one it was; an incremental is bound to its parent by the
// parent's identity instead (ParentTag), which survives a merge.
func (k *Key) FileTag(d Digest) Digest {
	h, _ := blake3.NewKeyed(k.mac[:])
	_, _ = h.WriteString(macFileTag)
	_, _ = h.Write(d[:])
	var t Digest
	h.Sum(t[:0])
	return t
}

// headerMAC returns the MAC of a header's bytes.
func (k *Key) headerMAC(b []byte) Digest {
	h, _ := blake3.NewKeyed(k.mac[:])
	_, _ = h.WriteString(macHeader)
	_, _ = h.Write(b)
	var t Digest
	h.Sum(t[:0])
	return t
}

// sum is the keyed block digest of b.
func (k *Key) sum(b []byte) Digest {
	h := k.digests.Get().(*blake3.Hasher)
	h.Reset() // keeps the key
	_, _ = h.Write(b)
	var d Digest
	h.Sum(d[:0])
	k.digests.Put(h)
	return d
}

// derive is HKDF-SHA256. It cannot fail for the lengths used here.
func derive(secret, salt []byte, info string, n int) []byte {
	b, err := hkdf.Key(sha256.New, secret, salt, info, n)
	if err != nil {
		panic("archive: hkdf: " + err.Error())
	}
	return b
}

// fileCrypt holds the keys of one file: those of its key, and the AEADs
// derived with its salt.
type fileCrypt struct {
	key     *Key
	salt    [SaltSize]byte
	meta    cipher.AEAD
	payload cipher.AEAD
}

func (k *Key) file(salt [SaltSize]byte) *fileCrypt {
	return &fileCrypt{key: k, salt: salt,
		meta: newGCM(derive(k.master[:], salt[:], infoMeta, 32)), payload: newGCM(derive(k.master[:], salt[:], infoPayload, 32))}
}

func newGCM(key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		panic("archive: aes: " + err.Error())
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic("archive: gcm: " + err.Error())
	}
	return g
}

// nonce is age's STREAM nonce: an 11-byte big-endian counter (the record
// number) and a last-record flag.
func nonce(num int64, last bool) [nonceSize]byte {
	var n [nonceSize]byte
	binary.BigEndian.PutUint64(n[3:11], uint64(num))
	if last {
		n[11] = 1
	}
	return n
}

// metaAD is the associated data of a record's metadata: its record
// header (the number is in the nonce), and for END the chain link before
// it, so that END's tag is a MAC under the key over the running digest of
// the whole file.
func metaAD(dst []byte, rh []byte, last bool, prev Digest) []byte {
	dst = append(dst, rh...)
	if last {
		dst = append(dst, prev[:]...)
	}
	return dst
}

// sealMeta appends the sealed metadata of record num to dst.
func (c *fileCrypt) sealMeta(dst []byte, num int64, last bool, rh []byte, prev Digest, meta []byte) []byte {
	var ad [rhdrLen + DigestSize]byte
	n := nonce(num, last)
	return c.meta.Seal(dst, n[:], meta, metaAD(ad[:0], rh, last, prev))
}

// openMeta opens sealed metadata into dst.
func (c *fileCrypt) openMeta(dst []byte, num int64, last bool, rh []byte, prev Digest, sealed []byte) ([]byte, error) {
	var ad [rhdrLen + DigestSize]byte
	n := nonce(num, last)
	return c.meta.Open(dst, n[:], sealed, metaAD(ad[:0], rh, last, prev))
}

// payloadAD is the associated data of a DATA record's payload: the file's
// salt and the record's number, kind, encoding, offset and length.
func (c *fileCrypt) payloadAD(num int64, flags byte, off, length int64) [SaltSize + 8 + 2 + 8 + 8]byte {
	var ad [SaltSize + 8 + 2 + 8 + 8]byte
	copy(ad[:], c.salt[:])
	le := binary.LittleEndian
	le.PutUint64(ad[SaltSize:], uint64(num))
	ad[SaltSize+8], ad[SaltSize+9] = typeData, flags
	le.PutUint64(ad[SaltSize+10:], uint64(off))
	le.PutUint64(ad[SaltSize+18:], uint64(length))
	return ad
}

func (c *fileCrypt) sealPayload(dst []byte, num int64, flags byte, off, length int64, p []byte) []byte {
	ad := c.payloadAD(num, flags, off, length)
	n := nonce(num, false)
	return c.payload.Seal(dst, n[:], p, ad[:])
}

// openPayload authenticates and decrypts the payload of rec in place.
func (c *fileCrypt) openPayload(rec *Record, p []byte) ([]byte, error) {
	flags := byte(encRaw)
	if rec.Compressed {
		flags = encZstd
	}
	ad := c.payloadAD(rec.Num, flags, rec.Offset, rec.Length)
	n := nonce(rec.Num, false)
	out, err := c.payload.Open(p[:0], n[:], p, ad[:])
	if err != nil {
		return nil, recordError(rec, ErrAuth, fmt.Sprintf("the payload (volume bytes %d to %d) does not authenticate under key %s: it was altered, or moved from another record or file", rec.Offset, rec.End(), c.key.id))
	}
	return out, nil
}

// An Option configures a Reader, a Writer, an Encoder or the functions
// that make them (OpenChain, ResumeWriter, RecoverWriter).
type Option func(*options)

type options struct {
	key *Key
}

// WithKey makes a Writer encrypt the file under k, and a Reader read a
// file encrypted under k. A Reader given a key refuses a file that is not
// encrypted (ErrAuth): a file put in place of an encrypted one must not
// be read just because it carries no key to check.
func WithKey(k *Key) Option { return func(o *options) { o.key = k } }

func applyOptions(opts []Option) options {
	var o options
	for _, f := range opts {
		f(&o)
	}
	return o
}

// zeroDigest is the digest of n zero bytes: keyed under k, or the cached
// plain one when k is nil.
func (k *Key) zeroDigest(n int64) Digest {
	if k == nil {
		return zeroDigest(n)
	}
	if v, ok := k.zeros.Load(n); ok {
		return v.(Digest)
	}
	d := k.sum(zeroes[:n])
	k.zeros.Store(n, d)
	return d
}
