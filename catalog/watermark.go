package catalog

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Watermark is the newest snapshot of a volume that this host has seen
// in an encrypted store, kept outside the store (in the host's state
// file) so that a store rolled back behind the host's back (a bucket
// restored from an older copy, the newest file deleted) is noticed: the
// store cannot lower a number it does not hold.
//
// Watermarks are kept per master key (KeyID) rather than per store
// location: the same store may be mounted at another path, and a copy
// of it elsewhere carries the same key.
type Watermark struct {
	// KeyID names the master key of the store (lower-case hex, as the
	// caller gives it: this package does not read keys).
	KeyID string `json:"key_id"`
	// Volume is the volume's name in the store.
	Volume string `json:"volume"`
	// Seq, Snapshot, Name and Time are the newest snapshot's.
	Seq      uint64    `json:"seq"`
	Snapshot string    `json:"snapshot"`
	Name     string    `json:"name,omitempty"`
	Time     time.Time `json:"time"`
	// FileDigest is the snapshot's file digest as the store recorded it
	// when the host saw it.
	FileDigest string `json:"file_digest,omitempty"`
	// Store is the store the host saw it in (its directory or address).
	Store string `json:"store,omitempty"`
	// Updated is when the record was written; PutWatermark sets it when
	// zero.
	Updated time.Time `json:"updated,omitzero"`
}

// StoreKey is the master key a store was encrypted under when this host
// last used it, so that a store whose key slots vanished (deleted, to
// make the host write in the clear) or now wrap another key is noticed.
type StoreKey struct {
	// Store is the store's location, as the caller names it (a
	// directory's absolute path, or an address).
	Store string `json:"store"`
	// KeyID names the master key (lower-case hex).
	KeyID string `json:"key_id"`
	// Updated is when the record was written; PutStoreKey sets it when
	// zero.
	Updated time.Time `json:"updated,omitzero"`
}

// maxKeyID bounds a key id: 1 to 64 lower-case hex digits.
const maxKeyID = 64

func validKeyID(id string) error {
	if len(id) == 0 || len(id) > maxKeyID || strings.Trim(id, "0123456789abcdef") != "" {
		return fmt.Errorf("key id %q is not 1 to %d lower-case hex digits", id, maxKeyID)
	}
	return nil
}

// markKey is a watermark's bbolt key: the key id has no '/', so the
// first one ends it whatever the volume's name holds.
func markKey(keyID, volume string) string { return keyID + "/" + volume }

func (w *Watermark) validate(key string) error {
	if err := validKeyID(w.KeyID); err != nil {
		return err
	}
	if err := ValidVolumeName(w.Volume); err != nil {
		return err
	}
	if key != markKey(w.KeyID, w.Volume) {
		return fmt.Errorf("key %q does not match the record's key id %s and volume %q", key, w.KeyID, w.Volume)
	}
	if w.Seq == 0 {
		return errors.New("seq is 0")
	}
	if err := ValidID(w.Snapshot); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if w.FileDigest != "" && (len(w.FileDigest) != 64 || strings.Trim(w.FileDigest, "0123456789abcdef") != "") {
		return fmt.Errorf("file digest %q is not 64 lower-case hex digits", w.FileDigest)
	}
	return checkFields(map[string]string{"name": w.Name, "store": w.Store})
}

func (k *StoreKey) validate(key string) error {
	if k.Store == "" {
		return errors.New("store is empty")
	}
	if k.Store != key {
		return fmt.Errorf("key %q does not match the record's store %q", key, k.Store)
	}
	if err := validKeyID(k.KeyID); err != nil {
		return err
	}
	return checkFields(map[string]string{"store": k.Store})
}

// Watermark returns the watermark of volume under the key keyID, or an
// error wrapping ErrNotFound.
func (tx *Tx) Watermark(keyID, volume string) (Watermark, error) {
	key := markKey(keyID, volume)
	var data []byte
	if b := tx.bucket(bucketMarks); b != nil {
		data = b.Get([]byte(key))
	}
	if data == nil {
		return Watermark{}, fmt.Errorf("catalog: watermark of volume %q under key %s: %w", volume, keyID, ErrNotFound)
	}
	return decode[Watermark](bucketMarks, []byte(key), data)
}

// Watermarks returns the watermarks under the key keyID, sorted by
// volume.
func (tx *Tx) Watermarks(keyID string) ([]Watermark, error) {
	b := tx.bucket(bucketMarks)
	if b == nil {
		return nil, nil
	}
	var ws []Watermark
	prefix := []byte(keyID + "/")
	c := b.Cursor()
	for k, data := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, data = c.Next() {
		w, err := decode[Watermark](bucketMarks, k, data)
		if err != nil {
			return nil, err
		}
		ws = append(ws, w)
	}
	sort.Slice(ws, func(i, j int) bool { return ws[i].Volume < ws[j].Volume })
	return ws, nil
}

// PutWatermark creates or replaces a watermark, whatever the one it
// replaces says: the caller decides whether it moves forward. It sets
// w.Updated to the current time when it is zero.
func (tx *Tx) PutWatermark(w *Watermark) error {
	b, err := tx.writeBucket(bucketMarks)
	if err != nil {
		return err
	}
	rec := *w
	if rec.Updated.IsZero() {
		rec.Updated = time.Now().UTC()
	}
	if err := put(b, bucketMarks, markKey(rec.KeyID, rec.Volume), &rec); err != nil {
		return err
	}
	*w = rec
	return nil
}

// DeleteWatermark removes a watermark, or returns an error wrapping
// ErrNotFound.
func (tx *Tx) DeleteWatermark(keyID, volume string) error {
	b, err := tx.writeBucket(bucketMarks)
	if err != nil {
		return err
	}
	key := []byte(markKey(keyID, volume))
	if b.Get(key) == nil {
		return fmt.Errorf("catalog: watermark of volume %q under key %s: %w", volume, keyID, ErrNotFound)
	}
	return b.Delete(key)
}

// StoreKey returns the key record of the store at location store, or an
// error wrapping ErrNotFound.
func (tx *Tx) StoreKey(store string) (StoreKey, error) {
	var data []byte
	if b := tx.bucket(bucketStoreKeys); b != nil && store != "" {
		data = b.Get([]byte(store))
	}
	if data == nil {
		return StoreKey{}, fmt.Errorf("catalog: key of store %q: %w", store, ErrNotFound)
	}
	return decode[StoreKey](bucketStoreKeys, []byte(store), data)
}

// PutStoreKey creates or replaces a store's key record. It sets
// k.Updated to the current time when it is zero.
func (tx *Tx) PutStoreKey(k *StoreKey) error {
	b, err := tx.writeBucket(bucketStoreKeys)
	if err != nil {
		return err
	}
	rec := *k
	if rec.Updated.IsZero() {
		rec.Updated = time.Now().UTC()
	}
	if err := put(b, bucketStoreKeys, rec.Store, &rec); err != nil {
		return err
	}
	*k = rec
	return nil
}

// DeleteStoreKey removes a store's key record, or returns an error
// wrapping ErrNotFound.
func (tx *Tx) DeleteStoreKey(store string) error {
	b, err := tx.writeBucket(bucketStoreKeys)
	if err != nil {
		return err
	}
	if store == "" || b.Get([]byte(store)) == nil {
		return fmt.Errorf("catalog: key of store %q: %w", store, ErrNotFound)
	}
	return b.Delete([]byte(store))
}
