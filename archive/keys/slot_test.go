package keys

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

func TestSlotRoundTrip(t *testing.T) {
	sc := newSecrets(t)
	for typ, s := range sc.slots {
		t.Run(string(typ), func(t *testing.T) {
			p, err := Parse(s.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			if p.ID != s.ID || p.Type != typ || !p.Created.Equal(s.Created) || p.Label != s.Label || p.KeyID != sc.mk.ID() {
				t.Fatalf("parsed %+v, made %+v", p, s)
			}
			if time.Since(p.Created) > time.Hour || p.Created.Location() != time.UTC {
				t.Errorf("created %v", p.Created)
			}
			if typ == TypePassphrase && p.Argon2 != fast {
				t.Errorf("argon2 %+v, want %+v", p.Argon2, fast)
			}
			if typ == TypeRecovery && p.Recipient != sc.identity.Recipient().String() {
				t.Errorf("recipient %q", p.Recipient)
			}
			mk, err := sc.open(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(mk.Bytes(), sc.mk.Bytes()) {
				t.Fatal("the slot opens another key")
			}
			if bytes.Contains(s.Bytes(), sc.mk.Bytes()) {
				t.Fatal("the master key is in the slot file")
			}
		})
	}
}

func TestSlotWrongKey(t *testing.T) {
	sc := newSecrets(t)
	other := newSecrets(t)
	_, err := sc.slots[TypePassphrase].OpenPassphrase([]byte("correct horse battery stapler"))
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	_, err = sc.slots[TypeKeyFile].OpenKeyFile(other.kf)
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	_, err = sc.slots[TypeRecovery].OpenRecovery(other.identity)
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	// An identity of another kind is no more the slot's.
	scrypt, err := age.NewScryptIdentity("a passphrase")
	if err != nil {
		t.Fatal(err)
	}
	_, err = sc.slots[TypeRecovery].OpenRecovery(scrypt)
	wantIs(t, err, ErrWrongKey, ErrCorrupt)
	// A secret of the other kind.
	_, err = sc.slots[TypeKeyFile].OpenPassphrase(sc.pass)
	wantIs(t, err, ErrSlotType)
}

// TestSlotFlippedByte: a byte changed anywhere in a slot file (a bad
// sector, a bit flip) makes it damaged, never a wrong key: the checksum
// tells them apart. The only changes that leave it usable are those to
// the trailing newline that keep it whitespace.
func TestSlotFlippedByte(t *testing.T) {
	r := newRand(t)
	sc := newSecrets(t)
	for typ, s := range sc.slots {
		t.Run(string(typ), func(t *testing.T) {
			file := s.Bytes()
			for i := range file {
				for _, x := range []byte{0x01, 0x80, byte(1 + r.IntN(255))} {
					bad := bytes.Clone(file)
					bad[i] ^= x
					p, err := Parse(bad)
					if err == nil {
						if i != len(file)-1 {
							t.Fatalf("byte %d ^ %#x: parsed", i, x)
						}
						if _, err := sc.open(p); err != nil {
							t.Fatalf("byte %d ^ %#x: parsed, then %v", i, x, err)
						}
						continue
					}
					wantIs(t, err, ErrCorrupt, ErrWrongKey)
				}
			}
		})
	}
}

// TestSlotAlteredOnPurpose: a slot whose header is changed and its
// checksum made again is one the AEAD refuses, which cannot tell that
// from a wrong key: it is ErrWrongKey (see the package documentation).
func TestSlotAlteredOnPurpose(t *testing.T) {
	sc := newSecrets(t)
	for typ, s := range sc.slots {
		bad := reframe(t, s.Bytes(), func(h map[string]any) { h["label"] = "changed" })
		p, err := Parse(bad)
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		_, err = sc.open(p)
		wantIs(t, err, ErrWrongKey, ErrCorrupt)
	}
}

func TestSlotVersion(t *testing.T) {
	sc := newSecrets(t)
	bad := reframe(t, sc.slots[TypeKeyFile].Bytes(), func(h map[string]any) {
		h["version"] = 2
		h["something_new"] = true
	})
	_, err := Parse(bad)
	wantIs(t, err, ErrVersion, ErrCorrupt)
	var se *SlotError
	if !errors.As(err, &se) || se.ID != sc.slots[TypeKeyFile].ID {
		t.Fatalf("error %v does not name the slot", err)
	}
}

// TestSlotInvalid: fields a slot made by hand could hold, each refused as
// damaged with its checksum right.
func TestSlotInvalid(t *testing.T) {
	sc := newSecrets(t)
	for name, c := range map[string]struct {
		typ    Type
		change func(h map[string]any)
	}{
		"unknown field":    {TypeKeyFile, func(h map[string]any) { h["extra"] = 1 }},
		"bad id":           {TypeKeyFile, func(h map[string]any) { h["id"] = "../../etc" }},
		"upper hex id":     {TypeKeyFile, func(h map[string]any) { h["id"] = strings.ToUpper(h["id"].(string)) }},
		"local time":       {TypeKeyFile, func(h map[string]any) { h["created"] = "2026-12-07T16:00:00+01:00" }},
		"fractional time":  {TypeKeyFile, func(h map[string]any) { h["created"] = "2026-12-07T16:00:00.5Z" }},
		"control in label": {TypeKeyFile, func(h map[string]any) { h["label"] = "a\x1b[2Jb" }},
		"bidi in label":    {TypeKeyFile, func(h map[string]any) { h["label"] = "a\u202eb" }},
		"long label":       {TypeKeyFile, func(h map[string]any) { h["label"] = strings.Repeat("x", maxLabel+1) }},
		"short nonce":      {TypeKeyFile, func(h map[string]any) { h["nonce"] = "AAAA" }},
		"unknown type":     {TypeKeyFile, func(h map[string]any) { h["type"] = "tpm" }},
		"type mismatch":    {TypeKeyFile, func(h map[string]any) { h["type"] = "passphrase" }},
		"two parameter sets": {TypeKeyFile, func(h map[string]any) {
			h["recovery"] = map[string]any{"recipient": "age1x", "age": "AAAA"}
		}},
		"huge argon2 memory": {TypePassphrase, func(h map[string]any) {
			h["argon2id"].(map[string]any)["memory_kib"] = 64 << 20
		}},
		"argon2 threads over a byte": {TypePassphrase, func(h map[string]any) {
			h["argon2id"].(map[string]any)["threads"] = 257
		}},
		"zero argon2 time": {TypePassphrase, func(h map[string]any) {
			h["argon2id"].(map[string]any)["time"] = 0
		}},
		"non-canonical base64": {TypePassphrase, func(h map[string]any) {
			a := h["argon2id"].(map[string]any)
			s := a["salt"].(string) // 32 bytes: 44 characters, the last before '=' carrying 2 spare bits
			a["salt"] = s[:42] + string(s[42]^1) + "="
		}},
		"recipient with a space": {TypeRecovery, func(h map[string]any) {
			h["recovery"].(map[string]any)["recipient"] = "age1 x"
		}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(reframe(t, sc.slots[c.typ].Bytes(), c.change))
			wantIs(t, err, ErrCorrupt, ErrWrongKey)
		})
	}
	_, err := Parse(make([]byte, MaxSlotSize+1))
	wantIs(t, err, ErrCorrupt)
	_, err = Parse(append(sc.slots[TypeKeyFile].Bytes(), "{}"...))
	wantIs(t, err, ErrCorrupt)
}

func TestNewSlotInvalid(t *testing.T) {
	sc := newSecrets(t)
	_, err := NewPassphraseSlot(sc.mk, nil, fast, "")
	wantIs(t, err, ErrInvalid)
	_, err = NewPassphraseSlot(sc.mk, sc.pass, Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}, "")
	wantIs(t, err, ErrInvalid)
	_, err = NewKeyFileSlot(sc.mk, sc.kf, "tab\there")
	wantIs(t, err, ErrInvalid)
}

func TestMasterKeyID(t *testing.T) {
	a, _ := NewMasterKey()
	b, _ := NewMasterKey()
	if a.ID() == b.ID() {
		t.Fatal("key ids do not tell keys apart")
	}
	var again MasterKey
	copy(again.key[:], a.Bytes())
	if again.ID() != a.ID() {
		t.Fatal("a key's id changes")
	}
	if len(a.ID().String()) != 16 {
		t.Fatalf("id %q", a.ID())
	}
	a.Destroy()
	if !bytes.Equal(a.Bytes(), make([]byte, KeySize)) {
		t.Fatal("Destroy left the key")
	}
}
