package keys

import (
	"errors"
	"fmt"
	"strings"
)

// Errors of key slots and key files. Callers compare with errors.Is; the
// types below carry the slot, the file or the store involved.
var (
	// ErrWrongKey: the passphrase, key file or age identity opens none of
	// the store's slots of its kind. See UnlockError.
	ErrWrongKey = errors.New("wrong passphrase or key")

	// ErrCorrupt: a key slot is damaged (its checksum, its JSON, a field
	// out of bounds), or the slots in one store wrap different master
	// keys. See SlotError and MixedKeysError.
	ErrCorrupt = errors.New("key slot is damaged")

	// ErrVersion: a key slot of a format version this thinback does not
	// read, written by a newer one. See SlotError.
	ErrVersion = errors.New("key slot format version not supported")

	// ErrLastSlot: removing the store's last intact slot would make its
	// backups unreadable. See LastSlotError.
	ErrLastSlot = errors.New("refusing to remove the last key slot")

	// ErrNotFound: no slot of that id in the store.
	ErrNotFound = errors.New("no such key slot")

	// ErrNoSlots: the store holds no key slot at all.
	ErrNoSlots = errors.New("store has no key slots")

	// ErrExist: Init of a store that already has key slots.
	ErrExist = errors.New("store already has key slots")

	// ErrSlotType: an operation of one kind of slot asked of another
	// (a new passphrase for a key-file slot).
	ErrSlotType = errors.New("key slot of another type")

	// ErrKeyFile: a key file that is not one, or that is not safe to
	// use (a symbolic link, readable by others). See KeyFileError.
	ErrKeyFile = errors.New("not a usable key file")

	// ErrInvalid: what was given to make a slot is out of bounds: an
	// empty passphrase, Argon2id parameters outside the limits a slot
	// may hold, a label too long or with control characters.
	ErrInvalid = errors.New("invalid key slot parameters")
)

// SlotError reports a key slot that does not parse or validate: damaged
// (errors.Is(err, ErrCorrupt)) or of a newer format (ErrVersion).
type SlotError struct {
	ID      string // the slot's id, as the store names it
	Err     error  // what is wrong
	version bool
}

func (e *SlotError) Error() string {
	if e.version {
		return fmt.Sprintf("key slot %s: %v: upgrade thinback to use it", e.ID, e.Err)
	}
	return fmt.Sprintf("key slot %s is damaged (%v): unlock with another slot, then remove it and add a new one", e.ID, e.Err)
}

// Is makes errors.Is match ErrCorrupt or ErrVersion.
func (e *SlotError) Is(target error) bool {
	if e.version {
		return target == ErrVersion
	}
	return target == ErrCorrupt
}

// Unwrap returns what is wrong.
func (e *SlotError) Unwrap() error { return e.Err }

// UnlockError reports a secret that opened no slot. It matches
// ErrWrongKey when at least one intact slot of the secret's kind was
// tried (or the store has none of that kind), and ErrCorrupt when every
// slot of its kind is damaged, so that whether the secret is right cannot
// be known. Damaged slots are named in the message either way.
type UnlockError struct {
	Store   string   // the store, for the message
	Type    Type     // the kind of secret given
	Tried   []string // the ids of the intact slots it did not open
	Damaged []error  // the slots that could not be tried (SlotErrors)
}

func (e *UnlockError) Error() string {
	var b strings.Builder
	switch {
	case len(e.Tried) > 0:
		fmt.Fprintf(&b, "%s opens none of the %s slots of %s (%s)", e.Type.secret(), e.Type, e.Store, strings.Join(e.Tried, ", "))
		b.WriteString(": " + e.Type.wrong())
	case len(e.Damaged) > 0:
		fmt.Fprintf(&b, "%s could not be checked: every slot of %s that it could open is damaged", e.Type.secret(), e.Store)
	default:
		fmt.Fprintf(&b, "%s has no %s slot, so %s opens nothing: use another key (thinback key list shows the slots)", e.Store, e.Type, e.Type.secret())
	}
	for _, d := range e.Damaged {
		b.WriteString("; " + d.Error())
	}
	return b.String()
}

// Is makes errors.Is match ErrWrongKey or ErrCorrupt (see UnlockError).
func (e *UnlockError) Is(target error) bool {
	if len(e.Tried) == 0 && len(e.Damaged) > 0 {
		return target == ErrCorrupt
	}
	return target == ErrWrongKey
}

// MixedKeysError reports a store whose slots wrap different master keys:
// a slot copied from another store, or one someone made to have thinback
// use their key. It matches ErrCorrupt.
type MixedKeysError struct {
	Store string
	Keys  map[KeyID][]string // master key id -> ids of the slots that wrap it
}

func (e *MixedKeysError) Error() string {
	var groups []string
	for _, id := range sortedKeyIDs(e.Keys) {
		groups = append(groups, fmt.Sprintf("key %s in slots %s", id, strings.Join(e.Keys[id], ", ")))
	}
	return fmt.Sprintf("the key slots of %s wrap %d different master keys (%s): refusing to choose one; "+
		"remove the slots you did not make (thinback key remove), and check who could write to the store",
		e.Store, len(e.Keys), strings.Join(groups, "; "))
}

// Is makes errors.Is(err, ErrCorrupt) true.
func (e *MixedKeysError) Is(target error) bool { return target == ErrCorrupt }

// LastSlotError reports an attempt to remove the last intact slot.
type LastSlotError struct {
	Store string
	ID    string
}

func (e *LastSlotError) Error() string {
	return fmt.Sprintf("key slot %s is the last intact key slot of %s: without it nothing in the store can be read again; "+
		"add another slot first (thinback key add)", e.ID, e.Store)
}

// Is makes errors.Is(err, ErrLastSlot) true.
func (e *LastSlotError) Is(target error) bool { return target == ErrLastSlot }

// KeyFileError reports a key file that is refused: what was found, and
// what to do.
type KeyFileError struct {
	Path    string
	Problem string // "is a symbolic link", "is readable by group or others (mode 0644)", ...
	Fix     string
	Err     error // the underlying error, if any
}

func (e *KeyFileError) Error() string {
	msg := "key file " + e.Problem
	if e.Path != "" {
		msg = fmt.Sprintf("key file %s %s", e.Path, e.Problem)
	}
	if e.Fix != "" {
		msg += ": " + e.Fix
	}
	return msg
}

// Is makes errors.Is(err, ErrKeyFile) true.
func (e *KeyFileError) Is(target error) bool { return target == ErrKeyFile }

// Unwrap returns the underlying error.
func (e *KeyFileError) Unwrap() error { return e.Err }
