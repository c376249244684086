package archive

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// ID identifies a snapshot: a 16-byte UUID. The zero ID means "none" (the
// parent of a full).
type ID [16]byte

// NewID returns a random ID (UUID version 4), for states that have no stable
// name of their own.
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic("archive: crypto/rand failed: " + err.Error())
	}
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	return id
}

// DeriveID returns the ID of the snapshot named key in namespace (UUID
// version 8 from BLAKE3, docs/FORMAT.md "Identities"). The same snapshot gets
// the same ID wherever it is named, so an incremental made on one host names
// the parent that a full made on another host called itself.
func DeriveID(namespace, key string) ID {
	h := blake3.New()
	h.WriteString("thinback id v1\x00")
	h.WriteString(namespace)
	h.WriteString("\x00")
	h.WriteString(key)
	var sum [32]byte
	h.Sum(sum[:0])
	var id ID
	copy(id[:], sum[:16])
	id[6] = id[6]&0x0f | 0x80
	id[8] = id[8]&0x3f | 0x80
	return id
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String formats id as a canonical UUID.
func (id ID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], id[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], id[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], id[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], id[8:10])
	b[23] = '-'
	hex.Encode(b[24:], id[10:])
	return string(b[:])
}

// ParseID parses a canonical UUID (with or without hyphens).
func ParseID(s string) (ID, error) {
	var id ID
	clean := make([]byte, 0, 32)
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			clean = append(clean, s[i])
		}
	}
	if len(clean) != 32 {
		return id, fmt.Errorf("invalid snapshot id %q: want 32 hex digits", s)
	}
	if _, err := hex.Decode(id[:], clean); err != nil {
		return id, fmt.Errorf("invalid snapshot id %q: %v", s, err)
	}
	return id, nil
}

// MarshalText implements encoding.TextMarshaler (JSON output of inspect).
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}
