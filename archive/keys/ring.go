package keys

import (
	"errors"
	"fmt"
	"sort"

	"filippo.io/age"
)

// Storage is where a store keeps its key slots: one object per slot,
// named by the slot's id, written whole or not at all and never
// replaced. catalog.Store and s3store.Store implement it.
type Storage interface {
	// String names the store in messages.
	String() string
	// KeySlots returns every slot object, by id.
	KeySlots() (map[string][]byte, error)
	// PutKeySlot stores a new slot object; an id that exists is an error.
	PutKeySlot(id string, data []byte) error
	// RemoveKeySlot deletes a slot object.
	RemoveKeySlot(id string) error
}

// Ring is a store's key slots, as read by Load: the intact ones, and the
// errors of those that are damaged or of a newer format. Its methods
// change the store's slots, never its data.
//
// Two commands changing one store's slots at once could each remove a
// slot the other counted on (leaving none), or make two master keys; the
// caller serialises them.
type Ring struct {
	st      Storage
	slots   []*Slot // sorted by Created, then ID
	damaged map[string]error
}

// Load reads a store's key slots. A damaged slot does not fail Load: the
// others may still open the store (Damaged lists it). ErrNoSlots when the
// store holds none at all.
func Load(st Storage) (*Ring, error) {
	objs, err := st.KeySlots()
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, fmt.Errorf("%s: %w", st, ErrNoSlots)
	}
	r := &Ring{st: st, damaged: map[string]error{}}
	for name, data := range objs {
		s, err := Parse(data)
		if err == nil && s.ID != name {
			err = &SlotError{ID: name, Err: fmt.Errorf("the slot in it is %s", s.ID)}
		}
		if err != nil {
			var se *SlotError
			if errors.As(err, &se) {
				se.ID = name
			}
			r.damaged[name] = err
			continue
		}
		r.slots = append(r.slots, s)
	}
	r.sort()
	return r, nil
}

func (r *Ring) sort() {
	sort.Slice(r.slots, func(i, j int) bool {
		a, b := r.slots[i], r.slots[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.ID < b.ID
	})
}

// Init stores first, the first slot of a new master key, in a store that
// has no key slots yet (ErrExist otherwise), and returns the store's Ring.
func Init(st Storage, first *Slot) (*Ring, error) {
	objs, err := st.KeySlots()
	if err != nil {
		return nil, err
	}
	if len(objs) > 0 {
		return nil, fmt.Errorf("%s: %w (%d): add a slot with thinback key add instead", st, ErrExist, len(objs))
	}
	if err := st.PutKeySlot(first.ID, first.Bytes()); err != nil {
		return nil, err
	}
	return &Ring{st: st, slots: []*Slot{first}, damaged: map[string]error{}}, nil
}

// Slots returns the intact slots, oldest first.
func (r *Ring) Slots() []*Slot { return append([]*Slot(nil), r.slots...) }

// Damaged returns the errors of the slots that could not be read, by id
// (SlotErrors matching ErrCorrupt or ErrVersion).
func (r *Ring) Damaged() map[string]error {
	m := make(map[string]error, len(r.damaged))
	for id, err := range r.damaged {
		m[id] = err
	}
	return m
}

// keyID returns the id of the master key the intact slots wrap, and a
// MixedKeysError if they do not all wrap the same.
func (r *Ring) keyID() (KeyID, bool, error) {
	byKey := map[KeyID][]string{}
	for _, s := range r.slots {
		byKey[s.KeyID] = append(byKey[s.KeyID], s.ID)
	}
	if len(byKey) > 1 {
		return KeyID{}, false, &MixedKeysError{Store: r.st.String(), Keys: byKey}
	}
	for id := range byKey {
		return id, true, nil
	}
	return KeyID{}, false, nil
}

// unlock tries open on every intact slot of type t, oldest first, and
// returns the master key of the first that opens.
func (r *Ring) unlock(t Type, open func(*Slot) (*MasterKey, error)) (*MasterKey, *Slot, error) {
	if _, _, err := r.keyID(); err != nil {
		return nil, nil, err
	}
	ue := &UnlockError{Store: r.st.String(), Type: t}
	for _, id := range sortedIDs(r.damaged) {
		ue.Damaged = append(ue.Damaged, r.damaged[id])
	}
	for _, s := range r.slots {
		if s.Type != t {
			continue
		}
		mk, err := open(s)
		switch {
		case err == nil:
			return mk, s, nil
		case errors.Is(err, ErrWrongKey):
			ue.Tried = append(ue.Tried, s.ID)
		case errors.Is(err, ErrCorrupt):
			ue.Damaged = append(ue.Damaged, err)
		default:
			return nil, nil, err
		}
	}
	return nil, nil, ue
}

// UnlockPassphrase returns the master key from the first passphrase slot
// the passphrase opens, and that slot. Each slot tried takes its Argon2id
// time. A passphrase that opens none is an UnlockError (ErrWrongKey).
func (r *Ring) UnlockPassphrase(passphrase []byte) (*MasterKey, *Slot, error) {
	return r.unlock(TypePassphrase, func(s *Slot) (*MasterKey, error) { return s.OpenPassphrase(passphrase) })
}

// UnlockKeyFile is UnlockPassphrase for a key file.
func (r *Ring) UnlockKeyFile(kf *KeyFile) (*MasterKey, *Slot, error) {
	return r.unlock(TypeKeyFile, func(s *Slot) (*MasterKey, error) { return s.OpenKeyFile(kf) })
}

// UnlockRecovery is UnlockPassphrase for age identities and the recovery
// slots.
//
// Anyone who can write to the store can make a recovery slot (it needs
// only the public recipient), so a master key from one is to be trusted
// only when it is the key the store's data is under or the one the host
// remembers; the slots of one store wrapping different keys are refused
// (MixedKeysError) before any is tried.
func (r *Ring) UnlockRecovery(identities ...age.Identity) (*MasterKey, *Slot, error) {
	return r.unlock(TypeRecovery, func(s *Slot) (*MasterKey, error) { return s.OpenRecovery(identities...) })
}

// Add stores s, a new slot wrapping mk, the store's master key (a slot
// of another key is refused).
func (r *Ring) Add(mk *MasterKey, s *Slot) error {
	id, ok, err := r.keyID()
	if err != nil {
		return err
	}
	if s.KeyID != mk.ID() || (ok && id != s.KeyID) {
		return fmt.Errorf("%s: slot %s wraps master key %s, and the store's is %s: refusing to add it: %w", r.st, s.ID, s.KeyID, id, ErrInvalid)
	}
	if err := r.st.PutKeySlot(s.ID, s.Bytes()); err != nil {
		return err
	}
	r.slots = append(r.slots, s)
	r.sort()
	return nil
}

// Remove deletes the slot id, intact or damaged. Removing the last intact
// slot is refused (LastSlotError, ErrLastSlot); an id the store does not
// have is ErrNotFound.
func (r *Ring) Remove(id string) error {
	if _, ok := r.damaged[id]; ok {
		if err := r.st.RemoveKeySlot(id); err != nil {
			return err
		}
		delete(r.damaged, id)
		return nil
	}
	i := r.index(id)
	if i < 0 {
		return fmt.Errorf("%s: key slot %s: %w", r.st, printableID(id), ErrNotFound)
	}
	if len(r.slots) == 1 {
		return &LastSlotError{Store: r.st.String(), ID: id}
	}
	if err := r.st.RemoveKeySlot(id); err != nil {
		return err
	}
	r.slots = append(r.slots[:i], r.slots[i+1:]...)
	return nil
}

func (r *Ring) index(id string) int {
	for i, s := range r.slots {
		if s.ID == id {
			return i
		}
	}
	return -1
}

// Passwd replaces the passphrase slot id with one under newPassphrase
// (stretched under p), keeping its label; mk is the store's master key,
// unlocked by any slot (the old passphrase, a key file, or the recovery
// identity when the passphrase is lost). The data is not touched: the new
// slot wraps the same master key. It is stored before the old one is
// removed, so a crash in between leaves both, each with its passphrase.
// The new slot, with a new id, is returned.
func (r *Ring) Passwd(mk *MasterKey, id string, newPassphrase []byte, p Argon2Params) (*Slot, error) {
	i := r.index(id)
	if i < 0 {
		return nil, fmt.Errorf("%s: key slot %s: %w", r.st, printableID(id), ErrNotFound)
	}
	old := r.slots[i]
	if err := old.want(TypePassphrase); err != nil {
		return nil, err
	}
	s, err := NewPassphraseSlot(mk, newPassphrase, p, old.Label)
	if err != nil {
		return nil, err
	}
	if err := r.Add(mk, s); err != nil {
		return nil, err
	}
	if err := r.Remove(id); err != nil {
		return nil, fmt.Errorf("the new slot %s is stored, but the old one could not be removed (remove it with thinback key remove %s): %w", s.ID, id, err)
	}
	return s, nil
}

func sortedIDs(m map[string]error) []string {
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}
