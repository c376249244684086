package pointintime

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/catalog"
)

// UsageError is a snapshot reference or a time, as the user gave it,
// that names no snapshot: one that cannot be read, or an ambiguous one.
// It is the command line's fault, not the store's.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// Select picks a snapshot of volume the way restore, cat and verify
// --device take it: by id, prefix or sequence number (snapshot, see
// Find), or the newest at or before a time (at, see ParseTime), or the
// newest.
func Select(tx *catalog.Tx, volume, at, snapshot string) (catalog.Snapshot, error) {
	switch {
	case snapshot != "":
		return Find(tx, volume, snapshot)
	case at != "":
		t, err := ParseTime(at)
		if err != nil {
			return catalog.Snapshot{}, err
		}
		snap, err := tx.At(volume, t)
		if errors.Is(err, catalog.ErrNotFound) {
			return snap, fmt.Errorf("volume %s has no snapshot at or before %s (see thinback list %s): %w", volume, t.Format(time.RFC3339), volume, err)
		}
		return snap, err
	}
	return tx.Latest(volume)
}

// Find resolves a snapshot of volume by ID, a unique ID prefix (of four
// characters or more), or its sequence number ("#3" or "3").
func Find(tx *catalog.Tx, volume, ref string) (catalog.Snapshot, error) {
	snaps, err := tx.Snapshots(volume)
	if err != nil {
		return catalog.Snapshot{}, err
	}
	var found []catalog.Snapshot
	seq, seqErr := strconv.ParseUint(strings.TrimPrefix(ref, "#"), 10, 64)
	for _, s := range snaps {
		if s.ID == ref || (len(ref) >= 4 && strings.HasPrefix(s.ID, ref)) || (seqErr == nil && s.Seq == seq) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return catalog.Snapshot{}, fmt.Errorf("volume %s has no snapshot %q (see thinback list %s): %w", volume, ref, volume, catalog.ErrNotFound)
	}
	return catalog.Snapshot{}, &UsageError{Msg: fmt.Sprintf("snapshot %q of %s is ambiguous: give more of its id", ref, volume)}
}

// ParseTime reads the times people type: RFC 3339, or a date with an
// optional time in the local time zone.
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, &UsageError{Msg: fmt.Sprintf("cannot read the time %q: write it as 2026-11-20 03:00 (local time) or in RFC 3339", s)}
}
