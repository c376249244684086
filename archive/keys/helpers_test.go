package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"filippo.io/age"
)

var seedFlag = flag.Uint64("seed", 0, "seed for random tests (0: from THINBACK_SEED or the clock)")

func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v, err := strconv.ParseUint(os.Getenv("THINBACK_SEED"), 10, 64); err == nil {
			seed = v
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// fast are the cheapest parameters a slot may hold, so tests do not
// spend a second per passphrase.
var fast = Argon2Params{Time: 1, MemoryKiB: MinArgon2MemoryKiB, Threads: 1}

// dirStorage keeps slots as files in a directory, each written whole by
// a rename and never replaced: a store's keys/ in miniature. (The stores
// themselves are tested in catalog and catalog/s3store.)
type dirStorage string

func (d dirStorage) String() string { return string(d) }

func (d dirStorage) KeySlots() (map[string][]byte, error) {
	entries, err := os.ReadDir(string(d))
	if err != nil {
		return nil, err
	}
	m := map[string][]byte{}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(string(d), e.Name()))
		if err != nil {
			return nil, err
		}
		m[e.Name()] = b
	}
	return m, nil
}

func (d dirStorage) PutKeySlot(id string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(string(d)), "slot")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	final := filepath.Join(string(d), id)
	if _, err := os.Lstat(final); err == nil {
		return &fs.PathError{Op: "put", Path: final, Err: fs.ErrExist}
	}
	return os.Rename(tmp.Name(), final)
}

func (d dirStorage) RemoveKeySlot(id string) error { return os.Remove(filepath.Join(string(d), id)) }

func newStorage(t *testing.T) dirStorage {
	d := filepath.Join(t.TempDir(), "keys")
	if err := os.Mkdir(d, 0o700); err != nil {
		t.Fatal(err)
	}
	return dirStorage(d)
}

// secrets are one of each kind of secret, and a slot of each for mk.
type secrets struct {
	mk       *MasterKey
	pass     []byte
	kf       *KeyFile
	identity *age.X25519Identity
	slots    map[Type]*Slot
}

func newSecrets(t *testing.T) *secrets {
	t.Helper()
	mk, err := NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	kf, err := NewKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	s := &secrets{mk: mk, pass: []byte("correct horse battery staple"), kf: kf, identity: id, slots: map[Type]*Slot{}}
	if s.slots[TypePassphrase], err = NewPassphraseSlot(mk, s.pass, fast, "laptop"); err != nil {
		t.Fatal(err)
	}
	if s.slots[TypeKeyFile], err = NewKeyFileSlot(mk, kf, "cron"); err != nil {
		t.Fatal(err)
	}
	if s.slots[TypeRecovery], err = NewRecoverySlot(mk, id.Recipient(), "offline"); err != nil {
		t.Fatal(err)
	}
	return s
}

// open opens slot s with the right secret of its type.
func (sc *secrets) open(s *Slot) (*MasterKey, error) {
	switch s.Type {
	case TypePassphrase:
		return s.OpenPassphrase(sc.pass)
	case TypeKeyFile:
		return s.OpenKeyFile(sc.kf)
	default:
		return s.OpenRecovery(sc.identity)
	}
}

// reframe rewrites a slot file's header with change and computes its
// checksum again, as someone who edits a slot on purpose would.
func reframe(t *testing.T, file []byte, change func(h map[string]any)) []byte {
	t.Helper()
	var f struct {
		Slot    json.RawMessage `json:"slot"`
		Wrapped string          `json:"wrapped"`
	}
	if err := json.Unmarshal(file, &f); err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	dec := json.NewDecoder(bytes.NewReader(f.Slot))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		t.Fatal(err)
	}
	change(h)
	hdr, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append(append(hdr, '\n'), f.Wrapped...))
	return []byte(`{"slot":` + string(hdr) + `,"wrapped":"` + f.Wrapped + `","sha256":"` + hex.EncodeToString(sum[:]) + "\"}\n")
}

func wantIs(t *testing.T, err error, target error, not ...error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error %v, want %v", err, target)
	}
	for _, n := range not {
		if errors.Is(err, n) {
			t.Fatalf("error %v also matches %v", err, n)
		}
	}
}
