package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"filippo.io/age"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/urfave/cli/v2"
)

// The flags of the commands that may create a store (init, and the first
// backup or receive): whether it is encrypted, and the secrets of its
// first key slots. key add and key passwd share the last ones.
var (
	encryptFlag = &cli.BoolFlag{Name: "encrypt",
		Usage: "a new store is encrypted: make its master key and a passphrase slot (the passphrase from --password-file, --password-command, $THINBACK_PASSWORD, or typed twice)"}
	noEncryptFlag = &cli.BoolFlag{Name: "no-encrypt",
		Usage: "a new store on S3 is not encrypted: whoever reads the bucket reads every backed-up volume, and whoever writes to it can change what restore writes"}
	newKeyFileFlag = &cli.StringFlag{Name: "new-key-file", TakesFile: true,
		Usage: "also create this key file (mode 0600, never over an existing file; its directory 0700 if missing) and a key slot it opens, for cron (--key-file)"}
	recoveryRecipientFlag = &cli.StringSliceFlag{Name: "recovery-recipient",
		Usage: "also add a recovery slot wrapped to this age recipient (age1...): its identity, kept offline, opens the store when every other secret is lost"}
	recoveryRecipientFileFlag = &cli.StringFlag{Name: "recovery-recipient-file", TakesFile: true,
		Usage: "also add a recovery slot for each age recipient in this file (one a line, as age -R reads them)"}
	pbkdfMemoryFlag = &cli.UintFlag{Name: "pbkdf-memory", Value: uint(keys.DefaultArgon2.MemoryKiB >> 10),
		Usage: fmt.Sprintf("MiB of memory Argon2id takes to stretch a new passphrase (%d to %d)", keys.MinArgon2MemoryKiB>>10, keys.MaxArgon2MemoryKiB>>10)}
	pbkdfTimeFlag = &cli.UintFlag{Name: "pbkdf-time", Value: uint(keys.DefaultArgon2.Time),
		Usage: fmt.Sprintf("passes Argon2id makes over its memory to stretch a new passphrase (1 to %d)", keys.MaxArgon2Time)}
	labelFlag = &cli.StringFlag{Name: "label", Usage: "a name for the new key slot, for people (thinback key list shows it)"}
)

// createFlags are the flags of the commands that may create a store.
var createFlags = []cli.Flag{encryptFlag, noEncryptFlag, newKeyFileFlag, recoveryRecipientFlag, recoveryRecipientFileFlag,
	pbkdfMemoryFlag, pbkdfTimeFlag, labelFlag}

// addCreateFlags gives init, backup and receive the flags that say how a
// store they create is made, read into e before the command runs, so
// that openStore makes every new store the same way (newStore.open).
// Commands without them (catalog rebuild) create a store as before.
func addCreateFlags(e *env, cmd *cli.Command) {
	if cmd.Name != "init" && cmd.Name != "backup" && cmd.Name != "receive" {
		return
	}
	cmd.Flags = append(cmd.Flags, createFlags...)
	// The passphrase of the first slot comes from the secret sources.
	for _, f := range keyFlags {
		if !slices.Contains(cmd.Flags, f) {
			cmd.Flags = append(cmd.Flags, f)
		}
	}
	before := cmd.Before
	cmd.Before = func(c *cli.Context) error {
		e.create = &newStore{c: c, init: cmd.Name == "init",
			encrypt: c.Bool(encryptFlag.Name), noEncrypt: c.Bool(noEncryptFlag.Name)}
		if before != nil {
			return before(c)
		}
		return nil
	}
}

// newStore is what a command that may create a store was told about it.
type newStore struct {
	c                  *cli.Context
	init               bool // thinback init: a store that has key slots is an error
	encrypt, noEncrypt bool
}

// newKey is what makes the master key of a new encrypted store, or a new
// key slot: gathered before anything is written, so that a missing
// passphrase or an existing key file changes nothing.
type newKey struct {
	passphrase []byte
	keyFile    string
	recipients []keys.Recipient
	argon2     keys.Argon2Params
	label      string
}

func (nk *newKey) destroy() { clear(nk.passphrase) }

// argon2Params reads --pbkdf-memory and --pbkdf-time.
func argon2Params(c *cli.Context) (keys.Argon2Params, error) {
	p := keys.DefaultArgon2
	mib, t := c.Uint(pbkdfMemoryFlag.Name), c.Uint(pbkdfTimeFlag.Name)
	if mib < keys.MinArgon2MemoryKiB>>10 || mib > keys.MaxArgon2MemoryKiB>>10 {
		return p, usageError{msg: fmt.Sprintf("%s: --%s %d is outside %d to %d MiB", cmdName(c), pbkdfMemoryFlag.Name, mib,
			keys.MinArgon2MemoryKiB>>10, keys.MaxArgon2MemoryKiB>>10), hint: c.Command.HelpName}
	}
	if t < 1 || t > keys.MaxArgon2Time {
		return p, usageError{msg: fmt.Sprintf("%s: --%s %d is outside 1 to %d", cmdName(c), pbkdfTimeFlag.Name, t, keys.MaxArgon2Time),
			hint: c.Command.HelpName}
	}
	p.MemoryKiB, p.Time = uint32(mib<<10), uint32(t)
	return p, nil
}

// recipients reads --recovery-recipient and --recovery-recipient-file.
func recipients(c *cli.Context) ([]keys.Recipient, error) {
	text := c.StringSlice(recoveryRecipientFlag.Name)
	if path := c.String(recoveryRecipientFileFlag.Name); path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", recoveryRecipientFileFlag.Name, err)
		}
		text = append(text, string(b))
	}
	var out []keys.Recipient
	for _, t := range text {
		rs, err := age.ParseRecipients(strings.NewReader(t))
		if err != nil {
			return nil, usageError{msg: fmt.Sprintf("%s: recovery recipient: %v: give an age recipient (age1...), as age-keygen -y prints it", cmdName(c), err),
				hint: c.Command.HelpName}
		}
		for _, r := range rs {
			kr, ok := r.(keys.Recipient)
			if !ok {
				return nil, usageError{msg: fmt.Sprintf("%s: recovery recipient of type %T cannot be written into a key slot: give an age1 recipient", cmdName(c), r),
					hint: c.Command.HelpName}
			}
			out = append(out, kr)
		}
	}
	return out, nil
}

// checkNewKeyFile refuses a --new-key-file path where something exists,
// before anything is written (keys.CreateKeyFile would refuse it too,
// but after the store was made).
func checkNewKeyFile(path string) error {
	if path == "" {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("--%s %s: %w: a key file is never written over an existing file; give a new path (or unlock with it: --key-file)", newKeyFileFlag.Name, path, fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--%s: %w", newKeyFileFlag.Name, err)
	}
	return nil
}

// createKeyFile makes the key file at path (keys.CreateKeyFile), and
// first its directory if that is missing, as /etc/thinback is on a new
// machine: mode 0700, since it holds secrets.
func createKeyFile(path string) (*keys.KeyFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("the directory of key file %s: %w", path, err)
	}
	return keys.CreateKeyFile(path)
}

// gatherNewKey reads what makes the first slots of a new master key:
// the passphrase (from the secret sources, or typed twice), the key file
// to create and the recovery recipients.
func gatherNewKey(ctx context.Context, e *env, c *cli.Context, store string) (*newKey, error) {
	nk := &newKey{keyFile: c.String(newKeyFileFlag.Name), label: c.String(labelFlag.Name)}
	var err error
	if nk.argon2, err = argon2Params(c); err != nil {
		return nil, err
	}
	if nk.recipients, err = recipients(c); err != nil {
		return nil, err
	}
	if err := checkNewKeyFile(nk.keyFile); err != nil {
		return nil, err
	}
	src := secretSources(c, e)
	if src.KeyFile != "" || src.Identity != "" {
		return nil, usageError{msg: fmt.Sprintf("%s: --encrypt makes a new master key, which --%s or --%s cannot open: its first slot is a passphrase (--password-file, --password-command, $%s or typed twice); add --%s for a key file",
			cmdName(c), keyFileFlag.Name, recoveryIdentityFlag.Name, secret.PasswordEnv, newKeyFileFlag.Name), hint: c.Command.HelpName}
	}
	if nk.passphrase, err = src.NewPassphrase(ctx, "New passphrase for "+store+": "); err != nil {
		return nil, fmt.Errorf("the passphrase of the new store %s: %w", store, err)
	}
	return nk, nil
}

// open opens the store at dir for a command that may create it, and
// makes it as the flags say: a new store on S3 only with --encrypt or
// --no-encrypt; with --encrypt, a master key and its first key slots
// (initStoreKey), in a new store or an empty one without slots. What
// cannot be done is refused before the store is created.
func (n *newStore) open(ctx context.Context, e *env, dir string) (catalog.Repository, error) {
	c := n.c
	if n.encrypt && n.noEncrypt {
		return nil, usageError{msg: fmt.Sprintf("%s: give --%s or --%s, not both", cmdName(c), encryptFlag.Name, noEncryptFlag.Name)}
	}
	// Without --encrypt they would be ignored, and the store made plain
	// by someone who believes it encrypted.
	if !n.encrypt {
		for _, f := range []cli.Flag{newKeyFileFlag, recoveryRecipientFlag, recoveryRecipientFileFlag, pbkdfMemoryFlag, pbkdfTimeFlag, labelFlag} {
			if name := f.Names()[0]; c.IsSet(name) {
				return nil, usageError{msg: fmt.Sprintf("%s: --%s is for a store made encrypted: add --%s (or, for a store that is, thinback key add)", cmdName(c), name, encryptFlag.Name)}
			}
		}
	}
	repo, err := openStoreAt(ctx, e, dir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, s3store.ErrNotStore) {
		return nil, err
	}
	var nk *newKey
	defer func() {
		if nk != nil {
			nk.destroy()
		}
	}()
	if repo == nil {
		if (s3.IsLocation(dir) || isSSHStore(dir)) && !n.encrypt && !n.noEncrypt {
			where := "the bucket"
			if isSSHStore(dir) {
				where = "the store's host"
			}
			return nil, usageError{msg: fmt.Sprintf("%s: %s holds no store yet, and a store off this machine is made only when asked how: "+
				"give --%s (its backups encrypted under a key slot's passphrase, key file or recovery identity) "+
				"or --%s (in the clear: whoever reads %s reads every volume, and whoever writes to it can change what restore writes)",
				cmdName(c), dir, encryptFlag.Name, noEncryptFlag.Name, where)}
		}
		if n.encrypt {
			if nk, err = gatherNewKey(ctx, e, c, dir); err != nil {
				return nil, err
			}
		}
		if repo, err = openStoreAt(ctx, e, dir, true); err != nil {
			return nil, err
		}
	}
	if err := n.apply(ctx, e, repo, nk); err != nil {
		closeStore(e, repo)
		return nil, err
	}
	return repo, nil
}

// apply checks the flags against the store as it is, and makes its key
// with --encrypt when it has none (nk: what was gathered for it, or nil).
func (n *newStore) apply(ctx context.Context, e *env, repo catalog.Repository, nk *newKey) error {
	c := n.c
	slots, err := repo.KeySlots()
	if err != nil {
		return fmt.Errorf("key slots of %s: %w", repo, err)
	}
	switch {
	case len(slots) > 0 && n.noEncrypt:
		return usageError{msg: fmt.Sprintf("%s: store %s is encrypted (it has %d key slots): --%s cannot make it plain; leave the flag out",
			cmdName(c), repo, len(slots), noEncryptFlag.Name)}
	case len(slots) > 0 && n.encrypt && n.init:
		return fmt.Errorf("init --%s: store %s: %w (%d): nothing was changed; add a slot with thinback key add", encryptFlag.Name, repo, keys.ErrExist, len(slots))
	case len(slots) > 0 && n.encrypt:
		for _, f := range []cli.Flag{newKeyFileFlag, recoveryRecipientFlag, recoveryRecipientFileFlag} {
			if name := f.Names()[0]; c.IsSet(name) {
				warn(e, "--%s makes a slot of a new store, and %s is encrypted already: nothing was added (thinback key add adds a slot)", name, repo)
			}
		}
		return nil
	case !n.encrypt:
		return nil
	}
	if err := refuseBackups(c, repo); err != nil {
		return err
	}
	if nk == nil {
		if nk, err = gatherNewKey(ctx, e, c, repo.String()); err != nil {
			return err
		}
		defer nk.destroy()
	}
	return initStoreKey(e, repo, nk)
}

// refuseBackups refuses --encrypt for a store that holds backups already:
// they are plain, and a chain is all plain or all encrypted.
func refuseBackups(c *cli.Context, repo catalog.Repository) error {
	n := 0
	err := repo.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		for _, v := range vols {
			snaps, err := tx.Snapshots(v.Name)
			if err != nil {
				return err
			}
			n += len(snaps)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("store %s: %w", repo, err)
	}
	if n == 0 {
		files, err := repo.Files()
		if err != nil {
			return fmt.Errorf("store %s: %w", repo, err)
		}
		n = len(files)
	}
	if n > 0 {
		return usageError{msg: fmt.Sprintf("%s: store %s already holds %d unencrypted backups, and a chain is all plain or all encrypted: "+
			"make a new store for encrypted backups (thinback init --store NEW --%s); nothing was changed", cmdName(c), repo, n, encryptFlag.Name)}
	}
	return nil
}

// initStoreKey makes the master key of an encrypted store and its first
// slots, under the key slots' lock: a passphrase slot, a key-file slot
// for a new key file (nk.keyFile), a recovery slot per recipient. It
// says what was made, and what to keep where.
func initStoreKey(e *env, repo catalog.Repository, nk *newKey) error {
	unlock, err := repo.LockKeySlots()
	if err != nil {
		return err
	}
	defer func() {
		if err := unlock(); err != nil {
			warn(e, "releasing the lock of the key slots of %s: %v", repo, err)
		}
	}()
	mk, err := keys.NewMasterKey()
	if err != nil {
		return err
	}
	defer mk.Destroy()
	label := nk.label
	if label == "" {
		label = "passphrase"
	}
	first, err := keys.NewPassphraseSlot(mk, nk.passphrase, nk.argon2, label)
	if err != nil {
		return fmt.Errorf("store %s: %w", repo, err)
	}
	more, err := recoverySlots(mk, nk.recipients)
	if err != nil {
		return fmt.Errorf("store %s: %w", repo, err)
	}
	var kf *keys.KeyFile
	if nk.keyFile != "" {
		if kf, err = createKeyFile(nk.keyFile); err != nil {
			return err
		}
		defer kf.Destroy()
		s, err := keys.NewKeyFileSlot(mk, kf, "key file")
		if err != nil {
			_ = os.Remove(nk.keyFile)
			return err
		}
		more = append([]*keys.Slot{s}, more...)
	}
	ring, err := keys.Init(repo, first)
	if err != nil {
		if kf != nil {
			_ = os.Remove(nk.keyFile)
		}
		return err
	}
	made := []*keys.Slot{first}
	for _, s := range more {
		if err := ring.Add(mk, s); err != nil {
			sayKey(e, repo, mk.ID(), made, nk.keyFile)
			return fmt.Errorf("store %s: the store is encrypted, but adding its %s slot failed (add it with thinback key add): %w", repo, s.Type, err)
		}
		made = append(made, s)
	}
	sayKey(e, repo, mk.ID(), made, nk.keyFile)
	// The command goes on to write with the key (a first backup or
	// receive): storeKey gives it this one rather than ask for the
	// passphrase a third time.
	if k, err := archive.NewKey(mk.Bytes()); err == nil {
		e.made = &madeKey{store: repo.String(), key: k}
	}
	return nil
}

// madeKey is the key of a store this command made encrypted.
type madeKey struct {
	store string
	key   *archive.Key
}

func recoverySlots(mk *keys.MasterKey, rs []keys.Recipient) ([]*keys.Slot, error) {
	var out []*keys.Slot
	for _, r := range rs {
		s, err := keys.NewRecoverySlot(mk, r, "recovery")
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// sayKey tells what init --encrypt made, and what to keep where.
func sayKey(e *env, repo catalog.Repository, id keys.KeyID, made []*keys.Slot, keyFile string) {
	printable.Sayf(e.stderr, "store %s is encrypted under master key %s (write this id down: thinback key list shows it, and a store that shows another is not yours)", repo, id)
	for _, s := range made {
		say := fmt.Sprintf("  key slot %s: %s", s.ID, s.Type)
		switch s.Type {
		case keys.TypeKeyFile:
			say += ", key file " + keyFile
		case keys.TypeRecovery:
			say += ", recipient " + s.Recipient
		}
		printable.Sayf(e.stderr, "%s", say)
	}
	if keyFile != "" {
		printable.Sayf(e.stderr, "keep the key file %s on this host only (cron backs up with --key-file %s)", keyFile, keyFile)
	}
	printable.Sayf(e.stderr, "keep the passphrase, and any recovery identity, offline and away from the store: lose every slot's secret and the backups are lost")
}

// cmdName names the command running in messages: "init", "key add".
func cmdName(c *cli.Context) string { return strings.TrimPrefix(c.Command.HelpName, "thinback ") }
