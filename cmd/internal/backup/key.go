package backup

import (
	"errors"
	"fmt"
	"io"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// Backups into an encrypted store: every file is written under the
// store's key, and the file an incremental is made from is checked under
// it before anything is taken or written, so a file someone put into the
// store (one in the clear, one under another key, one altered) is never
// the base of a backup.

// Base is what an incremental is bound to: the header of its parent's
// file, as read from the store under the key.
type Base struct {
	Header *archive.Header
}

// BindParent checks that the encrypted incremental h, made from base,
// follows it: the Writer binds h to its parent's identity as h names it
// (volume name and UUID, parent id and size: docs/FORMAT.md "Chain
// binding"), and every restore checks that binding against the file
// before it (archive.CheckParentTags), so an incremental whose header
// does not name base's snapshot exactly would be stored and never
// restore. It is the one place a backup checks the binding. Nothing is
// checked for a full, without a key, or without a base at hand (a send
// from two snapshots: the receiving store checks, CheckParent).
func BindParent(key *archive.Key, h *archive.Header, base *Base) error {
	if key == nil || h.IsFull() || base == nil {
		return nil
	}
	b := base.Header
	if b.VolumeName != h.VolumeName || b.VolumeUUID != h.VolumeUUID || b.Snapshot.ID != h.Parent.ID || b.VolumeSize != h.ParentSize {
		return fmt.Errorf("the incremental from %s of volume %q (uuid %q, %d bytes) would not follow its base file, of snapshot %s of volume %q (uuid %q, %d bytes): %w",
			h.Parent.Describe(), h.VolumeName, h.VolumeUUID, h.ParentSize, b.Snapshot.ID, b.VolumeName, b.VolumeUUID, b.VolumeSize, archive.ErrParentTag)
	}
	return nil
}

// IsKeyError reports whether err means that a file is not one the key
// wrote: not encrypted, under another key, altered, or bound to another
// parent. Such a file in an encrypted store was put there by someone
// else: a backup stops rather than go on around it.
func IsKeyError(err error) bool {
	return errors.Is(err, archive.ErrAuth) || errors.Is(err, archive.ErrWrongKey) ||
		errors.Is(err, archive.ErrKeyRequired) || errors.Is(err, archive.ErrParentTag)
}

// checkBase reads the header of f, a store's file, under key (when the
// store is encrypted: a file in the clear or under another key fails,
// as does one whose header was altered), and puts f back at its start.
func checkBase(f catalog.DeltaReader, key *archive.Key) (*Base, error) {
	h, err := archive.NewReader(f, archive.WithKey(key)).Header()
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return &Base{Header: h}, nil
}

// CheckParent checks that h, the header of an encrypted incremental to be
// recorded in the store s (receive), is bound (BindParent) to the file
// the store holds of its parent, which must be a file of the store's key:
// an incremental that is not would be refused by every restore of its
// chain. The parent must be recorded (tx.CheckNew says when it is not).
func CheckParent(s catalog.Repository, key *archive.Key, h *archive.Header) error {
	var rec catalog.Snapshot
	if err := s.View(func(tx *catalog.Tx) error {
		var err error
		rec, err = tx.Snapshot(record.ID(h.Parent.ID))
		return err
	}); err != nil {
		return err
	}
	base, err := baseFile(s, key, rec)
	if err != nil {
		return fmt.Errorf("the parent of the stream, snapshot #%d %s of %s: %w", rec.Seq, rec.ID, rec.Volume, err)
	}
	if key.ParentTag(base.Header) != h.ParentTag {
		return fmt.Errorf("the stream is an incremental from %s, but not from the file the store holds of it (%s): %w; "+
			"it was made from another store's or volume's file: send it from a base this store holds",
			h.Parent.Describe(), rec.File, archive.ErrParentTag)
	}
	return nil
}
