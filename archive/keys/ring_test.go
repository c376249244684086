package keys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestRing(t *testing.T) {
	st := newStorage(t)
	sc := newSecrets(t)
	if _, err := Load(st); !errors.Is(err, ErrNoSlots) {
		t.Fatalf("load of a store without slots: %v", err)
	}
	r, err := Init(st, sc.slots[TypePassphrase])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Init(st, sc.slots[TypeKeyFile]); !errors.Is(err, ErrExist) {
		t.Fatalf("second init: %v", err)
	}
	// The last slot cannot go.
	wantIs(t, r.Remove(sc.slots[TypePassphrase].ID), ErrLastSlot)
	if err := r.Add(sc.mk, sc.slots[TypeKeyFile]); err != nil {
		t.Fatal(err)
	}
	if err := r.Add(sc.mk, sc.slots[TypeRecovery]); err != nil {
		t.Fatal(err)
	}
	// A slot of another master key is not added.
	other := newSecrets(t)
	wantIs(t, r.Add(other.mk, other.slots[TypeKeyFile]), ErrInvalid)
	wantIs(t, r.Add(sc.mk, other.slots[TypeKeyFile]), ErrInvalid)

	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(r.Slots()); got != 3 || len(r.Damaged()) != 0 {
		t.Fatalf("%d slots, damaged %v", got, r.Damaged())
	}
	for _, unlock := range []func() (*MasterKey, *Slot, error){
		func() (*MasterKey, *Slot, error) { return r.UnlockPassphrase(sc.pass) },
		func() (*MasterKey, *Slot, error) { return r.UnlockKeyFile(sc.kf) },
		func() (*MasterKey, *Slot, error) { return r.UnlockRecovery(sc.identity) },
	} {
		mk, _, err := unlock()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mk.Bytes(), sc.mk.Bytes()) {
			t.Fatal("unlocked another key")
		}
	}
	// Wrong secrets of each kind.
	_, _, err = r.UnlockPassphrase([]byte("Tr0ub4dor&3"))
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	_, _, err = r.UnlockKeyFile(other.kf)
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	_, _, err = r.UnlockRecovery(other.identity)
	wantIs(t, err, ErrWrongKey, ErrCorrupt)

	// Removing: the key file's slot goes, the others stay.
	if err := r.Remove(sc.slots[TypeKeyFile].ID); err != nil {
		t.Fatal(err)
	}
	wantIs(t, r.Remove(sc.slots[TypeKeyFile].ID), ErrNotFound)
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.UnlockKeyFile(sc.kf)
	wantIs(t, err, ErrWrongKey)
	var ue *UnlockError
	if !errors.As(err, &ue) || len(ue.Tried) != 0 {
		t.Fatalf("unlock without a key-file slot: %v", err)
	}
}

func TestRingPasswd(t *testing.T) {
	st := newStorage(t)
	sc := newSecrets(t)
	r, err := Init(st, sc.slots[TypePassphrase])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(sc.mk, sc.slots[TypeKeyFile]); err != nil {
		t.Fatal(err)
	}
	mk, old, err := r.UnlockPassphrase(sc.pass)
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Passwd(mk, sc.slots[TypeKeyFile].ID, []byte("new"), fast)
	wantIs(t, err, ErrSlotType)
	ns, err := r.Passwd(mk, old.ID, []byte("a new passphrase"), fast)
	if err != nil {
		t.Fatal(err)
	}
	if ns.ID == old.ID || ns.Label != old.Label || ns.Type != TypePassphrase {
		t.Fatalf("new slot %+v for %+v", ns, old)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Slots()) != 2 {
		t.Fatalf("%d slots after passwd", len(r.Slots()))
	}
	_, _, err = r.UnlockPassphrase(sc.pass)
	wantIs(t, err, ErrWrongKey)
	got, s, err := r.UnlockPassphrase([]byte("a new passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	if s.ID != ns.ID || !bytes.Equal(got.Bytes(), sc.mk.Bytes()) {
		t.Fatal("the new passphrase does not open the same key")
	}
	// The slot the master key came from can change its own passphrase,
	// but a key from elsewhere cannot rewrap the store's slots.
	other := newSecrets(t)
	_, err = r.Passwd(other.mk, ns.ID, []byte("x"), fast)
	wantIs(t, err, ErrInvalid)
}

// TestRecoveryWhenPassphraseLost: a store whose passphrase slot is gone
// (forgotten, removed) is opened with the recovery identity, and a new
// passphrase slot made from the key it gives.
func TestRecoveryWhenPassphraseLost(t *testing.T) {
	st := newStorage(t)
	sc := newSecrets(t)
	r, err := Init(st, sc.slots[TypePassphrase])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(sc.mk, sc.slots[TypeRecovery]); err != nil {
		t.Fatal(err)
	}
	if err := r.Remove(sc.slots[TypePassphrase].ID); err != nil {
		t.Fatal(err)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.UnlockPassphrase(sc.pass)
	wantIs(t, err, ErrWrongKey)
	mk, s, err := r.UnlockRecovery(newSecrets(t).identity, sc.identity)
	if err != nil {
		t.Fatal(err)
	}
	if s.Type != TypeRecovery || !bytes.Equal(mk.Bytes(), sc.mk.Bytes()) {
		t.Fatal("recovery gave another key")
	}
	ns, err := NewPassphraseSlot(mk, []byte("remembered this time"), fast, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(mk, ns); err != nil {
		t.Fatal(err)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	if got, _, err := r.UnlockPassphrase([]byte("remembered this time")); err != nil || !bytes.Equal(got.Bytes(), sc.mk.Bytes()) {
		t.Fatalf("new passphrase: %v", err)
	}
}

// TestRingDamagedSlot: a damaged slot does not keep the others from
// opening the store; a secret whose only slot is damaged is told so
// (ErrCorrupt), not that it is wrong.
func TestRingDamagedSlot(t *testing.T) {
	st := newStorage(t)
	sc := newSecrets(t)
	r, err := Init(st, sc.slots[TypePassphrase])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(sc.mk, sc.slots[TypeKeyFile]); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(string(st), sc.slots[TypeKeyFile].ID)
	data, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0x10
	if err := os.WriteFile(name, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Slots()) != 1 || r.Damaged()[sc.slots[TypeKeyFile].ID] == nil {
		t.Fatalf("slots %d, damaged %v", len(r.Slots()), r.Damaged())
	}
	_, _, err = r.UnlockKeyFile(sc.kf)
	wantIs(t, err, ErrCorrupt, ErrWrongKey)
	if _, _, err := r.UnlockPassphrase(sc.pass); err != nil {
		t.Fatal(err)
	}
	// A wrong passphrase is still wrong, the damaged slot named too.
	_, _, err = r.UnlockPassphrase([]byte("wrong"))
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	// The last intact slot stays; the damaged one can go.
	wantIs(t, r.Remove(sc.slots[TypePassphrase].ID), ErrLastSlot)
	if err := r.Remove(sc.slots[TypeKeyFile].ID); err != nil {
		t.Fatal(err)
	}
	// A slot file under another slot's name is damaged too.
	if err := os.WriteFile(filepath.Join(string(st), "0123456789abcdef"), sc.slots[TypeRecovery].Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	wantIs(t, r.Damaged()["0123456789abcdef"], ErrCorrupt)
}

// TestRingMixedKeys: a slot of another master key in the store (copied
// from another store, or planted: anyone can make a recovery slot to a
// public recipient) is refused before any slot is tried.
func TestRingMixedKeys(t *testing.T) {
	st := newStorage(t)
	sc := newSecrets(t)
	r, err := Init(st, sc.slots[TypePassphrase])
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(sc.mk, sc.slots[TypeRecovery]); err != nil {
		t.Fatal(err)
	}
	attacker, _ := NewMasterKey()
	planted, err := NewRecoverySlot(attacker, sc.identity.Recipient(), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PutKeySlot(planted.ID, planted.Bytes()); err != nil {
		t.Fatal(err)
	}
	r, err = Load(st)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = r.UnlockRecovery(sc.identity)
	wantIs(t, err, ErrCorrupt, ErrWrongKey)
	var me *MixedKeysError
	if !errors.As(err, &me) || len(me.Keys) != 2 {
		t.Fatalf("error %v", err)
	}
	_, _, err = r.UnlockPassphrase(sc.pass)
	wantIs(t, err, ErrCorrupt)
	if err := r.Remove(planted.ID); err != nil {
		t.Fatal(err)
	}
	if mk, _, err := r.UnlockRecovery(sc.identity); err != nil || !bytes.Equal(mk.Bytes(), sc.mk.Bytes()) {
		t.Fatalf("after removing the planted slot: %v", err)
	}
}
