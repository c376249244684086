package secret

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"filippo.io/age"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
)

var fast = keys.Argon2Params{Time: 1, MemoryKiB: keys.MinArgon2MemoryKiB, Threads: 1}

func TestPassphraseSources(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	file := filepath.Join(dir, "pass")
	if err := os.WriteFile(file, []byte("from file\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	prompt := func(string) ([]byte, error) { return []byte("typed"), nil }
	var stderr bytes.Buffer
	for _, tc := range []struct {
		name string
		s    Sources
		want string
	}{
		{"file first line", Sources{PasswordFile: file, Password: "env", Prompt: prompt}, "from file"},
		{"command", Sources{PasswordCommand: "printf 'cmd\\r\\nrest'; echo to-stderr >&2", Password: "env", Stderr: &stderr}, "cmd"},
		{"environment", Sources{Password: "env", Prompt: prompt}, "env"},
		{"prompt", Sources{Prompt: prompt}, "typed"},
	} {
		got, err := tc.s.Passphrase(ctx, "? ")
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: Passphrase = %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if !strings.Contains(stderr.String(), "to-stderr") {
		t.Errorf("the password command's stderr was not passed on: %q", stderr.String())
	}
	if _, err := (Sources{}).Passphrase(ctx, "? "); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no source, no terminal: %v, want ErrNoSecret", err)
	}
	if _, err := (Sources{PasswordFile: filepath.Join(dir, "missing")}).Passphrase(ctx, "? "); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing password file: %v", err)
	}
	if _, err := (Sources{PasswordCommand: "exit 3"}).Passphrase(ctx, "? "); err == nil || !strings.Contains(err.Error(), `"exit 3"`) {
		t.Errorf("failing password command: %v", err)
	}
}

func TestNewPassphrase(t *testing.T) {
	ctx := context.Background()
	answers := func(a ...string) func(string) ([]byte, error) {
		return func(string) ([]byte, error) {
			s := a[0]
			a = a[1:]
			return []byte(s), nil
		}
	}
	if p, err := (Sources{Prompt: answers("new", "new")}).NewPassphrase(ctx, "? "); err != nil || string(p) != "new" {
		t.Errorf("typed twice: %q, %v", p, err)
	}
	if _, err := (Sources{Prompt: answers("new", "other")}).NewPassphrase(ctx, "? "); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Errorf("typed two different: %v", err)
	}
	if _, err := (Sources{Prompt: answers("", "")}).NewPassphrase(ctx, "? "); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty typed: %v", err)
	}
	if p, err := (Sources{Password: "env", Prompt: answers("x", "y")}).NewPassphrase(ctx, "? "); err != nil || string(p) != "env" {
		t.Errorf("from the environment: %q, %v", p, err)
	}
}

// TestUnlock unlocks a real store's slots with each kind of secret.
func TestUnlock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := catalog.OpenStore(filepath.Join(dir, "store"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	mk, err := keys.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := keys.NewPassphraseSlot(mk, []byte("right"), fast, "")
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Init(st, ps)
	if err != nil {
		t.Fatal(err)
	}
	kfPath := filepath.Join(dir, "store.key")
	kf, err := keys.CreateKeyFile(kfPath)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := keys.NewKeyFileSlot(mk, kf, "cron")
	if err != nil {
		t.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	rs, err := keys.NewRecoverySlot(mk, id.Recipient(), "offline")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*keys.Slot{ks, rs} {
		if err := ring.Add(mk, s); err != nil {
			t.Fatal(err)
		}
	}
	idPath := filepath.Join(dir, "identity.txt")
	if err := os.WriteFile(idPath, []byte("# recovery\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    Sources
		slot *keys.Slot
	}{
		{"key file", Sources{KeyFile: kfPath, Password: "wrong"}, ks},
		{"identity", Sources{Identity: idPath}, rs},
		{"passphrase", Sources{Password: "right"}, ps},
	} {
		got, slot, err := Unlock(ctx, ring, tc.s, st.String())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got.ID() != mk.ID() || slot.ID != tc.slot.ID {
			t.Errorf("%s: unlocked key %s with slot %s, want %s with %s", tc.name, got.ID(), slot.ID, mk.ID(), tc.slot.ID)
		}
	}
	if _, _, err := Unlock(ctx, ring, Sources{Password: "wrong"}, st.String()); !errors.Is(err, keys.ErrWrongKey) {
		t.Errorf("wrong passphrase: %v, want keys.ErrWrongKey", err)
	}
	_, _, err = Unlock(ctx, ring, Sources{}, st.String())
	if !errors.Is(err, ErrNoSecret) || !strings.Contains(err.Error(), st.String()) || !strings.Contains(err.Error(), "--key-file") {
		t.Errorf("nothing given: %v, want ErrNoSecret naming the store and the flags", err)
	}
}

// UnlockAny reads the secret once and finds the ring it opens among
// several: the groups of a store whose slots wrap different keys.
func TestUnlockAny(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var rings []*keys.Ring
	var ids []keys.KeyID
	for _, pass := range []string{"theirs", "ours"} {
		st, err := catalog.OpenStore(filepath.Join(dir, pass))
		if err != nil {
			t.Fatal(err)
		}
		mk, err := keys.NewMasterKey()
		if err != nil {
			t.Fatal(err)
		}
		ps, err := keys.NewPassphraseSlot(mk, []byte(pass), fast, "")
		if err != nil {
			t.Fatal(err)
		}
		r, err := keys.Init(st, ps)
		if err != nil {
			t.Fatal(err)
		}
		rings, ids = append(rings, r), append(ids, mk.ID())
	}
	asked := 0
	prompt := func(string) ([]byte, error) { asked++; return []byte("ours"), nil }
	i, mk, _, err := UnlockAny(ctx, rings, Sources{Prompt: prompt}, "s")
	if err != nil || i != 1 || mk.ID() != ids[1] {
		t.Fatalf("UnlockAny = %d, %v; want ring 1", i, err)
	}
	if asked != 1 {
		t.Errorf("the passphrase was asked %d times, want once", asked)
	}
	if i, _, _, err := UnlockAny(ctx, rings, Sources{Password: "neither"}, "s"); i != -1 || !errors.Is(err, keys.ErrWrongKey) {
		t.Errorf("a passphrase of neither: %d, %v; want keys.ErrWrongKey", i, err)
	}
	// A secret that opens two keys cannot tell which is the store's.
	twin, err := catalog.OpenStore(filepath.Join(dir, "twin"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := keys.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	ps, err := keys.NewPassphraseSlot(other, []byte("ours"), fast, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := keys.Init(twin, ps)
	if err != nil {
		t.Fatal(err)
	}
	_, _, _, err = UnlockAny(ctx, append(rings, r), Sources{Password: "ours"}, "s")
	if !errors.Is(err, keys.ErrCorrupt) || !strings.Contains(err.Error(), other.ID().String()) || !strings.Contains(err.Error(), ids[1].String()) {
		t.Errorf("a passphrase of two keys: %v, want keys.ErrCorrupt naming both", err)
	}
}

func TestGiven(t *testing.T) {
	prompt := func(string) ([]byte, error) { return nil, nil }
	if g := (Sources{Prompt: prompt, Stderr: &bytes.Buffer{}}).Given(); g != "" {
		t.Errorf("only a terminal: Given = %q, want none", g)
	}
	for _, s := range []Sources{{KeyFile: "k"}, {Identity: "i"}, {PasswordFile: "f"}, {PasswordCommand: "c"}, {Password: "p"}} {
		if s.Given() == "" {
			t.Errorf("%+v: Given says none", s)
		}
	}
}
