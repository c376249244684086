package pointintime

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
)

// TestFind: a snapshot is named by its id, a unique prefix of four
// characters or more, or its sequence number; an ambiguous name is the
// user's to fix (UsageError), an unknown one is not found.
func TestFind(t *testing.T) {
	s, _, c := localStore(t)
	find := func(ref string) (catalog.Snapshot, error) {
		var sn catalog.Snapshot
		err := s.View(func(tx *catalog.Tx) (err error) { sn, err = Find(tx, volName, ref); return err })
		return sn, err
	}
	second := c.snaps[1]
	for _, ref := range []string{second.ID, second.ID[:4], "#2", "2"} {
		if sn, err := find(ref); err != nil || sn.ID != second.ID {
			t.Errorf("Find(%q) = %s, %v; want %s", ref, sn.ID, err, second.ID)
		}
	}
	if _, err := find("#9"); !errors.Is(err, catalog.ErrNotFound) || !strings.Contains(err.Error(), `volume vg0/vm1 has no snapshot "#9" (see thinback list vg0/vm1)`) {
		t.Errorf("Find(#9): %v, want ErrNotFound", err)
	}
	if _, err := find(second.ID[:3]); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("a prefix of three characters: %v, want ErrNotFound", err)
	}
	var ue *UsageError
	if _, err := find("0002"); !errors.As(err, &ue) || err.Error() != `snapshot "0002" of vg0/vm1 is ambiguous: give more of its id` {
		t.Errorf(`Find("0002"), #1's id prefix and #2's number: %v, want a UsageError`, err)
	}
	if sn, err := find("00020"); err != nil || sn.ID != ambiguousID {
		t.Errorf(`Find("00020") = %s, %v; want #1`, sn.ID, err)
	}
}

// TestParseTime: RFC 3339, and dates with an optional time in the local
// zone; anything else is a UsageError saying how to write it.
func TestParseTime(t *testing.T) {
	for s, want := range map[string]time.Time{
		"2026-11-20T03:00:00Z":   time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC),
		"2026-11-20 03:00:04":    time.Date(2026, 11, 20, 3, 0, 4, 0, time.Local),
		"2026-11-20 03:00":       time.Date(2026, 11, 20, 3, 0, 0, 0, time.Local),
		"2026-11-20T03:00":       time.Date(2026, 11, 20, 3, 0, 0, 0, time.Local),
		"2026-11-20T03:00:04":    time.Date(2026, 11, 20, 3, 0, 4, 0, time.Local),
		"2026-11-20":             time.Date(2026, 11, 20, 0, 0, 0, 0, time.Local),
		"2026-11-20T03:00+01:00": {},
	} {
		got, err := ParseTime(s)
		if want.IsZero() {
			var ue *UsageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), "write it as 2026-11-20 03:00 (local time) or in RFC 3339") {
				t.Errorf("ParseTime(%q): %v, want a UsageError", s, err)
			}
			continue
		}
		if err != nil || !got.Equal(want) {
			t.Errorf("ParseTime(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
}

// TestSelect: --at picks the newest snapshot at or before the time, and
// a time before the first is not found; a time that cannot be read is a
// UsageError.
func TestSelect(t *testing.T) {
	s, _, c := localStore(t)
	sel := func(at, snapshot string) (catalog.Snapshot, error) {
		var sn catalog.Snapshot
		err := s.View(func(tx *catalog.Tx) (err error) { sn, err = Select(tx, volName, at, snapshot); return err })
		return sn, err
	}
	if sn, err := sel(c.snaps[1].Time.Format(time.RFC3339), ""); err != nil || sn.ID != c.snaps[1].ID {
		t.Errorf("at #2's time: %s, %v", sn.ID, err)
	}
	if _, err := sel("2026-11-20T00:59:59Z", ""); !errors.Is(err, catalog.ErrNotFound) ||
		!strings.Contains(err.Error(), "volume vg0/vm1 has no snapshot at or before 2026-11-20T00:59:59Z (see thinback list vg0/vm1)") {
		t.Errorf("before the first: %v, want ErrNotFound", err)
	}
	var ue *UsageError
	if _, err := sel("yesterday", ""); !errors.As(err, &ue) {
		t.Errorf("at yesterday: %v, want a UsageError", err)
	}
	if sn, err := sel("", "#1"); err != nil || sn.ID != c.snaps[0].ID {
		t.Errorf("snapshot #1: %s, %v", sn.ID, err)
	}
}
