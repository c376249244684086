package keys

import (
	"bytes"
	"encoding/hex"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
)

var update = flag.Bool("update", false, "write testdata's golden slots anew")

// The golden slots in testdata wrap this master key; each opens with its
// secret there (golden.passphrase, golden.key, golden.age). They pin the
// format of docs/FORMAT.md, "Key slots": a change that makes thinback
// unable to open them breaks every store made before it.
const goldenMaster = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"

func goldenSecrets(t *testing.T) (mk *MasterKey, pass []byte, kf *KeyFile, ids []age.Identity) {
	t.Helper()
	mk = new(MasterKey)
	if _, err := hex.Decode(mk.key[:], []byte(goldenMaster)); err != nil {
		t.Fatal(err)
	}
	pass, err := os.ReadFile(filepath.Join("testdata", "golden.passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	pass = bytes.TrimSuffix(pass, []byte("\n"))
	text, err := os.ReadFile(filepath.Join("testdata", "golden.key"))
	if err != nil {
		t.Fatal(err)
	}
	if kf, err = ParseKeyFile(text); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join("testdata", "golden.age"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ids, err = age.ParseIdentities(f); err != nil {
		t.Fatal(err)
	}
	return mk, pass, kf, ids
}

func TestGolden(t *testing.T) {
	mk, pass, kf, ids := goldenSecrets(t)
	if *update {
		slots := map[string]func() (*Slot, error){
			"passphrase": func() (*Slot, error) { return NewPassphraseSlot(mk, pass, fast, "golden") },
			"keyfile":    func() (*Slot, error) { return NewKeyFileSlot(mk, kf, "golden") },
			"recovery": func() (*Slot, error) {
				return NewRecoverySlot(mk, ids[0].(*age.X25519Identity).Recipient(), "golden")
			},
		}
		for name, make := range slots {
			s, err := make()
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join("testdata", name+".slot"), s.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	// HKDF-SHA256(goldenMaster, no salt, "thinback key id v1"), 8 bytes,
	// as computed apart from this package (Python hmac).
	if got := mk.ID().String(); got != "93799132a063e9a5" {
		t.Errorf("key id %s", got)
	}
	for name, open := range map[string]func(*Slot) (*MasterKey, error){
		"passphrase": func(s *Slot) (*MasterKey, error) { return s.OpenPassphrase(pass) },
		"keyfile":    func(s *Slot) (*MasterKey, error) { return s.OpenKeyFile(kf) },
		"recovery":   func(s *Slot) (*MasterKey, error) { return s.OpenRecovery(ids...) },
	} {
		data, err := os.ReadFile(filepath.Join("testdata", name+".slot"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := Parse(data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(s.Type) != name || s.Label != "golden" || s.KeyID != mk.ID() {
			t.Errorf("%s: %+v", name, s)
		}
		got, err := open(s)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if hex.EncodeToString(got.Bytes()) != goldenMaster {
			t.Errorf("%s opens %x", name, got.Bytes())
		}
		if strings.Contains(string(data), goldenMaster) {
			t.Errorf("%s holds the master key in hex", name)
		}
	}
}
