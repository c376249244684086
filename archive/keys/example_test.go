package keys

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
)

// A store's first slot, then a key file's slot for cron, both opening the
// same master key; the slots are what the store keeps (Storage).
func Example() {
	dir, _ := os.MkdirTemp("", "keys-example")
	defer os.RemoveAll(dir)
	keysDir := filepath.Join(dir, "keys")
	_ = os.Mkdir(keysDir, 0o700)
	store := dirStorage(keysDir)

	mk, _ := NewMasterKey()
	first, _ := NewPassphraseSlot(mk, []byte("correct horse battery staple"), fast, "admin")
	ring, err := Init(store, first)
	if err != nil {
		fmt.Println(err)
		return
	}
	kf, _ := CreateKeyFile(filepath.Join(dir, "store.key"))
	cron, _ := NewKeyFileSlot(mk, kf, "cron")
	if err := ring.Add(mk, cron); err != nil {
		fmt.Println(err)
		return
	}

	// Later, another command: the key file alone opens the store.
	ring, _ = Load(store)
	kf, _ = ReadKeyFile(filepath.Join(dir, "store.key"))
	got, slot, err := ring.UnlockKeyFile(kf)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(ring.Slots()), "slots; opened by", slot.Label, bytes.Equal(got.Bytes(), mk.Bytes()))
	// Output: 2 slots; opened by cron true
}
