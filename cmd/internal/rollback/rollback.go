// Package rollback notices an encrypted store rolled back behind the
// host's back, as wyng-backup does against its local cache: the host
// keeps, outside the store (in its state file), the newest snapshot it
// has seen of each volume and the master key each store was under, and
// compares the store with them whenever a command uses it.
//
// Without a key nobody can forge a file of an encrypted store, but
// anyone who can write to the store can still give the host an older
// truth: put back an older copy of a bucket or a disk, delete the newest
// file and its record, or replace the newest file with an older one.
// Each file is genuine, so only memory outside the store tells. The host
// remembers, per master key id and volume, a Watermark (the newest
// snapshot's seq, id, name, time and file digest), and per store
// location the key id (catalog.StoreKey). The store is rolled back for
// a volume when its newest snapshot
//
//   - has a lower seq than the remembered one, or there is none;
//   - has the same seq and another id (the newest file replaced);
//   - has a higher seq but was taken before the remembered one (an older
//     file put in as the newest);
//
// or when the remembered snapshot is in the store under another seq.
// A store whose key slots are gone, or wrap another key, since this
// host last used it is refused too: without slots a command would write
// in the clear (KeyError).
//
// An unencrypted store is not checked: whoever can write to it can
// forge any file anyway (docs/SECURITY.md).
//
// # Basics
//
//	g, err := rollback.Open(state, repo, nil)
//	problems, err := g.Check("vg0/vm1")  // *Error or *KeyError, each matching ErrRollback
//	...                                  // the backup commits
//	err = g.Remember("vg0/vm1")          // the watermark moves forward, never back
//
// A user who put back an older copy on purpose accepts it with Accept:
// the host then forgets the newer snapshots (backup --allow-rollback).
//
// # Caveats
//
//   - The check reads the store's records, not its files: restore and
//     verify compare each file with its record, and the chain binding
//     refuses a file in another's place, so a record that lies about a
//     file is caught there, not here.
//   - Watermarks are kept per master key: a copy of the store elsewhere
//     (a second disk) shares them, and a store made anew with another key
//     starts with none.
//   - A host with no memory of a store (a new machine, a lost state file)
//     takes it as it finds it, on first use.
//   - Remember moves a watermark forward on whatever the store shows, so
//     two hosts writing one volume each see the other's newer snapshots;
//     a host whose clock runs behind another's makes snapshots that look
//     older than the one remembered, and is reported.
package rollback

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
)

// ErrRollback: an encrypted store holds less than this host has seen in
// it (Error), or its key slots are gone or wrap another key (KeyError).
var ErrRollback = errors.New("store rolled back")

// Error reports a volume of a store whose newest snapshot is older than
// the newest the host has seen there.
type Error struct {
	Store      string
	Remembered catalog.Watermark
	// Newest is the store's newest snapshot of the volume; nil when it
	// has none.
	Newest *catalog.Snapshot
	// Why says what is wrong, for people.
	Why string
}

func (e *Error) Error() string {
	w := e.Remembered
	now := "the store has no snapshot of it"
	if e.Newest != nil {
		now = "the store's newest is " + describe(e.Newest.Seq, e.Newest.ID, e.Newest.Name, e.Newest.Time)
	}
	return fmt.Sprintf("store %s was rolled back: volume %s: this host last saw %s there, %s (%s); "+
		"if the newer delta files are still in the store, thinback catalog rebuild records them again; "+
		"if you restored the store from an older copy on purpose, run the backup with --allow-rollback: the host then forgets the newer snapshot",
		e.Store, printable.String(w.Volume), describe(w.Seq, w.Snapshot, w.Name, w.Time), now, e.Why)
}

// Is makes an Error match ErrRollback.
func (e *Error) Is(target error) bool { return target == ErrRollback }

// KeyError reports a store that was encrypted under a key when the host
// last used it and whose key slots are now missing or wrap other keys.
type KeyError struct {
	Store      string
	Remembered string   // the key id the host remembers
	Now        []string // the key ids of the store's slots now; none when it has none
}

func (e *KeyError) Error() string {
	now := "its key slots are missing (or none can be read)"
	if len(e.Now) > 0 {
		now = "its key slots now wrap key " + strings.Join(e.Now, ", ")
	}
	return fmt.Sprintf("store %s was encrypted under key %s when this host last used it; %s: "+
		"someone may have removed them to make this host write in the clear; do not use the store before you know why; "+
		"if you made it anew on purpose, run the backup with --allow-rollback: the host then forgets key %s for this store",
		e.Store, e.Remembered, now, e.Remembered)
}

// Is makes a KeyError match ErrRollback.
func (e *KeyError) Is(target error) bool { return target == ErrRollback }

func describe(seq uint64, id, name string, t time.Time) string {
	s := fmt.Sprintf("#%d %s", seq, id)
	if name != "" {
		s += " " + printable.String(name)
	}
	return s + " taken " + t.UTC().Format(time.RFC3339)
}

// Compare compares a watermark with the store's snapshots of its volume
// (any order): nil when the store holds what the host saw or newer, an
// *Error when it was rolled back.
func Compare(store string, w catalog.Watermark, snaps []catalog.Snapshot) error {
	var newest *catalog.Snapshot
	for i := range snaps {
		sn := &snaps[i]
		if sn.ID == w.Snapshot && sn.Seq != w.Seq {
			return &Error{Store: store, Remembered: w, Newest: latest(snaps),
				Why: fmt.Sprintf("the snapshot it saw as #%d is #%d now: files were renumbered", w.Seq, sn.Seq)}
		}
		if newest == nil || sn.Seq > newest.Seq {
			newest = sn
		}
	}
	bad := func(why string) error { return &Error{Store: store, Remembered: w, Newest: newest, Why: why} }
	switch {
	case newest == nil:
		return bad("the volume's snapshots were deleted")
	case newest.Seq < w.Seq:
		return bad("newer snapshots were deleted, or an older copy of the store put back")
	case newest.Seq == w.Seq && newest.ID != w.Snapshot:
		return bad("the newest snapshot was replaced by another")
	case newest.Seq > w.Seq && newest.Time.Before(w.Time):
		return bad("the store's newest was taken before the one this host saw: an older file put in as the newest, or a clock running behind")
	}
	return nil
}

func latest(snaps []catalog.Snapshot) *catalog.Snapshot {
	var n *catalog.Snapshot
	for i := range snaps {
		if n == nil || snaps[i].Seq > n.Seq {
			n = &snaps[i]
		}
	}
	return n
}

// Guard is one command's view of a store and of what the host remembers
// of it.
type Guard struct {
	state string
	repo  catalog.Repository
	dir   func(create bool) error
	// key is the store's key id now ("" for an unencrypted store, or one
	// whose key cannot be told); remembered is the one the state file
	// holds for the store ("" for none); now are the ids of its slots.
	key, remembered string
	now             []string
}

// Open reads the store's key slots (without unlocking any) and what the
// state file remembers of the store. dir, when not nil, is called before
// the state file is read (create false) or written (create true), to
// check or make its directory.
func Open(state string, repo catalog.Repository, dir func(create bool) error) (*Guard, error) {
	g := &Guard{state: state, repo: repo, dir: dir}
	ring, err := keys.Load(repo)
	switch {
	case errors.Is(err, keys.ErrNoSlots):
	case err != nil:
		return nil, fmt.Errorf("key slots of %s: %w", repo, err)
	default:
		ids := map[string]bool{}
		for _, s := range ring.Slots() {
			ids[s.KeyID.String()] = true
		}
		for id := range ids {
			g.now = append(g.now, id)
		}
		sort.Strings(g.now)
	}
	if err := g.view(func(tx *catalog.Tx) error {
		k, err := tx.StoreKey(repo.String())
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		g.remembered = k.KeyID
		return err
	}); err != nil {
		return nil, err
	}
	switch {
	case g.remembered != "" && contains(g.now, g.remembered):
		g.key = g.remembered
	case len(g.now) == 1:
		g.key = g.now[0]
	}
	// Several keys and none remembered: the store's slots are refused
	// when unlocked (keys.MixedKeysError); nothing to compare here.
	return g, nil
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// Encrypted reports whether the store has key slots of one key now.
func (g *Guard) Encrypted() bool { return g.key != "" }

func (g *Guard) view(fn func(*catalog.Tx) error) error {
	if g.dir != nil {
		if err := g.dir(false); err != nil {
			return err
		}
	}
	if err := catalog.View(g.state, nil, fn); err != nil {
		return fmt.Errorf("state file %s: %w", g.state, err)
	}
	return nil
}

func (g *Guard) update(fn func(*catalog.Tx) error) error {
	if g.dir != nil {
		if err := g.dir(true); err != nil {
			return err
		}
	}
	if err := catalog.Update(g.state, nil, fn); err != nil {
		return fmt.Errorf("state file %s: %w", g.state, err)
	}
	return nil
}

// keyProblem is the KeyError of a store whose remembered key is not its
// key now, or nil.
func (g *Guard) keyProblem() error {
	if g.remembered == "" || g.key == g.remembered {
		return nil
	}
	return &KeyError{Store: g.repo.String(), Remembered: g.remembered, Now: g.now}
}

// checkedKey is the key whose watermarks the store is compared with: the
// one the host remembers for it, or else its key now.
func (g *Guard) checkedKey() string {
	if g.remembered != "" {
		return g.remembered
	}
	return g.key
}

// Check compares the store with what the host remembers: of the given
// volumes, or of every volume it remembers under the store's key. It
// returns the problems found (a *KeyError first, then an *Error per
// volume rolled back; each matches ErrRollback), none for an
// unencrypted store the host never knew encrypted; the error is of
// reading the store or the state file.
func (g *Guard) Check(volumes ...string) ([]error, error) {
	var problems []error
	if p := g.keyProblem(); p != nil {
		problems = append(problems, p)
	}
	key := g.checkedKey()
	if key == "" {
		return problems, nil
	}
	var marks []catalog.Watermark
	err := g.view(func(tx *catalog.Tx) error {
		if len(volumes) == 0 {
			var err error
			marks, err = tx.Watermarks(key)
			return err
		}
		for _, v := range volumes {
			w, err := tx.Watermark(key, v)
			if errors.Is(err, catalog.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			marks = append(marks, w)
		}
		return nil
	})
	if err != nil || len(marks) == 0 {
		return problems, err
	}
	snaps := map[string][]catalog.Snapshot{}
	err = g.repo.View(func(tx *catalog.Tx) error {
		for _, w := range marks {
			s, err := tx.Snapshots(w.Volume)
			if err != nil {
				return err
			}
			snaps[w.Volume] = s
		}
		return nil
	})
	if err != nil {
		return problems, fmt.Errorf("store %s: %w", g.repo, err)
	}
	for _, w := range marks {
		if err := Compare(g.repo.String(), w, snaps[w.Volume]); err != nil {
			problems = append(problems, err)
		}
	}
	return problems, nil
}

// storeVolumes returns the store's snapshots of the given volumes, or
// of all its volumes.
func (g *Guard) storeVolumes(volumes []string) (map[string][]catalog.Snapshot, error) {
	snaps := map[string][]catalog.Snapshot{}
	err := g.repo.View(func(tx *catalog.Tx) error {
		if len(volumes) == 0 {
			vols, err := tx.Volumes()
			if err != nil {
				return err
			}
			for _, v := range vols {
				volumes = append(volumes, v.Name)
			}
		}
		for _, v := range volumes {
			s, err := tx.Snapshots(v)
			if err != nil {
				return err
			}
			snaps[v] = s
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", g.repo, err)
	}
	return snaps, nil
}

func (g *Guard) watermark(newest *catalog.Snapshot) catalog.Watermark {
	return catalog.Watermark{KeyID: g.key, Volume: newest.Volume, Seq: newest.Seq, Snapshot: newest.ID, Name: newest.Name,
		Time: newest.Time, FileDigest: newest.FileDigest, Store: g.repo.String()}
}

// Remember moves the host's watermarks of the given volumes (or of every
// volume of the store) forward to the store's newest snapshots, and
// remembers the store's key. A watermark never moves back, nor onto a
// volume Check reports, and the remembered key of a store whose key
// changed is kept: only Accept changes those. The state file is written
// only when something changes. Nothing is done for an unencrypted store.
func (g *Guard) Remember(volumes ...string) error {
	if g.key == "" || g.keyProblem() != nil {
		return nil
	}
	snaps, err := g.storeVolumes(volumes)
	if err != nil {
		return err
	}
	var put []catalog.Watermark
	err = g.view(func(tx *catalog.Tx) error {
		for v, s := range snaps {
			newest := latest(s)
			if newest == nil {
				continue
			}
			w, err := tx.Watermark(g.key, v)
			switch {
			case errors.Is(err, catalog.ErrNotFound):
			case err != nil:
				return err
			case Compare(g.repo.String(), w, s) != nil || newest.Seq <= w.Seq:
				continue
			}
			put = append(put, g.watermark(newest))
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(put) == 0 && g.remembered == g.key {
		return nil
	}
	return g.update(func(tx *catalog.Tx) error {
		if g.remembered != g.key {
			if err := tx.PutStoreKey(&catalog.StoreKey{Store: g.repo.String(), KeyID: g.key}); err != nil {
				return err
			}
		}
		for i := range put {
			if err := tx.PutWatermark(&put[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// Accept makes the host take the store as it is now, for the given
// volumes (or every volume it remembers under the store's key and every
// volume of the store): their watermarks become the store's newest
// snapshots, older or not, or go when the store has none; the store's
// key becomes the one its slots wrap now, or none. It is what a user
// who put back an older copy of a store on purpose asks for.
func (g *Guard) Accept(volumes ...string) error {
	snaps, err := g.storeVolumes(volumes)
	if err != nil {
		return err
	}
	old := g.checkedKey()
	err = g.update(func(tx *catalog.Tx) error {
		if old != "" {
			vols := volumes
			if len(vols) == 0 {
				marks, err := tx.Watermarks(old)
				if err != nil {
					return err
				}
				for _, w := range marks {
					vols = append(vols, w.Volume)
				}
			}
			for _, v := range vols {
				if err := tx.DeleteWatermark(old, v); err != nil && !errors.Is(err, catalog.ErrNotFound) {
					return err
				}
			}
		}
		if g.key == "" {
			if err := tx.DeleteStoreKey(g.repo.String()); err != nil && !errors.Is(err, catalog.ErrNotFound) {
				return err
			}
			return nil
		}
		if err := tx.PutStoreKey(&catalog.StoreKey{Store: g.repo.String(), KeyID: g.key}); err != nil {
			return err
		}
		for _, s := range snaps {
			if newest := latest(s); newest != nil {
				w := g.watermark(newest)
				if err := tx.PutWatermark(&w); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err == nil {
		g.remembered = g.key
	}
	return err
}
