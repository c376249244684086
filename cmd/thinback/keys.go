package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// The flags that say where the secret unlocking an encrypted store is.
// A passphrase itself is never a flag's value (see package secret).
var (
	keyFileFlag          = &cli.StringFlag{Name: "key-file", TakesFile: true, EnvVars: []string{"THINBACK_KEY_FILE"}, Usage: "unlock an encrypted store with this key file (or $THINBACK_KEY_FILE)"}
	passwordFileFlag     = &cli.StringFlag{Name: "password-file", TakesFile: true, Usage: "read the passphrase from the first line of this file"}
	passwordCommandFlag  = &cli.StringFlag{Name: "password-command", Usage: "run this command (sh -c) and take the first line it prints as the passphrase"}
	recoveryIdentityFlag = &cli.StringFlag{Name: "recovery-identity", TakesFile: true, Usage: "unlock with a recovery slot: this age identity file holds its private key"}
)

// keyFlags are the flags of every command that reads or writes an
// encrypted store. Without any, the passphrase comes from
// $THINBACK_PASSWORD or is asked for at the terminal.
var keyFlags = []cli.Flag{keyFileFlag, passwordFileFlag, passwordCommandFlag, recoveryIdentityFlag}

// secretSources collects the secret sources a command was given.
func secretSources(c *cli.Context, e *env) secret.Sources {
	return withPrompt(e, secret.Sources{
		KeyFile:         c.String(keyFileFlag.Name),
		Identity:        c.String(recoveryIdentityFlag.Name),
		PasswordFile:    c.String(passwordFileFlag.Name),
		PasswordCommand: c.String(passwordCommandFlag.Name),
		Password:        os.Getenv(secret.PasswordEnv),
		Stderr:          e.stderr,
	})
}

// withPrompt adds to s the prompt at the command's terminal, if it has
// one that opens.
func withPrompt(e *env, s secret.Sources) secret.Sources {
	if e.tty != "" {
		if f, err := os.OpenFile(e.tty, os.O_RDWR, 0); err == nil {
			f.Close()
			s.Prompt = func(prompt string) ([]byte, error) { return ttyPrompt(e.tty, prompt) }
		}
	}
	return s
}

// ttyPrompt asks at the terminal, without echo, as ssh and gpg do: not on
// standard input, which may carry a stream.
func ttyPrompt(path, prompt string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.WriteString(prompt); err != nil {
		return nil, err
	}
	p, err := term.ReadPassword(int(f.Fd()))
	f.WriteString("\n")
	return p, err
}

// storeKey returns the key of an encrypted store, unlocking one of its key
// slots with the secret the command was given; nil for a store without
// key slots (unencrypted). A secret that opens no slot, or none given, is
// exit 14.
func storeKey(ctx context.Context, e *env, c *cli.Context, repo catalog.Repository) (*archive.Key, error) {
	if e.made != nil && e.made.store == repo.String() {
		return e.made.key, nil // made by this command (--encrypt)
	}
	ring, err := keys.Load(repo)
	if errors.Is(err, keys.ErrNoSlots) {
		// A key given for a store in the clear: either a mistake, or
		// its slots were removed so that this command would read
		// planted files, or write, in the clear. Neither goes on.
		if given := secretSources(c, e).Given(); given != "" {
			return nil, fmt.Errorf("store %s has no key slots, so it is not encrypted, yet %s was given: %w; "+
				"if it was encrypted, someone who can write to it removed its slots, and what it holds now was not written under your key; "+
				"if it never was, run without a key", repo, given, secret.ErrNotEncrypted)
		}
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("key slots of %s: %w", repo, err)
	}
	mk, _, err := unlockRing(ctx, e, c, repo, ring)
	if err != nil {
		return nil, err
	}
	defer mk.Destroy()
	return archive.NewKey(mk.Bytes())
}

// unlockRing opens the master key of repo's key slots with the secret
// the command was given, as storeKey does; the key commands need the
// slot it came from too. The caller destroys the key.
func unlockRing(ctx context.Context, e *env, c *cli.Context, repo catalog.Repository, ring *keys.Ring) (*keys.MasterKey, *keys.Slot, error) {
	mk, slot, err := secret.Unlock(ctx, ring, secretSources(c, e), repo.String())
	if err != nil {
		return nil, nil, err
	}
	if slot.Type == keys.TypeRecovery {
		// Anyone who can write to the store can add a recovery slot
		// wrapping a key of their own: the user checks the id.
		printable.Sayf(e.stderr, "thinback: unlocked %s with recovery slot %s: master key id %s (check that it is the id thinback key list showed for this store)", repo, slot.ID, mk.ID())
	}
	return mk, slot, nil
}

// fileKey returns the key for delta files read or written outside a
// store (send -o, receive --to, apply): the key of the store named by
// --store when one is (unlocked as storeKey does), else the key file's
// own key (keys.KeyFile.StreamKey) when --key-file is given, else nil
// (plain files; an encrypted one is refused with its key id).
func fileKey(ctx context.Context, e *env, c *cli.Context) (*archive.Key, error) {
	if loc := c.String(storeFlag.Name); loc != "" && c.IsSet(storeFlag.Name) {
		repo, err := openStore(ctx, e, loc, false)
		if err != nil {
			return nil, err
		}
		defer closeStore(e, repo)
		return storeKey(ctx, e, c, repo)
	}
	path := c.String(keyFileFlag.Name)
	if path == "" {
		return nil, nil
	}
	kf, err := keys.ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer kf.Destroy()
	mk, err := kf.StreamKey()
	if err != nil {
		return nil, err
	}
	defer mk.Destroy()
	return archive.NewKey(mk.Bytes())
}
