package keys

import (
	"crypto/rand"
	"encoding/hex"
	"sort"

	"github.com/thinback/thinback/archive"
)

// KeySize is the size of a master key: 256 bits.
const KeySize = 32

// MasterKey is a store's master key, unwrapped. It exists in memory only:
// slots keep it wrapped, and nothing in this package writes it otherwise.
// Call Destroy when done with it.
type MasterKey struct {
	key [KeySize]byte
}

// NewMasterKey returns a new random master key.
func NewMasterKey() (*MasterKey, error) {
	k := new(MasterKey)
	if _, err := rand.Read(k.key[:]); err != nil {
		return nil, err
	}
	return k, nil
}

// Bytes returns the key itself, for deriving the keys that encrypt delta
// files. The slice is the MasterKey's own memory: do not keep or change
// it past Destroy.
func (k *MasterKey) Bytes() []byte { return k.key[:] }

// ID returns the key's id: a name for it that reveals nothing of it.
func (k *MasterKey) ID() KeyID { return archive.MasterKeyID(k.key[:]) }

// Destroy overwrites the key in memory.
func (k *MasterKey) Destroy() { clear(k.key[:]) }

// KeyID names a master key: the first 8 bytes of HKDF-SHA256 of the key
// with the info "thinback key id v1" (docs/FORMAT.md, "Key slots"), the
// id its delta files name too. Every slot records the id of the key it
// wraps, so a store's slots can be listed, and slots of different keys
// told apart, without unlocking any.
type KeyID = archive.KeyID

// parseKeyID parses 16 lowercase hex digits.
func parseKeyID(s string) (KeyID, bool) {
	var id KeyID
	if !isLowerHex(s, 2*len(id)) {
		return id, false
	}
	_, err := hex.Decode(id[:], []byte(s))
	return id, err == nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func sortedKeyIDs(m map[KeyID][]string) []KeyID {
	ids := make([]KeyID, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
	return ids
}
