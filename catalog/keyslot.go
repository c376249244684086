package catalog

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// KeySlots are where a store keeps the key slots of an encrypted store:
// small objects, one per slot, named by the slot's id, that this package
// stores and lists as bytes without reading them (archive/keys parses
// them). A slot object is written whole or not at all and never
// replaced: a new slot gets a new id.
//
// In a directory store they are keys/<id>; in a store on object storage,
// the same names under its prefix.
type KeySlots interface {
	// KeySlots returns every slot object, by id; none when the store has
	// no keys/ (an unencrypted store).
	KeySlots() (map[string][]byte, error)
	// PutKeySlot stores a new slot object (an error wrapping fs.ErrExist
	// if the id is taken).
	PutKeySlot(id string, data []byte) error
	// RemoveKeySlot deletes a slot object (ErrNotFound if there is none).
	RemoveKeySlot(id string) error
	// LockKeySlots takes the lock of the store's key slots, held by a
	// command while it changes them (ErrLocked when another holds it).
	LockKeySlots() (unlock func() error, err error)
}

// MaxKeySlotSize bounds a key slot object: a larger one is refused when
// stored and when read, so a store cannot make a reader allocate more.
const MaxKeySlotSize = 64 << 10

// ValidKeySlotID checks a key slot id: 1 to 64 letters, digits, '-' or
// '_', so that it is a plain file or object name everywhere. Errors
// match ErrInvalidRecord.
func ValidKeySlotID(id string) error {
	ok := len(id) >= 1 && len(id) <= 64
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		ok = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_'
	}
	if !ok {
		return &RecordError{Bucket: "keys", Key: id, Err: errors.New("a key slot id is 1 to 64 letters, digits, '-' or '_'"), write: true}
	}
	return nil
}

var _ KeySlots = (*Store)(nil)

func (s *Store) keysDir() string { return filepath.Join(s.dir, "keys") }

// KeySlots returns the slot objects in keys/. Entries whose names are not
// slot ids (a temp file of a writer) are skipped; a slot name that is a
// link or special file is refused (ErrNotOwn), as is one larger than
// MaxKeySlotSize (ErrCorrupt), naming it.
func (s *Store) KeySlots() (map[string][]byte, error) {
	slots := map[string][]byte{}
	if _, err := OwnDir(s.keysDir(), false); errors.Is(err, fs.ErrNotExist) {
		return slots, nil
	} else if err != nil {
		return nil, fmt.Errorf("catalog: key slots: %w", err)
	}
	entries, err := os.ReadDir(s.keysDir())
	if err != nil {
		return nil, fmt.Errorf("catalog: key slots: %w", err)
	}
	for _, e := range entries {
		if ValidKeySlotID(e.Name()) != nil {
			continue
		}
		data, err := readKeySlot(filepath.Join(s.keysDir(), e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("catalog: key slots: %w", err)
		}
		slots[e.Name()] = data
	}
	return slots, nil
}

func readKeySlot(name string) ([]byte, error) {
	f, err := OpenOwn(name, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxKeySlotSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxKeySlotSize {
		return nil, fmt.Errorf("%s is larger than a key slot's %d bytes: not a key slot of thinback's (remove it): %w", name, MaxKeySlotSize, ErrCorrupt)
	}
	return data, nil
}

// PutKeySlot stores a new key slot as keys/<id>, making keys/ if needed:
// written under a temporary name in tmp/ and published (fsync, rename
// without replacing, fsync keys/), so it is complete or absent. An id
// that exists is an error wrapping fs.ErrExist; keys/ being a link is
// ErrNotOwn.
func (s *Store) PutKeySlot(id string, data []byte) error {
	if err := ValidKeySlotID(id); err != nil {
		return err
	}
	if len(data) > MaxKeySlotSize {
		return &RecordError{Bucket: "keys", Key: id, Err: fmt.Errorf("%d bytes, more than %d", len(data), MaxKeySlotSize), write: true}
	}
	created, err := OwnDir(s.keysDir(), true)
	if err != nil {
		return fmt.Errorf("catalog: key slot %s: %w", id, WriteError(s.keysDir(), err))
	}
	if created {
		if err := SyncDir(s.dir); err != nil {
			return fmt.Errorf("catalog: key slot %s: %w", id, WriteError(s.keysDir(), err))
		}
	}
	tmp, err := s.createTemp("key-" + id)
	if err != nil {
		return err
	}
	defer setLive(tmp.Name(), false)
	final := filepath.Join(s.keysDir(), id)
	if _, err := tmp.Write(data); err != nil {
		_ = s.Discard(tmp)
		return fmt.Errorf("catalog: key slot %s: %w", id, WriteError(tmp.Name(), err))
	}
	at("keyslot:written")
	if err := Publish(tmp, final); err != nil {
		_ = s.Discard(tmp)
		return fmt.Errorf("catalog: key slot %s: %w", id, err)
	}
	return nil
}

// RemoveKeySlot deletes keys/<id> durably; ErrNotFound if it is not there.
func (s *Store) RemoveKeySlot(id string) error {
	if err := ValidKeySlotID(id); err != nil {
		return err
	}
	if _, err := OwnDir(s.keysDir(), false); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("catalog: key slot %s: %w", id, ErrNotFound)
		}
		return fmt.Errorf("catalog: key slot %s: %w", id, err)
	}
	name := filepath.Join(s.keysDir(), id)
	if err := os.Remove(name); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("catalog: key slot %s: %w", id, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("catalog: remove key slot %s: %w", id, err)
	}
	if err := SyncDir(s.keysDir()); err != nil {
		return fmt.Errorf("catalog: remove key slot %s: %w", id, err)
	}
	return nil
}
