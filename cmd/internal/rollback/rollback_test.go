package rollback

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
)

var t0 = time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)

func snap(vol string, seq uint64, id int, hours int) catalog.Snapshot {
	return catalog.Snapshot{Volume: vol, Seq: seq, ID: fmt.Sprintf("%08x-0000-4000-8000-%012x", id, id),
		Name: fmt.Sprintf("vm.thinback.%d", id), Time: t0.Add(time.Duration(hours) * time.Hour)}
}

func mark(s catalog.Snapshot) catalog.Watermark {
	return catalog.Watermark{KeyID: "0123456789abcdef", Volume: s.Volume, Seq: s.Seq, Snapshot: s.ID, Name: s.Name, Time: s.Time}
}

// Compare: the host saw #2 of vm; what the store shows now decides.
func TestCompare(t *testing.T) {
	s1, s2, s3 := snap("vm", 1, 1, 0), snap("vm", 2, 2, 1), snap("vm", 3, 3, 2)
	seen := mark(s2)
	for _, tc := range []struct {
		name  string
		snaps []catalog.Snapshot
		why   string // "" when fine
	}{
		{"same", []catalog.Snapshot{s1, s2}, ""},
		{"newer", []catalog.Snapshot{s1, s2, s3}, ""},
		{"newer, the seen one pruned", []catalog.Snapshot{s1, s3}, ""},
		{"any order", []catalog.Snapshot{s3, s1, s2}, ""},
		{"older", []catalog.Snapshot{s1}, "newer snapshots were deleted"},
		{"deleted newest", []catalog.Snapshot{s1}, "newer snapshots were deleted"},
		{"all deleted", nil, "the volume's snapshots were deleted"},
		{"replaced newest by another", []catalog.Snapshot{s1, snap("vm", 2, 9, 1)}, "the newest snapshot was replaced"},
		{"replaced newest by an older file", []catalog.Snapshot{s2, {Volume: "vm", Seq: 3, ID: s1.ID, Time: s1.Time}},
			"taken before the one this host saw"},
		{"an older file as a newer one", []catalog.Snapshot{s2, snap("vm", 3, 7, -5)}, "taken before the one this host saw"},
		{"renumbered", []catalog.Snapshot{s1, {Volume: "vm", Seq: 5, ID: s2.ID, Time: s2.Time}}, "is #5 now"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Compare("/backup", seen, tc.snaps)
			if tc.why == "" {
				if err != nil {
					t.Fatalf("Compare = %v, want nil", err)
				}
				return
			}
			var re *Error
			if !errors.Is(err, ErrRollback) || !errors.As(err, &re) {
				t.Fatalf("Compare = %v, want an *Error matching ErrRollback", err)
			}
			msg := err.Error()
			for _, want := range []string{tc.why, "store /backup", "volume vm", "#2 " + s2.ID, s2.Name, "2026-11-20T04:00:00Z", "--allow-rollback"} {
				if !strings.Contains(msg, want) {
					t.Errorf("message lacks %q: %s", want, msg)
				}
			}
		})
	}
}

// fixture is an encrypted directory store with a key-file slot, and a
// state file.
type fixture struct {
	t     *testing.T
	store *catalog.Store
	state string
	mk    *keys.MasterKey
}

func newFixture(t *testing.T, encrypted bool) *fixture {
	t.Helper()
	dir := t.TempDir()
	s, err := catalog.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, store: s, state: filepath.Join(dir, "state", "state.db")}
	if encrypted {
		f.mk = f.addKey(nil)
	}
	return f
}

// addKey gives the store a key-file slot of mk (a new master key when
// nil), and returns the master key.
func (f *fixture) addKey(mk *keys.MasterKey) *keys.MasterKey {
	f.t.Helper()
	if mk == nil {
		var err error
		if mk, err = keys.NewMasterKey(); err != nil {
			f.t.Fatal(err)
		}
	}
	kf, err := keys.NewKeyFile()
	if err != nil {
		f.t.Fatal(err)
	}
	slot, err := keys.NewKeyFileSlot(mk, kf, "cron")
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := keys.Init(f.store, slot); err != nil {
		f.t.Fatal(err)
	}
	return mk
}

// dropKeys removes every key slot of the store.
func (f *fixture) dropKeys() {
	f.t.Helper()
	slots, err := f.store.KeySlots()
	if err != nil {
		f.t.Fatal(err)
	}
	for id := range slots {
		if err := f.store.RemoveKeySlot(id); err != nil {
			f.t.Fatal(err)
		}
	}
}

func (f *fixture) put(snaps ...catalog.Snapshot) {
	f.t.Helper()
	err := f.store.Update(func(tx *catalog.Tx) error {
		for _, s := range snaps {
			if _, err := tx.Volume(s.Volume); errors.Is(err, catalog.ErrNotFound) {
				if err := tx.PutVolume(&catalog.Volume{Name: s.Volume, Kind: catalog.KindFile, Source: s.Volume, BlockSize: 4096}); err != nil {
					return err
				}
			}
			s.File = catalog.FileName(s.Volume, s.Seq, s.ID, 0)
			if err := tx.PutSnapshot(&s); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) drop(ids ...string) {
	f.t.Helper()
	err := f.store.Update(func(tx *catalog.Tx) error {
		for _, id := range ids {
			if err := tx.DeleteSnapshot(id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) guard() *Guard {
	f.t.Helper()
	g, err := Open(f.state, f.store, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return g
}

// check runs Check on a new Guard and returns its problems.
func (f *fixture) check(volumes ...string) []error {
	f.t.Helper()
	problems, err := f.guard().Check(volumes...)
	if err != nil {
		f.t.Fatal(err)
	}
	return problems
}

func (f *fixture) remember(volumes ...string) {
	f.t.Helper()
	if err := f.guard().Remember(volumes...); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mark(vol string) (catalog.Watermark, bool) {
	f.t.Helper()
	var w catalog.Watermark
	found := true
	err := catalog.View(f.state, nil, func(tx *catalog.Tx) error {
		var err error
		w, err = tx.Watermark(f.mk.ID().String(), vol)
		if errors.Is(err, catalog.ErrNotFound) {
			found = false
			return nil
		}
		return err
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return w, found
}

func wantRolledBack(t *testing.T, problems []error, volumes ...string) {
	t.Helper()
	if len(problems) != len(volumes) {
		t.Fatalf("problems %v, want %d for %v", problems, len(volumes), volumes)
	}
	for i, p := range problems {
		var re *Error
		if !errors.As(p, &re) || re.Remembered.Volume != volumes[i] || !errors.Is(p, ErrRollback) {
			t.Errorf("problem %d: %v, want volume %s rolled back", i, p, volumes[i])
		}
	}
}

// An unencrypted store is trusted: nothing is checked, nothing written.
func TestGuardUnencrypted(t *testing.T) {
	f := newFixture(t, false)
	f.put(snap("vm", 1, 1, 0), snap("vm", 2, 2, 1))
	g := f.guard()
	if g.Encrypted() {
		t.Error("a store without key slots is Encrypted")
	}
	f.remember()
	f.drop(snap("vm", 2, 2, 1).ID)
	if p := f.check(); len(p) != 0 {
		t.Errorf("Check = %v, want none", p)
	}
	if _, err := os.Stat(f.state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file of an unencrypted store's commands: %v, want none made", err)
	}
}

// The newest snapshot deleted from an encrypted store is reported; the
// watermark does not move back; another volume is not concerned; Accept
// takes the store as it is.
func TestGuardDeletedNewest(t *testing.T) {
	f := newFixture(t, true)
	s1, s2, s3 := snap("vm1", 1, 1, 0), snap("vm1", 2, 2, 1), snap("vm1", 3, 3, 2)
	o1 := snap("vm2", 1, 11, 0)
	f.put(s1, s2, o1)
	if p := f.check(); len(p) != 0 {
		t.Fatalf("Check of a store never seen = %v, want none", p)
	}
	f.remember()
	if w, ok := f.mark("vm1"); !ok || w.Seq != 2 || w.Snapshot != s2.ID || w.Store != f.store.String() {
		t.Fatalf("watermark after Remember: %+v %v, want #2", w, ok)
	}
	f.put(s3)
	f.remember("vm1")
	if w, _ := f.mark("vm1"); w.Seq != 3 {
		t.Fatalf("watermark after a newer backup: #%d, want #3", w.Seq)
	}

	f.drop(s3.ID)
	wantRolledBack(t, f.check(), "vm1")
	wantRolledBack(t, f.check("vm1"), "vm1")
	if p := f.check("vm2"); len(p) != 0 {
		t.Errorf("Check(vm2) = %v: another volume's rollback is not vm2's", p)
	}
	if p := f.check("vm3"); len(p) != 0 {
		t.Errorf("Check of a volume never seen = %v, want none", p)
	}
	msg := f.check()[0].Error()
	for _, want := range []string{f.store.String(), "vm1", "#3 " + s3.ID, "#2 " + s2.ID, "--allow-rollback"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	f.remember()
	if w, _ := f.mark("vm1"); w.Seq != 3 {
		t.Errorf("Remember moved the watermark back to #%d", w.Seq)
	}
	if err := f.guard().Accept("vm1"); err != nil {
		t.Fatal(err)
	}
	if w, _ := f.mark("vm1"); w.Seq != 2 || w.Snapshot != s2.ID {
		t.Errorf("watermark after Accept: %+v, want #2", w)
	}
	if p := f.check(); len(p) != 0 {
		t.Errorf("Check after Accept = %v, want none", p)
	}
	// Every snapshot of a volume gone: reported; accepted, forgotten.
	f.drop(o1.ID)
	wantRolledBack(t, f.check(), "vm2")
	if err := f.guard().Accept(); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.mark("vm2"); ok {
		t.Error("Accept kept the watermark of a volume with no snapshot left")
	}
	if p := f.check(); len(p) != 0 {
		t.Errorf("Check after Accept = %v, want none", p)
	}
}

// An older copy of the store put back in its place (its catalog and
// slots copied before the newest backup) is reported, as is the newest
// replaced by another snapshot under the same seq.
func TestGuardOlderCopy(t *testing.T) {
	f := newFixture(t, true)
	s1, s2 := snap("vm", 1, 1, 0), snap("vm", 2, 2, 1)
	f.put(s1)
	f.remember()
	old, err := os.ReadFile(f.store.DBPath())
	if err != nil {
		t.Fatal(err)
	}
	f.put(s2)
	f.remember()
	if err := os.WriteFile(f.store.DBPath(), old, 0o600); err != nil {
		t.Fatal(err)
	}
	wantRolledBack(t, f.check(), "vm")
	// The same seq, another snapshot.
	f.put(snap("vm", 2, 5, 3))
	p := f.check()
	wantRolledBack(t, p, "vm")
	if !strings.Contains(p[0].Error(), "replaced") {
		t.Errorf("message: %v, want the newest replaced", p[0])
	}
}

// A store whose key slots vanish since the host last used it is
// refused, so that the host does not write in the clear; so is one whose
// slots now wrap another key. Accept forgets the key.
func TestGuardKeySlots(t *testing.T) {
	f := newFixture(t, true)
	f.put(snap("vm", 1, 1, 0))
	f.remember()
	k := f.mk.ID().String()
	f.dropKeys()
	g := f.guard()
	if g.Encrypted() {
		t.Error("a store whose slots are gone is Encrypted")
	}
	p, err := g.Check()
	if err != nil {
		t.Fatal(err)
	}
	var ke *KeyError
	if len(p) != 1 || !errors.As(p[0], &ke) || !errors.Is(p[0], ErrRollback) || len(ke.Now) != 0 {
		t.Fatalf("Check = %v, want a KeyError of missing slots", p)
	}
	for _, want := range []string{"store " + f.store.String() + " was encrypted under key " + k, "key slots are missing", "--allow-rollback"} {
		if !strings.Contains(p[0].Error(), want) {
			t.Errorf("message lacks %q: %v", want, p[0])
		}
	}
	// Nothing a command remembers silences it.
	f.remember()
	if p := f.check(); len(p) != 1 {
		t.Fatalf("after Remember: %v, want the KeyError still", p)
	}
	// Slots of another key.
	other := f.addKey(nil)
	p = f.check()
	if len(p) != 1 || !errors.As(p[0], &ke) || len(ke.Now) != 1 || ke.Now[0] != other.ID().String() ||
		!strings.Contains(p[0].Error(), "now wrap key "+other.ID().String()) {
		t.Fatalf("Check = %v, want a KeyError naming key %s", p, other.ID())
	}
	f.remember()
	if p := f.check(); len(p) != 1 {
		t.Fatalf("after Remember: %v, want the KeyError still", p)
	}
	if err := f.guard().Accept(); err != nil {
		t.Fatal(err)
	}
	if p := f.check(); len(p) != 0 {
		t.Errorf("Check after Accept = %v, want none", p)
	}
	// The slots come back with the first key: a key this host no longer
	// remembers for the store, but whose watermarks it kept.
	f.dropKeys()
	if err := f.guard().Accept(); err != nil {
		t.Fatal(err)
	}
	f.addKey(f.mk)
	if p := f.check(); len(p) != 0 {
		t.Errorf("Check = %v, want none", p)
	}
}
