package catalog

import (
	"bytes"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeySlots(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.KeySlots()
	if err != nil || len(got) != 0 {
		t.Fatalf("slots of a new store: %v, %v", got, err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "keys")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("listing made keys/")
	}
	want := map[string][]byte{"0011223344556677": []byte(`{"slot":"a"}`), "8899aabbccddeeff": []byte(`{"slot":"b"}`)}
	for id, data := range want {
		if err := st.PutKeySlot(id, data); err != nil {
			t.Fatal(err)
		}
	}
	if got, err = st.KeySlots(); err != nil || !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("slots %q, %v", got, err)
	}
	fi, err := os.Lstat(filepath.Join(dir, "keys", "0011223344556677"))
	if err != nil || fi.Mode() != 0o600 {
		t.Fatalf("slot file: %v, %v", fi, err)
	}
	// Never replaced.
	if err := st.PutKeySlot("0011223344556677", []byte("other")); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("put over a slot: %v", err)
	}
	if got, _ = st.KeySlots(); !bytes.Equal(got["0011223344556677"], want["0011223344556677"]) {
		t.Fatal("put over a slot changed it")
	}
	// Nothing left behind in tmp/ or keys/ by the puts, failed or not.
	for _, d := range []string{"tmp", "keys"} {
		entries, _ := os.ReadDir(filepath.Join(dir, d))
		for _, e := range entries {
			if _, ok := want[e.Name()]; !ok {
				t.Errorf("%s/%s left behind", d, e.Name())
			}
		}
	}
	// Removed durably, once.
	if err := st.RemoveKeySlot("0011223344556677"); err != nil {
		t.Fatal(err)
	}
	if err := st.RemoveKeySlot("0011223344556677"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
	delete(want, "0011223344556677")
	if got, err = st.KeySlots(); err != nil || !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("slots %q, %v", got, err)
	}
	// Names that are not ids are refused, and skipped when listing.
	for _, id := range []string{"", ".", "..", "../catalog.db", "a/b", ".tmp", strings.Repeat("a", 65)} {
		if err := st.PutKeySlot(id, []byte("x")); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("put %q: %v", id, err)
		}
		if err := st.RemoveKeySlot(id); !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("remove %q: %v", id, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "keys", ".8899.tmp"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err = st.KeySlots(); err != nil || len(got) != 1 {
		t.Fatalf("slots %q, %v", got, err)
	}
	if err := st.PutKeySlot("big", make([]byte, MaxKeySlotSize+1)); !errors.Is(err, ErrInvalidRecord) {
		t.Fatalf("put of a big slot: %v", err)
	}
	// A planted file too large for a slot is not read whole.
	if err := os.WriteFile(filepath.Join(dir, "keys", "big"), make([]byte, MaxKeySlotSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.KeySlots(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), filepath.Join(dir, "keys", "big")) {
		t.Fatalf("slots with a big file: %v", err)
	}
}

// TestKeySlotsNoLinks: a store on a disk someone else writes to may hold
// links where its key slots are; none is followed.
func TestKeySlotsNoLinks(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	elsewhere := t.TempDir()
	secret := filepath.Join(elsewhere, "secret")
	if err := os.WriteFile(secret, []byte("not a slot"), 0o600); err != nil {
		t.Fatal(err)
	}
	// keys/ a link to another directory.
	if err := os.Symlink(elsewhere, filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.KeySlots(); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("list through a linked keys/: %v", err)
	}
	if err := st.PutKeySlot("a", []byte("x")); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("put through a linked keys/: %v", err)
	}
	if err := st.RemoveKeySlot("secret"); !errors.Is(err, ErrNotOwn) {
		t.Fatalf("remove through a linked keys/: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(elsewhere, "a")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("a slot was written through the link")
	}
	if _, err := os.Lstat(secret); err != nil {
		t.Fatal("a file was removed through the link")
	}
	// A slot that is a link.
	if err := os.Remove(filepath.Join(dir, "keys")); err != nil {
		t.Fatal(err)
	}
	if err := st.PutKeySlot("a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(dir, "keys", "b")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.KeySlots(); !errors.Is(err, ErrNotOwn) || !strings.Contains(err.Error(), filepath.Join(dir, "keys", "b")) {
		t.Fatalf("list with a linked slot: %v", err)
	}
	// Removing it removes the link, not what it points at.
	if err := st.RemoveKeySlot("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(secret); err != nil {
		t.Fatal("the link's target was removed")
	}
}

// TestCrashPutKeySlot: a writer killed while it stores a key slot leaves
// the slot complete or absent, and a temp file the next run's CleanTemp
// removes.
func TestCrashPutKeySlot(t *testing.T) {
	for _, tc := range []struct {
		point  string
		stored bool
		temps  int
	}{
		{point: "keyslot:written", temps: 1},
		{point: "publish:renamed", stored: true},
	} {
		t.Run(tc.point, func(t *testing.T) {
			ts := newTestStore(t)
			data := []byte(`{"slot":"whole"}`)
			runKilled(t, "keyslot", ts.Dir(), tc.point, childSpec{Slot: "0011223344556677", Data: data})
			temps, _ := ts.recover()
			if len(temps) != tc.temps {
				t.Errorf("cleanup removed temps %v", temps)
			}
			slots, err := ts.KeySlots()
			if err != nil {
				t.Fatal(err)
			}
			if got, ok := slots["0011223344556677"]; ok != tc.stored || (ok && !bytes.Equal(got, data)) || len(slots) > 1 {
				t.Fatalf("slots after the crash: %q", slots)
			}
			// The next run stores it, or finds it stored.
			err = ts.PutKeySlot("0011223344556677", data)
			if tc.stored != errors.Is(err, fs.ErrExist) || (!tc.stored && err != nil) {
				t.Fatalf("put again: %v", err)
			}
		})
	}
}
