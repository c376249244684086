package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// keysDir holds the key slots of an encrypted store, keys/<id>, as in a
// directory store (see catalog.KeySlots).
const keysDir = "keys/"

var _ catalog.KeySlots = (*Store)(nil)

// KeySlots returns the slot objects under keys/, by id. Objects whose
// names are not slot ids are skipped; one larger than
// catalog.MaxKeySlotSize is refused (s3.ErrTooLarge), naming it.
func (s *Store) KeySlots() (map[string][]byte, error) {
	var ids []string
	err := s.s3.List(s.ctx, keysDir, func(oi s3.ObjectInfo) error {
		if id, ok := strings.CutPrefix(oi.Name, keysDir); ok && catalog.ValidKeySlotID(id) == nil {
			ids = append(ids, id)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(ids)
	slots := make(map[string][]byte, len(ids))
	for _, id := range ids {
		data, _, err := s.s3.Get(s.ctx, keysDir+id, catalog.MaxKeySlotSize)
		if errors.Is(err, s3.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		slots[id] = data
	}
	return slots, nil
}

// PutKeySlot stores a new slot object with a conditional create, so it
// never replaces one: an id that exists is an error matching both
// s3.ErrExist and fs.ErrExist. A single PUT, it is complete or absent.
func (s *Store) PutKeySlot(id string, data []byte) error {
	if err := catalog.ValidKeySlotID(id); err != nil {
		return err
	}
	if len(data) > catalog.MaxKeySlotSize {
		return fmt.Errorf("store %s: key slot %s: %d bytes, more than %d: %w", s.loc, id, len(data), catalog.MaxKeySlotSize, catalog.ErrInvalidRecord)
	}
	_, err := s.s3.Create(s.ctx, keysDir+id, data)
	if errors.Is(err, s3.ErrExist) {
		// A create whose answer was lost and that minio-go retried comes
		// back so too: the object is then ours, byte for byte.
		if got, _, gerr := s.s3.Get(s.ctx, keysDir+id, catalog.MaxKeySlotSize); gerr == nil && bytes.Equal(got, data) {
			return nil
		}
		return fmt.Errorf("%w (%w)", err, fs.ErrExist)
	}
	return err
}

// RemoveKeySlot deletes a slot object; catalog.ErrNotFound if there is
// none.
func (s *Store) RemoveKeySlot(id string) error {
	if err := catalog.ValidKeySlotID(id); err != nil {
		return err
	}
	if _, err := s.s3.Stat(s.ctx, keysDir+id); errors.Is(err, s3.ErrNotFound) {
		return fmt.Errorf("store %s: key slot %s: %w", s.loc, id, catalog.ErrNotFound)
	} else if err != nil {
		return err
	}
	return s.s3.Delete(s.ctx, keysDir+id)
}

// keySlotsLock is the lock object of the key slots. DirName escapes a
// leading dot, so no volume's lock object has this name.
const keySlotsLock = locksDir + ".keys.lock"

// LockKeySlots takes the lock object of the store's key slots, as
// LockVolume takes a volume's (renewed while held; a lock of this host's
// killed run is broken, a stale one only with Options.BreakStaleLocks).
// Commands that change the slots hold it. When it is held the error is a
// *LockedError with no Volume (catalog.ErrLocked).
func (s *Store) LockKeySlots() (unlock func() error, err error) {
	l, err := s.s3.Lock(s.ctx, keySlotsLock, s.opts.LockTTL)
	var le *s3.LockedError
	if errors.As(err, &le) {
		e := s.lockedError("", le)
		if !e.Gone && !((e.Stale || e.Dead) && s.opts.BreakStaleLocks) {
			return nil, e
		}
		l, err = s.breakLock(e)
	}
	if err != nil {
		return nil, err
	}
	return func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(s.ctx), releaseTimeout)
		defer cancel()
		return l.Release(ctx)
	}, nil
}
