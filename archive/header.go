package archive

import (
	"encoding/binary"
	"fmt"
	"time"
	"unicode/utf8"
)

// Header describes the snapshot a delta file holds and the parent it is
// relative to. It is everything needed to apply the file without a catalog.
type Header struct {
	// Version is the format version; set by the Reader, ignored by the Writer.
	Version int

	Required Feature // features a reader must know
	Optional Feature // features a reader may ignore

	BlockSize int64 // bytes; digests are per block
	Codec     Codec
	Hash      Hash

	VolumeName string
	VolumeUUID string // empty when unknown
	VolumeSize int64  // bytes, in this snapshot

	Snapshot Snapshot
	Parent   Snapshot // zero ID for a full
	// ParentSize is the volume size in the parent snapshot (0 for a full).
	ParentSize int64

	Tool  string // writer name and version
	Attrs []Attr // source details, for people and catalog rebuilds

	// Encryption (Required has FeatureEncrypted; see docs/FORMAT.md
	// "Encryption"). A Writer given a key sets KeyID, AEAD and ParentTag
	// itself.
	KeyID KeyID
	AEAD  AEAD
	// ParentTag binds an encrypted incremental to its parent snapshot
	// (Key.ParentTag: a MAC of the volume and the parent's id and size),
	// so that any file of that snapshot, a merged one too, is its parent
	// and no other file is. Zero in a full and in a snapback file, whose
	// parent is the state of a target rather than a snapshot.
	ParentTag Digest

	// ResumeFrom is, in a resumed file (Required has FeatureResumed), the
	// volume offset its records start at: it continues an interrupted
	// transfer of the file of the same snapshot and parent, whose records
	// below it the receiver holds. A Writer given a header with it set
	// marks the file resumed, and Send reads nothing of the source below
	// it. Zero in every other file.
	ResumeFrom int64

	salt [SaltSize]byte
	mac  Digest // the header MAC read, checked by a Reader with a key
}

// IsEncrypted reports whether the file is encrypted.
func (h *Header) IsEncrypted() bool { return h.Required&FeatureEncrypted != 0 }

// Snapshot names one state of a volume.
type Snapshot struct {
	ID   ID
	Name string
	Time time.Time
}

// Describe names the snapshot for messages: its name, ID and time, or its
// ID alone when it has no name.
func (s Snapshot) Describe() string {
	if s.Name == "" {
		return s.ID.String()
	}
	d := fmt.Sprintf("%s (%s", s.Name, s.ID)
	if !s.Time.IsZero() {
		d += ", " + s.Time.UTC().Format(time.RFC3339)
	}
	return d + ")"
}

// Attr is a header attribute: a key such as "lvm.lv_uuid" and its value.
type Attr struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// IsResumed reports whether the file is a resumed file (see ResumeFrom).
func (h *Header) IsResumed() bool { return h.Required&FeatureResumed != 0 }

// IsFull reports whether the file is a full (has no parent).
func (h *Header) IsFull() bool { return h.Parent.ID.IsZero() }

// IsSnapback reports whether the file is an undo file written by apply.
func (h *Header) IsSnapback() bool { return h.Optional&FeatureSnapback != 0 }

// Attr returns the value of attribute key, or "".
func (h *Header) Attr(key string) string {
	for _, a := range h.Attrs {
		if a.Key == key {
			return a.Value
		}
	}
	return ""
}

// SetAttr sets attribute key to value, replacing an earlier value.
func (h *Header) SetAttr(key, value string) {
	for i := range h.Attrs {
		if h.Attrs[i].Key == key {
			h.Attrs[i].Value = value
			return
		}
	}
	h.Attrs = append(h.Attrs, Attr{key, value})
}

// validate checks the rules of docs/FORMAT.md that do not depend on records.
// It returns a detail string, or "" when h is valid.
func (h *Header) validate() string {
	switch {
	case h.BlockSize < MinBlockSize || h.BlockSize > MaxBlockSize || h.BlockSize%MinBlockSize != 0:
		return fmt.Sprintf("block size %d is not a multiple of %d between %d and %d", h.BlockSize, MinBlockSize, MinBlockSize, MaxBlockSize)
	case h.Codec != CodecZstd:
		return fmt.Sprintf("unknown codec %d", h.Codec)
	case h.Hash != HashBLAKE3:
		return fmt.Sprintf("unknown hash %d", h.Hash)
	case h.VolumeSize < 0 || h.VolumeSize > MaxVolumeSize:
		return fmt.Sprintf("volume size %d out of range", h.VolumeSize)
	case h.ParentSize < 0 || h.ParentSize > MaxVolumeSize:
		return fmt.Sprintf("parent volume size %d out of range", h.ParentSize)
	case h.Snapshot.ID.IsZero():
		return "snapshot id is zero"
	case h.Snapshot.ID == h.Parent.ID:
		return "snapshot is its own parent"
	case h.IsFull() && (h.ParentSize != 0 || h.Parent.Name != "" || !h.Parent.Time.IsZero()):
		return "a full has parent details but no parent id"
	case h.IsEncrypted() && h.AEAD != AEADAES256GCM:
		return fmt.Sprintf("unknown AEAD %d", h.AEAD)
	case h.IsEncrypted() && h.KeyID.IsZero():
		return "encrypted file without a key id"
	case !h.IsEncrypted() && (h.ParentTag != Digest{} || !h.KeyID.IsZero()):
		return "a key id or parent tag in a file that is not encrypted"
	case h.IsEncrypted() && h.IsFull() && h.ParentTag != Digest{}:
		return "a full has a parent tag"
	case h.IsEncrypted() && !h.IsFull() && !h.IsSnapback() && h.ParentTag == Digest{}:
		return "an encrypted incremental without its parent's tag"
	case h.IsResumed() && (h.ResumeFrom <= 0 || h.ResumeFrom%h.BlockSize != 0):
		return fmt.Sprintf("resume offset %d is not a positive multiple of the block size %d", h.ResumeFrom, h.BlockSize)
	case h.IsResumed() && h.ResumeFrom > h.VolumeSize:
		return fmt.Sprintf("resume offset %d is beyond the volume size %d", h.ResumeFrom, h.VolumeSize)
	case !h.IsResumed() && h.ResumeFrom != 0:
		return fmt.Sprintf("resume offset %d in a file that is not resumed", h.ResumeFrom)
	case h.IsResumed() && h.IsSnapback():
		return "a snapback file cannot be resumed"
	case len(h.Attrs) > maxAttrs:
		return fmt.Sprintf("%d attributes, at most %d", len(h.Attrs), maxAttrs)
	}
	for _, s := range []struct{ name, v string }{
		{"volume name", h.VolumeName}, {"volume uuid", h.VolumeUUID},
		{"snapshot name", h.Snapshot.Name}, {"parent name", h.Parent.Name}, {"tool", h.Tool},
	} {
		if d := checkString(s.name, s.v); d != "" {
			return d
		}
	}
	seen := make(map[string]bool, len(h.Attrs))
	for _, a := range h.Attrs {
		if d := checkString("attribute key", a.Key); d != "" {
			return d
		}
		if a.Key == "" {
			return "empty attribute key"
		}
		if d := checkString("attribute "+a.Key, a.Value); d != "" {
			return d
		}
		if seen[a.Key] {
			return "duplicate attribute " + a.Key
		}
		seen[a.Key] = true
	}
	return ""
}

func checkString(what, s string) string {
	if len(s) > maxString {
		return fmt.Sprintf("%s is %d bytes, at most %d", what, len(s), maxString)
	}
	if !utf8.ValidString(s) {
		return what + " is not UTF-8"
	}
	return ""
}

// appendBody appends the header body (docs/FORMAT.md "Header") to b.
func (h *Header) appendBody(b []byte) []byte {
	le := binary.LittleEndian
	b = le.AppendUint64(b, uint64(h.Required))
	b = le.AppendUint64(b, uint64(h.Optional))
	b = le.AppendUint32(b, uint32(h.BlockSize))
	b = append(b, byte(h.Codec), byte(h.Hash), 0, 0)
	b = le.AppendUint64(b, uint64(h.VolumeSize))
	b = append(b, h.Snapshot.ID[:]...)
	b = le.AppendUint64(b, uint64(unixNano(h.Snapshot.Time)))
	b = append(b, h.Parent.ID[:]...)
	b = le.AppendUint64(b, uint64(unixNano(h.Parent.Time)))
	b = le.AppendUint64(b, uint64(h.ParentSize))
	for _, s := range []string{h.VolumeName, h.VolumeUUID, h.Snapshot.Name, h.Parent.Name, h.Tool} {
		b = appendString(b, s)
	}
	b = le.AppendUint16(b, uint16(len(h.Attrs)))
	for _, a := range h.Attrs {
		b = appendString(b, a.Key)
		b = appendString(b, a.Value)
	}
	if h.IsEncrypted() {
		b = append(b, byte(h.AEAD), byte(KDFHKDFSHA256), 0, 0)
		b = append(b, h.KeyID[:]...)
		b = append(b, h.salt[:]...)
		b = append(b, h.ParentTag[:]...)
	}
	if h.IsResumed() {
		b = le.AppendUint64(b, uint64(h.ResumeFrom))
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.LittleEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

// unixNano maps the zero time to 0 so that "no time" survives a round trip.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// parseBody decodes a header body. It returns a detail string on error.
//
// The body of an encrypted file ends with the header MAC, kept in h.mac;
// the encryption section follows the attributes.
func parseBody(b []byte) (*Header, string) {
	encrypted := len(b) >= 8 && Feature(binary.LittleEndian.Uint64(b))&FeatureEncrypted != 0
	var mac Digest
	if encrypted {
		if len(b) < minHeaderBody+encSectionLen+headerMACLen {
			return nil, "the header of an encrypted file is too short for its keys"
		}
		copy(mac[:], b[len(b)-headerMACLen:])
		b = b[:len(b)-headerMACLen]
	}
	d := decoder{b: b}
	h := &Header{Version: Version, mac: mac}
	h.Required = Feature(d.u64())
	h.Optional = Feature(d.u64())
	h.BlockSize = int64(d.u32())
	h.Codec = Codec(d.u8())
	h.Hash = Hash(d.u8())
	if d.u16() != 0 {
		return nil, "reserved header field is not zero"
	}
	vs := d.u64()
	copy(h.Snapshot.ID[:], d.bytes(16))
	h.Snapshot.Time = fromUnixNano(int64(d.u64()))
	copy(h.Parent.ID[:], d.bytes(16))
	h.Parent.Time = fromUnixNano(int64(d.u64()))
	ps := d.u64()
	if vs > MaxVolumeSize || ps > MaxVolumeSize {
		return nil, fmt.Sprintf("volume size %d or parent size %d out of range", vs, ps)
	}
	h.VolumeSize, h.ParentSize = int64(vs), int64(ps)
	h.VolumeName = d.str()
	h.VolumeUUID = d.str()
	h.Snapshot.Name = d.str()
	h.Parent.Name = d.str()
	h.Tool = d.str()
	n := int(d.u16())
	if n > maxAttrs {
		return nil, fmt.Sprintf("%d attributes, at most %d", n, maxAttrs)
	}
	for i := 0; i < n && !d.short; i++ {
		k := d.str()
		v := d.str()
		h.Attrs = append(h.Attrs, Attr{k, v})
	}
	if encrypted {
		h.AEAD = AEAD(d.u8())
		if kdf := KDF(d.u8()); kdf != KDFHKDFSHA256 && !d.short {
			return nil, fmt.Sprintf("unknown key derivation %d", kdf)
		}
		if d.u16() != 0 {
			return nil, "reserved field of the encryption section is not zero"
		}
		copy(h.KeyID[:], d.bytes(KeyIDSize))
		copy(h.salt[:], d.bytes(SaltSize))
		copy(h.ParentTag[:], d.bytes(DigestSize))
	}
	if h.IsResumed() {
		rf := d.u64()
		if rf > MaxVolumeSize {
			return nil, fmt.Sprintf("resume offset %d is beyond the volume size %d", rf, h.VolumeSize)
		}
		h.ResumeFrom = int64(rf)
	}
	if d.short {
		return nil, "header body ends inside a field"
	}
	if h.Required&^knownRequired != 0 {
		return h, "" // the caller reports ErrVersion with the bits
	}
	if detail := h.validate(); detail != "" {
		return nil, detail
	}
	return h, ""
}

// decoder reads little-endian fields from a bounded buffer; reading past the
// end sets short and yields zeroes, so parsers check once at the end.
type decoder struct {
	b     []byte
	short bool
}

func (d *decoder) bytes(n int) []byte {
	if n > len(d.b) {
		d.short = true
		d.b = nil
		return make([]byte, n)
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) u8() uint8   { return d.bytes(1)[0] }
func (d *decoder) u16() uint16 { return binary.LittleEndian.Uint16(d.bytes(2)) }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.bytes(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.bytes(8)) }

func (d *decoder) str() string {
	n := int(d.u16())
	if n > maxString {
		d.short = true
		return ""
	}
	return string(d.bytes(n))
}
