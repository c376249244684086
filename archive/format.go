package archive

// Byte layout of a delta file (docs/FORMAT.md). All integers little-endian.
//
//	file    = header || record* || end
//	header  = magic[8] || version u16 || header_len u32 || body || header_tag[32]
//	record  = rhdr[12] || meta || tag[32] || payload
//	rhdr    = type u8 || flags u8 || reserved u16 || meta_len u32 || payload_len u32
//	tag_i   = BLAKE3(tag_{i-1} || rhdr_i || meta_i), tag_0 = header_tag
const (
	// Version is the format version this package writes and reads.
	Version = 1

	magic = "\x89TBK\r\n\x1a\n"

	// MaxDataLen bounds the uncompressed data of one DATA record, and so the
	// memory a reader or writer needs per record in flight.
	MaxDataLen = 4 << 20
	// MinBlockSize and MaxBlockSize bound the header's block size, which must
	// also be a multiple of MinBlockSize.
	MinBlockSize = 4096
	MaxBlockSize = MaxDataLen
	// DefaultBlockSize is the block size for sources without one of their own
	// (files, block devices): small enough that a 4 KiB write costs one
	// compressed 64 KiB block, large enough that BLAKE3 runs at full speed and
	// digests cost 0.05 % of the data.
	DefaultBlockSize = 64 << 10

	// MaxVolumeSize keeps every offset + length far from int64 overflow.
	MaxVolumeSize = 1 << 62

	DigestSize = 32

	fixedHeaderLen  = 8 + 2 + 4 // magic, version, header_len
	maxHeaderBody   = 64 << 10
	minHeaderBody   = 64
	maxString       = 4096
	maxAttrs        = 256
	rhdrLen         = 12
	dataMetaFixed   = 8 + 4
	maxDataMeta     = dataMetaFixed + DigestSize*(MaxDataLen/MinBlockSize)
	zeroMetaLen     = 8 + 8
	endMetaLen      = 4 * 8
	maxOptionalMeta = 64 << 10
	maxPayload      = MaxDataLen
)

// Record types. Types with the high bit set are optional: readers that do not
// know one skip it.
const (
	typeData     = 1
	typeZero     = 2
	typeEnd      = 3
	typeOptional = 0x80
)

// Payload encodings of a DATA record (rhdr flags bits 0-1).
const (
	encRaw  = 0
	encZstd = 1
	encMask = 3
)

// Codec is the header's compression codec for DATA payloads.
type Codec uint8

// CodecZstd is the only codec of version 1.
const CodecZstd Codec = 1

// Hash is the header's digest algorithm.
type Hash uint8

// HashBLAKE3 (BLAKE3-256) is the only hash of version 1.
const HashBLAKE3 Hash = 1

// Feature is a bit set of header features.
type Feature uint64

// Optional features. A reader may ignore optional bits it does not know.
const (
	// FeatureSnapback marks an undo file written by apply --snapback.
	FeatureSnapback Feature = 1 << 0
)

// Required features. A reader refuses a file with a required bit it does
// not know.
const (
	// FeatureEncrypted marks an encrypted file (docs/FORMAT.md
	// "Encryption"): record metadata and payloads sealed with an AEAD, the
	// header authenticated, block digests keyed.
	FeatureEncrypted Feature = 1 << 0
	// FeatureResumed marks a resumed file (docs/FORMAT.md "Features"):
	// the records at and after Header.ResumeFrom of the file it
	// continues, and nothing below.
	FeatureResumed Feature = 1 << 1
)

// Required features a reader of this package understands; a file that
// sets any other required bit is refused with ErrVersion.
const knownRequired = FeatureEncrypted | FeatureResumed

// Sizes of the encryption section of an encrypted file's header body:
// aead u8 || kdf u8 || reserved u16 || key_id[8] || salt[32] || parent_tag[32],
// and the header MAC that ends the body.
const (
	encSectionLen = 1 + 1 + 2 + KeyIDSize + SaltSize + DigestSize
	headerMACLen  = DigestSize
	// endClearLen is what an encrypted file's END record keeps in the clear
	// before its sealed counts: the chain link before it and the number of
	// records (so END is authenticated from the file's tail alone).
	endClearLen = DigestSize + 8
	// sealedEndLen is the length of an encrypted file's END record.
	sealedEndLen = rhdrLen + endClearLen + endMetaLen + aeadOverhead + DigestSize
)
