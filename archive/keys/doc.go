// Package keys keeps a store's master key wrapped in key slots, as
// restic's key files and LUKS's keyslots do: a random 256-bit master key,
// never written unwrapped, and one slot per secret that can unwrap it,
// so a passphrase is changed, a key added or one withdrawn without
// touching the data the master key protects.
//
// Three kinds of slot:
//
//   - passphrase: the passphrase stretched with Argon2id, its parameters
//     kept in the slot (DefaultArgon2: about a second and 128 MiB);
//   - key file: a file holding a random secret (CreateKeyFile), for
//     commands cron runs; HKDF-SHA256 of the secret, no stretching;
//   - recovery: wrapped to an age recipient (filippo.io/age), so an
//     identity kept offline opens the store when every other secret is
//     lost.
//
// Each slot wraps the master key with XChaCha20-Poly1305 under a key it
// derives from its secret, its header (id, type, time, label, key id,
// parameters) as associated data. The slot file format is specified in
// docs/FORMAT.md, "Key slots".
//
// # Basics
//
//	mk, _ := keys.NewMasterKey()
//	slot, _ := keys.NewPassphraseSlot(mk, passphrase, keys.DefaultArgon2, "laptop")
//	ring, err := keys.Init(store, slot)              // store: a keys.Storage (catalog.Repository)
//
//	ring, err = keys.Load(store)                     // another day, another command
//	mk, slot, err = ring.UnlockPassphrase(passphrase) // ErrWrongKey
//	kf, _ := keys.CreateKeyFile("/etc/thinback/vm1.key")
//	s, _ := keys.NewKeyFileSlot(mk, kf, "cron")
//	err = ring.Add(mk, s)
//	err = ring.Remove(slot.ID)                       // ErrLastSlot for the last one
//
// # Caveats
//
//   - A wrong secret and a slot altered on purpose (its checksum made
//     again) look alike to the AEAD: both are ErrWrongKey. Accidental
//     damage fails the slot's checksum and is ErrCorrupt.
//   - Anyone who can write to the store can add a recovery slot (it needs
//     only a public recipient) wrapping a key of their own. Slots of one
//     store that wrap different keys are refused (MixedKeysError); a
//     caller that holds a master key from a recovery slot should check it
//     against the key the store's data is under before it writes with it.
//   - A Ring does not lock the store: the caller serialises commands that
//     change one store's slots.
//   - Secrets are taken as []byte, and the copies this package makes
//     (derived keys, the unwrapped key before it becomes a MasterKey, a
//     key file's text) are cleared after use; copies made before they
//     reach it (a passphrase read into a string) are beyond its reach.
package keys
