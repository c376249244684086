package catalog

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ReadOnly is a store directory opened only to be read (OpenReadOnly):
// the commands that read a point in time for as long as they run (a
// mount may last for days) use it. Each View opens the catalog read-only
// for one transaction and holds its shared lock only while that runs, so
// a backup or prune waits at most for one transaction, never for the
// reader; nothing is created, cleaned or written in the store, so it may
// be on read-only media. Every write is refused with ErrReadOnly.
type ReadOnly struct {
	s *Store
}

var _ Repository = (*ReadOnly)(nil)

// OpenReadOnly opens the store at dir for reading. Unlike OpenStore it
// creates nothing: a directory without a catalog file is not a store.
func OpenReadOnly(dir string) (*ReadOnly, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	s := &Store{dir: abs, opts: Options{ReadOnly: true}}
	fi, err := os.Stat(s.DBPath())
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("catalog.db is not a regular file")
	}
	if err != nil {
		return nil, fmt.Errorf("%s is not a thinback store (no catalog.db): %w", dir, err)
	}
	return &ReadOnly{s: s}, nil
}

// readOnly is the error of every write to a ReadOnly store.
func (r *ReadOnly) readOnly(what string) error {
	return fmt.Errorf("catalog: %s: store %s is open only for reading: %w", what, r.s.dir, ErrReadOnly)
}

// String returns the store's absolute directory.
func (r *ReadOnly) String() string { return r.s.dir }

// View runs fn in a read-only transaction of the store's catalog, which
// is open (with a shared lock) only while fn runs.
func (r *ReadOnly) View(fn func(*Tx) error) error { return View(r.s.DBPath(), nil, fn) }

// OpenDelta opens a delta file as Store.OpenDelta does.
func (r *ReadOnly) OpenDelta(file string) (DeltaReader, error) { return r.s.OpenDelta(file) }

// OpenStream opens a delta file as Store.OpenStream does.
func (r *ReadOnly) OpenStream(file string) (io.ReadCloser, error) { return r.s.OpenStream(file) }

// Files lists the store's delta files (Store.Files).
func (r *ReadOnly) Files() ([]DeltaFile, error) { return r.s.Files() }

// Check checks the records and files as Store.Check does; it only reads.
func (r *ReadOnly) Check(opts CheckOptions) ([]error, error) { return r.s.Check(opts) }

// LocalFiles is Store.LocalFiles.
func (r *ReadOnly) LocalFiles(chain []Snapshot) []LocalFile { return r.s.LocalFiles(chain) }

// Close does nothing: nothing is held between calls.
func (r *ReadOnly) Close() error { return nil }

// WriteDelta is refused (ErrReadOnly).
func (r *ReadOnly) WriteDelta(string, string, func(io.Writer) (Snapshot, error)) (Snapshot, error) {
	return Snapshot{}, r.readOnly("write a delta file")
}

// WriteVolumeDelta is refused (ErrReadOnly).
func (r *ReadOnly) WriteVolumeDelta(Volume, string, func(io.Writer) (Snapshot, error)) (Snapshot, error) {
	return Snapshot{}, r.readOnly("write a delta file")
}

// ReplaceDelta is refused (ErrReadOnly).
func (r *ReadOnly) ReplaceDelta(string, string, []string, func(io.Writer) (Snapshot, error)) (Snapshot, error) {
	return Snapshot{}, r.readOnly("replace a delta file")
}

// LockVolume is refused (ErrReadOnly): the lock is for writers.
func (r *ReadOnly) LockVolume(string) (func() error, error) {
	return nil, r.readOnly("lock a volume")
}

// Remove is refused (ErrReadOnly).
func (r *ReadOnly) Remove(string, string) error { return r.readOnly("remove a snapshot") }

// SetRetention is refused (ErrReadOnly).
func (r *ReadOnly) SetRetention(string, Retention) error {
	return r.readOnly("record a retention policy")
}

// Rebuild is refused (ErrReadOnly).
func (r *ReadOnly) Rebuild([]Volume, []Snapshot) error { return r.readOnly("rebuild the catalog") }

// CleanTemp is refused (ErrReadOnly).
func (r *ReadOnly) CleanTemp() ([]string, error) { return nil, r.readOnly("clean temporary files") }

// RemoveOrphans is refused (ErrReadOnly).
func (r *ReadOnly) RemoveOrphans() ([]string, error) { return nil, r.readOnly("remove orphan files") }

// KeySlots returns the store's key slots, as Store.KeySlots does.
func (r *ReadOnly) KeySlots() (map[string][]byte, error) { return r.s.KeySlots() }

// PutKeySlot is refused (ErrReadOnly).
func (r *ReadOnly) PutKeySlot(string, []byte) error { return r.readOnly("store a key slot") }

// RemoveKeySlot is refused (ErrReadOnly).
func (r *ReadOnly) RemoveKeySlot(string) error { return r.readOnly("remove a key slot") }

// LockKeySlots is refused (ErrReadOnly): the lock is for writers.
func (r *ReadOnly) LockKeySlots() (func() error, error) {
	return nil, r.readOnly("lock the key slots")
}
