package keys

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: a slot file from a store is outside input. Parse never
// panics, returns a SlotError for what it refuses, and what it accepts
// it gives back unchanged and reads again alike.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.slot"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"slot":{"version":1},"wrapped":"","sha256":""}`))
	f.Add([]byte(`{"slot":{"version":2,"id":"0123456789abcdef"},"wrapped":"","sha256":"b3c6d9d4efb1d3b4a1a8b2f9c5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4"}`))
	f.Fuzz(checkParse)
}

// FuzzParseHeader: a slot header behind a checksum that holds, as in a
// slot made by hand; FuzzParse rarely gets past the checksum.
func FuzzParseHeader(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "*.slot"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			continue
		}
		var fr struct {
			Slot    json.RawMessage `json:"slot"`
			Wrapped string          `json:"wrapped"`
		}
		if json.Unmarshal(b, &fr) == nil {
			f.Add([]byte(fr.Slot), fr.Wrapped)
		}
	}
	f.Fuzz(func(t *testing.T, hdr []byte, wrapped string) {
		w, err := json.Marshal(wrapped)
		if err != nil {
			return
		}
		var back string
		if json.Unmarshal(w, &back) != nil || back != wrapped {
			return // not UTF-8: the checksum would be over other bytes
		}
		sum := checksum(hdr, wrapped)
		file := append([]byte(`{"slot":`), hdr...)
		file = append(file, `,"wrapped":`...)
		file = append(file, w...)
		file = append(file, `,"sha256":"`+hex.EncodeToString(sum[:])+`"}`...)
		checkParse(t, file)
	})
}

// checkParse: Parse never panics, returns a SlotError for what it
// refuses, and what it accepts it gives back unchanged, reads again
// alike, and holds within the format's bounds.
func checkParse(t *testing.T, data []byte) {
	s, err := Parse(data)
	if err != nil {
		if s != nil {
			t.Fatal("a slot and an error")
		}
		var se *SlotError
		if !errors.As(err, &se) {
			t.Fatalf("error %v is not a SlotError", err)
		}
		return
	}
	if !bytes.Equal(s.Bytes(), data) {
		t.Fatal("Bytes differs from the input")
	}
	again, err := Parse(s.Bytes())
	if err != nil || again.ID != s.ID || again.KeyID != s.KeyID || again.Type != s.Type {
		t.Fatalf("parsed again: %v", err)
	}
	if validLabel(s.Label) != nil || !isLowerHex(s.ID, 16) || len(s.nonce) != nonceSize || len(s.wrapped) != wrappedSize {
		t.Fatalf("accepted %+v", s)
	}
	switch s.Type {
	case TypePassphrase:
		if s.Argon2.validate() != nil || len(s.salt) != saltSize {
			t.Fatalf("accepted argon2id %+v", s.Argon2)
		}
	case TypeKeyFile:
		if len(s.salt) != saltSize {
			t.Fatal("accepted a key-file salt")
		}
	case TypeRecovery:
		if validRecipient(s.Recipient) != nil || len(s.ageBlob) == 0 || len(s.ageBlob) > maxAgeBlob {
			t.Fatal("accepted a recovery slot")
		}
	default:
		t.Fatalf("accepted type %q", s.Type)
	}
}

// FuzzParseKeyFile: what ParseKeyFile accepts is the key file it writes.
func FuzzParseKeyFile(f *testing.F) {
	kf, _ := NewKeyFile()
	f.Add(kf.Marshal())
	f.Add([]byte("thinback key file v1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := ParseKeyFile(data)
		if err != nil {
			return
		}
		m := kf.Marshal()
		if !bytes.Equal(m, data) && !bytes.Equal(m, append(bytes.Clone(data), '\n')) {
			t.Fatalf("accepted %q, writes %q", data, m)
		}
	})
}
