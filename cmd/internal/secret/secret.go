// Package secret finds the secret that unlocks an encrypted store: a key
// file, an age identity for a recovery slot, or a passphrase read from a
// file, printed by a command, taken from the environment or typed at the
// terminal. A passphrase is never a command-line argument: those are
// visible to every user of the machine (ps, /proc/PID/cmdline).
package secret

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"filippo.io/age"
	"github.com/thinback/thinback/archive/keys"
)

// PasswordEnv is the environment variable that may hold the passphrase.
const PasswordEnv = "THINBACK_PASSWORD"

// ErrNoSecret: a store is encrypted and nothing was given that could
// unlock it (and there is no terminal to ask at).
var ErrNoSecret = errors.New("no key or passphrase given")

// ErrNotEncrypted: a secret was given for a store that has no key slots.
// Either the store was never encrypted, or someone who can write to it
// removed its slots, and what it holds was not written under the key:
// a command given a key does not read or write such a store in the clear.
var ErrNotEncrypted = errors.New("a key was given, but the store has no key slots")

// maxSecret bounds what is read from a password file or command.
const maxSecret = 4096

// Sources says where a command finds its secret. The first that is set
// decides, in this order: KeyFile, Identity, then the passphrase from
// PasswordFile, PasswordCommand, Password, Prompt.
type Sources struct {
	KeyFile         string // --key-file, $THINBACK_KEY_FILE: a key file's path
	Identity        string // --recovery-identity: an age identity file
	PasswordFile    string // --password-file: its first line is the passphrase
	PasswordCommand string // --password-command: run by sh -c, its first line of output
	Password        string // $THINBACK_PASSWORD
	// Prompt asks at the terminal (no echo) and returns what was typed;
	// nil when there is no terminal.
	Prompt func(prompt string) ([]byte, error)
	// Stderr receives a password command's standard error.
	Stderr io.Writer
}

// Given names the secret given explicitly (a flag, $THINBACK_KEY_FILE or
// $THINBACK_PASSWORD), or returns "" when none was: the terminal is
// asked only when a store needs a secret.
func (s Sources) Given() string {
	switch {
	case s.KeyFile != "":
		return "a key file (--key-file or $THINBACK_KEY_FILE)"
	case s.Identity != "":
		return "a recovery identity (--recovery-identity)"
	case s.PasswordFile != "":
		return "a password file (--password-file)"
	case s.PasswordCommand != "":
		return "a password command (--password-command)"
	case s.Password != "":
		return "a passphrase ($" + PasswordEnv + ")"
	}
	return ""
}

// passphraseSet reports whether a passphrase source other than the
// prompt is given.
func (s Sources) passphraseSet() bool {
	return s.PasswordFile != "" || s.PasswordCommand != "" || s.Password != ""
}

// Passphrase returns the passphrase from the first source set, asking at
// the terminal with prompt when none is. ErrNoSecret when there is no
// source and no terminal.
func (s Sources) Passphrase(ctx context.Context, prompt string) ([]byte, error) {
	switch {
	case s.PasswordFile != "":
		return fromFile(s.PasswordFile)
	case s.PasswordCommand != "":
		return fromCommand(ctx, s.PasswordCommand, s.Stderr)
	case s.Password != "":
		return []byte(s.Password), nil
	case s.Prompt != nil:
		p, err := s.Prompt(prompt)
		if err != nil {
			return nil, fmt.Errorf("reading the passphrase at the terminal: %w", err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("%w: give --password-file, --password-command or $%s (or run on a terminal)", ErrNoSecret, PasswordEnv)
}

// NewPassphrase returns a new passphrase (for a new slot): from the
// sources as Passphrase does, or typed twice at the terminal. An empty
// one is refused.
func (s Sources) NewPassphrase(ctx context.Context, prompt string) ([]byte, error) {
	if s.passphraseSet() || s.Prompt == nil {
		p, err := s.Passphrase(ctx, prompt)
		if err == nil && len(p) == 0 {
			err = errors.New("the new passphrase is empty")
		}
		return p, err
	}
	p, err := s.Prompt(prompt)
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase at the terminal: %w", err)
	}
	if len(p) == 0 {
		return nil, errors.New("the new passphrase is empty")
	}
	again, err := s.Prompt("Repeat it: ")
	if err != nil {
		return nil, fmt.Errorf("reading the passphrase at the terminal: %w", err)
	}
	if !bytes.Equal(p, again) {
		return nil, errors.New("the passphrases typed differ: nothing was changed")
	}
	return p, nil
}

// firstLine returns b up to its first line end.
func firstLine(b []byte) []byte {
	if i := bytes.IndexAny(b, "\r\n"); i >= 0 {
		return b[:i]
	}
	return b
}

func fromFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("password file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("password file %s: %w", path, err)
	}
	if len(b) > maxSecret {
		return nil, fmt.Errorf("password file %s: longer than %d bytes: is it the right file?", path, maxSecret)
	}
	return firstLine(b), nil
}

func fromCommand(ctx context.Context, command string, stderr io.Writer) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stderr = stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("password command %q: %w", command, err)
	}
	if len(out) > maxSecret {
		return nil, fmt.Errorf("password command %q: printed more than %d bytes", command, maxSecret)
	}
	return firstLine(out), nil
}

// Identities reads an age identity file (the private half of a recovery
// slot's recipient), as age -d -i reads one.
func Identities(path string) ([]age.Identity, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("recovery identity: %w", err)
	}
	defer f.Close()
	ids, err := age.ParseIdentities(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("recovery identity %s: %w", path, err)
	}
	return ids, nil
}

// Unlock opens ring's master key with the secret the sources give: a key
// file, an age identity, or a passphrase (asked for when none is given
// and there is a terminal). A secret that opens no slot is an error
// matching keys.ErrWrongKey.
func Unlock(ctx context.Context, ring *keys.Ring, s Sources, store string) (*keys.MasterKey, *keys.Slot, error) {
	_, mk, slot, err := UnlockAny(ctx, []*keys.Ring{ring}, s, store)
	return mk, slot, err
}

// UnlockAny is Unlock for several rings of one store: the groups of its
// slots that wrap different master keys (keys.MixedKeysError), one of
// which the store's owner can open. The secret is read once (a
// passphrase typed once, a password command run once) and tried on each
// ring in turn; the index of the ring it opens is returned. A secret that
// opens none gives the error of the first ring; one that opens more than
// one is refused (keys.ErrCorrupt): which key is the store's cannot be
// told from it.
func UnlockAny(ctx context.Context, rings []*keys.Ring, s Sources, store string) (int, *keys.MasterKey, *keys.Slot, error) {
	var try func(*keys.Ring) (*keys.MasterKey, *keys.Slot, error)
	switch {
	case s.KeyFile != "":
		kf, err := keys.ReadKeyFile(s.KeyFile)
		if err != nil {
			return -1, nil, nil, err
		}
		defer kf.Destroy()
		try = func(r *keys.Ring) (*keys.MasterKey, *keys.Slot, error) { return r.UnlockKeyFile(kf) }
	case s.Identity != "":
		ids, err := Identities(s.Identity)
		if err != nil {
			return -1, nil, nil, err
		}
		try = func(r *keys.Ring) (*keys.MasterKey, *keys.Slot, error) { return r.UnlockRecovery(ids...) }
	default:
		if !s.passphraseSet() && s.Prompt == nil {
			return -1, nil, nil, fmt.Errorf("store %s is encrypted: %w: give --key-file (or $THINBACK_KEY_FILE), --password-file, --password-command, $%s or --recovery-identity, or run on a terminal", store, ErrNoSecret, PasswordEnv)
		}
		p, err := s.Passphrase(ctx, "Passphrase of "+strings.TrimSpace(store)+": ")
		if err != nil {
			return -1, nil, nil, err
		}
		defer clear(p)
		try = func(r *keys.Ring) (*keys.MasterKey, *keys.Slot, error) { return r.UnlockPassphrase(p) }
	}
	var (
		first  error
		opened []int
		mk     *keys.MasterKey
		slot   *keys.Slot
		ids    []string
	)
	for i, r := range rings {
		k, s, err := try(r)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		opened, ids = append(opened, i), append(ids, k.ID().String())
		if mk == nil {
			mk, slot = k, s
		} else {
			k.Destroy()
		}
	}
	switch {
	case len(opened) == 1:
		return opened[0], mk, slot, nil
	case len(opened) > 1:
		mk.Destroy()
		return -1, nil, nil, fmt.Errorf("%s: the secret given opens slots of %d different master keys (%s), so which is the store's cannot be told from it: "+
			"check the key ids against the one written down when the store was made (thinback key list), and remove the others' slots with a secret only the store's opens: %w",
			store, len(opened), strings.Join(ids, ", "), keys.ErrCorrupt)
	case first == nil:
		first = fmt.Errorf("%s: %w", store, keys.ErrNoSlots)
	}
	return -1, nil, nil, first
}
