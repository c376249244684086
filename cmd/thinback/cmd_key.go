package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/secret"
	"github.com/urfave/cli/v2"
)

// The sources of a new passphrase (key add --new-passphrase, key
// passwd): never those that unlock the store, so that the old passphrase
// is not taken for the new one.
var (
	newPasswordFileFlag = &cli.StringFlag{Name: "new-password-file", TakesFile: true,
		Usage: "read the new passphrase from the first line of this file (else it is typed twice at the terminal)"}
	newPasswordCommandFlag = &cli.StringFlag{Name: "new-password-command",
		Usage: "run this command (sh -c) and take the first line it prints as the new passphrase"}
)

const keyExitCodes = "Exit codes: 0 done, 1 the last slot or no such slot (nothing changed), 2 bad command line,\n" +
	"9 another thinback is changing the store's key slots, 14 the secret given opens no slot, or\n" +
	"none was given."

func keyCommand(e *env) *cli.Command {
	unlockFlags := append([]cli.Flag{storeFlag}, keyFlags...)
	return &cli.Command{
		Name:  "key",
		Usage: "list and change the key slots of an encrypted store (never its data)",
		Description: "An encrypted store's master key is kept only wrapped, once per key slot: a passphrase,\n" +
			"a key file or a recovery identity each opens one. Slots are added, removed and their\n" +
			"passphrases changed without touching a backup. add, remove and passwd first unlock the\n" +
			"store with a secret it already has (--key-file, --password-file, --password-command,\n" +
			"$THINBACK_PASSWORD, --recovery-identity, or typed at the terminal).\n\n" + keyExitCodes,
		Subcommands: []*cli.Command{
			{
				Name:        "list",
				Usage:       "list the key slots (no secret needed)",
				Description: "Shows each slot's id, type, label, creation time, the id of the master key it wraps and,\nfor a passphrase, its Argon2id cost; damaged slots with what is wrong with them.",
				Flags:       []cli.Flag{storeFlag, jsonFlag},
				Action: func(c *cli.Context) error {
					if _, err := args(c, 0, 0, "takes no arguments"); err != nil {
						return err
					}
					return runKeyList(c.Context, e, c.String(storeFlag.Name), c.Bool(jsonFlag.Name))
				},
			},
			{
				Name:      "add",
				Usage:     "add a key slot: a passphrase, a new key file or a recovery recipient",
				ArgsUsage: "(--new-passphrase | --new-key-file PATH | --recovery-recipient R | --recovery-recipient-file F)",
				Description: "Unlocks the store, then wraps its master key once more under the new secret. The new\n" +
					"passphrase comes from --new-password-file or --new-password-command, or is typed twice;\n" +
					"a new key file is created (mode 0600, never over an existing file; its directory 0700 if missing).\n\n" + keyExitCodes,
				Flags: append(append([]cli.Flag{}, unlockFlags...),
					&cli.BoolFlag{Name: "new-passphrase", Usage: "add a passphrase slot"},
					newKeyFileFlag, recoveryRecipientFlag, recoveryRecipientFileFlag, labelFlag,
					newPasswordFileFlag, newPasswordCommandFlag, pbkdfMemoryFlag, pbkdfTimeFlag, jsonFlag),
				Action: func(c *cli.Context) error {
					if _, err := args(c, 0, 0, "give what to add with --new-passphrase, --new-key-file PATH or --recovery-recipient R"); err != nil {
						return err
					}
					return runKeyAdd(c.Context, e, c)
				},
			},
			{
				Name:      "remove",
				Usage:     "remove a key slot (never the last)",
				ArgsUsage: "SLOT-ID",
				Description: "Unlocks the store first: only someone who can open it removes a slot. The last intact\n" +
					"slot is never removed; the one the store was unlocked with may be, if another remains.\n\n" + keyExitCodes,
				Flags: append(append([]cli.Flag{}, unlockFlags...), jsonFlag),
				Action: func(c *cli.Context) error {
					a, err := args(c, 1, 1, "give the id of the slot to remove (thinback key list shows them)")
					if err != nil {
						return err
					}
					return runKeyRemove(c.Context, e, c, a[0])
				},
			},
			{
				Name:      "passwd",
				Usage:     "change the passphrase of a passphrase slot",
				ArgsUsage: "[SLOT-ID]",
				Description: "Unlocks the store (with the old passphrase, or any other secret: a recovery identity\n" +
					"when the passphrase is lost), then replaces the slot by one under the new passphrase,\n" +
					"from --new-password-file or --new-password-command, or typed twice. Without SLOT-ID: the\n" +
					"passphrase slot the store was unlocked with, or its only one.\n\n" + keyExitCodes,
				Flags: append(append([]cli.Flag{}, unlockFlags...), newPasswordFileFlag, newPasswordCommandFlag, pbkdfMemoryFlag, pbkdfTimeFlag, jsonFlag),
				Action: func(c *cli.Context) error {
					a, err := args(c, 0, 1, "give at most one slot id")
					if err != nil {
						return err
					}
					id := ""
					if len(a) == 1 {
						id = a[0]
					}
					return runKeyPasswd(c.Context, e, c, id)
				},
			},
		},
	}
}

// slotJSON is a key slot as key list --json prints it.
type slotJSON struct {
	ID        string             `json:"id"`
	Type      keys.Type          `json:"type,omitempty"`
	Label     string             `json:"label,omitempty"`
	Created   *time.Time         `json:"created,omitempty"`
	KeyID     string             `json:"key_id,omitempty"`
	Argon2id  *keys.Argon2Params `json:"argon2id,omitempty"`
	Recipient string             `json:"recipient,omitempty"`
	Error     string             `json:"error,omitempty"` // a damaged slot: what is wrong
}

func runKeyList(ctx context.Context, e *env, dir string, asJSON bool) error {
	repo, err := openStore(ctx, e, dir, false)
	if err != nil {
		return err
	}
	defer closeStore(e, repo)
	ring, err := keys.Load(repo)
	if err != nil {
		return fmt.Errorf("key list: %w: the store is not encrypted", err)
	}
	var out []slotJSON
	for _, s := range ring.Slots() {
		created := s.Created
		j := slotJSON{ID: s.ID, Type: s.Type, Label: s.Label, Created: &created, KeyID: s.KeyID.String(), Recipient: s.Recipient}
		if s.Type == keys.TypePassphrase {
			p := s.Argon2
			j.Argon2id = &p
		}
		out = append(out, j)
	}
	damaged := ring.Damaged()
	ids := make([]string, 0, len(damaged))
	for id := range damaged {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		out = append(out, slotJSON{ID: id, Error: damaged[id].Error()})
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Store string     `json:"store"`
			Slots []slotJSON `json:"slots"`
		}{repo.String(), out})
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tTYPE\tLABEL\tCREATED\tKEY ID\tDETAILS")
	for _, j := range out {
		if j.Error != "" {
			fmt.Fprintf(tw, "%s\tdamaged\t\t\t\t%s\n", printable.String(j.ID), printable.String(j.Error))
			continue
		}
		details := ""
		switch {
		case j.Argon2id != nil:
			details = fmt.Sprintf("argon2id %d MiB, %d passes, %d threads", j.Argon2id.MemoryKiB>>10, j.Argon2id.Time, j.Argon2id.Threads)
		case j.Recipient != "":
			details = "recipient " + j.Recipient
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.ID, j.Type, printable.String(j.Label), j.Created.Format(time.RFC3339), j.KeyID, printable.String(details))
	}
	return tw.Flush()
}

// keySession is a store opened by a key command that changes slots: its
// slots' lock held, its ring loaded and unlocked.
type keySession struct {
	repo   catalog.Repository
	ring   *keys.Ring
	mk     *keys.MasterKey
	slot   *keys.Slot // the slot that opened it
	unlock func() error
	// foreign are the slots, by id, that wrap another master key than
	// the one the secret opened (see unlockMixed), with that key's id.
	foreign map[string]keys.KeyID
}

// openKeySession opens the store, takes its key slots' lock (exit 9 when
// another holds it), loads the slots and unlocks them.
func openKeySession(ctx context.Context, e *env, c *cli.Context) (*keySession, error) {
	repo, err := openStore(ctx, e, c.String(storeFlag.Name), false)
	if err != nil {
		return nil, err
	}
	ks := &keySession{repo: repo}
	ok := false
	defer func() {
		if !ok {
			ks.close(e)
		}
	}()
	if ks.unlock, err = repo.LockKeySlots(); err != nil {
		return nil, fmt.Errorf("%s: %w", cmdName(c), err)
	}
	if ks.ring, err = keys.Load(repo); err != nil {
		return nil, fmt.Errorf("%s: %w: the store is not encrypted", cmdName(c), err)
	}
	ks.mk, ks.slot, err = unlockRing(ctx, e, c, repo, ks.ring)
	var mixed *keys.MixedKeysError
	if errors.As(err, &mixed) && c.Command.Name == "remove" {
		err = ks.unlockMixed(ctx, e, c, mixed)
	}
	if err != nil {
		return nil, err
	}
	ok = true
	return ks, nil
}

// keyGroup is the key slots of a store that wrap one master key, as a
// keys.Storage of their own.
type keyGroup struct {
	catalog.Repository
	ids map[string]bool
}

func (g keyGroup) KeySlots() (map[string][]byte, error) {
	all, err := g.Repository.KeySlots()
	for id := range all {
		if !g.ids[id] {
			delete(all, id)
		}
	}
	return all, err
}

// unlockMixed opens a store whose slots wrap different master keys (a
// slot copied from another store, or planted to have thinback use
// someone else's key), so that key remove can take away the slots that
// are not the store's: the store's key is the one the secret given
// opens, its ring the slots that wrap it; the others are foreign.
func (ks *keySession) unlockMixed(ctx context.Context, e *env, c *cli.Context, mixed *keys.MixedKeysError) error {
	var rings []*keys.Ring
	var keyIDs []keys.KeyID
	for id, slots := range mixed.Keys {
		g := keyGroup{Repository: ks.repo, ids: map[string]bool{}}
		for _, s := range slots {
			g.ids[s] = true
		}
		r, err := keys.Load(g)
		if err != nil {
			return err
		}
		rings, keyIDs = append(rings, r), append(keyIDs, id)
	}
	i, mk, slot, err := secret.UnlockAny(ctx, rings, secretSources(c, e), ks.repo.String())
	if err != nil {
		return err
	}
	// A secret of another store (a slot copied from it) would take the
	// slots of this one's key for the foreign ones: its backups say
	// which key they are under.
	if id, file, ok := dataKeyID(ks.repo); ok && id != mk.ID() {
		mk.Destroy()
		return fmt.Errorf("%s: the key slots of %s wrap %d master keys, and the secret given opens key %s, but the store's backups are under key %s (%s): "+
			"open it with a secret of key %s to remove the others' slots; nothing was changed: %w",
			cmdName(c), ks.repo, len(mixed.Keys), mk.ID(), id, file, id, keys.ErrWrongKey)
	}
	ks.ring, ks.mk, ks.slot = rings[i], mk, slot
	ks.foreign = map[string]keys.KeyID{}
	for id, slots := range mixed.Keys {
		if id != keyIDs[i] {
			for _, s := range slots {
				ks.foreign[s] = id
			}
		}
	}
	printable.Sayf(e.stderr, "thinback: the key slots of %s wrap %d master keys; %s opened slot %s of key %s, so the slots of the others are not this store's",
		ks.repo, len(mixed.Keys), slot.Type, slot.ID, mk.ID())
	return nil
}

func (ks *keySession) close(e *env) {
	if ks.mk != nil {
		ks.mk.Destroy()
	}
	if ks.unlock != nil {
		if err := ks.unlock(); err != nil {
			warn(e, "releasing the lock of the key slots of %s: %v", ks.repo, err)
		}
	}
	closeStore(e, ks.repo)
}

// newPassphraseSources are where a new passphrase comes from: its own
// flags, or the terminal (typed twice), never the unlocking sources.
func newPassphraseSources(c *cli.Context, e *env) (secret.Sources, error) {
	unlocking := secretSources(c, e)
	src := secret.Sources{
		PasswordFile:    c.String(newPasswordFileFlag.Name),
		PasswordCommand: c.String(newPasswordCommandFlag.Name),
		Prompt:          unlocking.Prompt,
		Stderr:          e.stderr,
	}
	if src.PasswordFile == "" && src.PasswordCommand == "" && src.Prompt == nil {
		return src, usageError{msg: fmt.Sprintf("%s: give the new passphrase with --%s or --%s (or run on a terminal to type it twice)",
			cmdName(c), newPasswordFileFlag.Name, newPasswordCommandFlag.Name), hint: c.Command.HelpName}
	}
	return src, nil
}

func runKeyAdd(ctx context.Context, e *env, c *cli.Context) error {
	rs, err := recipients(c)
	if err != nil {
		return err
	}
	keyFile, pass := c.String(newKeyFileFlag.Name), c.Bool("new-passphrase")
	n := len(rs)
	if keyFile != "" {
		n++
	}
	if pass {
		n++
	}
	if n != 1 {
		return usageError{msg: "key add: give one of --new-passphrase, --new-key-file PATH, --recovery-recipient R (or --recovery-recipient-file F with one recipient)"}
	}
	p, err := argon2Params(c)
	if err != nil {
		return err
	}
	if err := checkNewKeyFile(keyFile); err != nil {
		return err
	}
	var newSrc secret.Sources
	if pass {
		if newSrc, err = newPassphraseSources(c, e); err != nil {
			return err
		}
	}
	ks, err := openKeySession(ctx, e, c)
	if err != nil {
		return err
	}
	defer ks.close(e)
	label := c.String(labelFlag.Name)
	var s *keys.Slot
	switch {
	case pass:
		np, err := newSrc.NewPassphrase(ctx, "New passphrase: ")
		if err != nil {
			return fmt.Errorf("key add: %w", err)
		}
		defer clear(np)
		if s, err = keys.NewPassphraseSlot(ks.mk, np, p, label); err != nil {
			return fmt.Errorf("key add: %w", err)
		}
	case keyFile != "":
		kf, err := createKeyFile(keyFile)
		if err != nil {
			return fmt.Errorf("key add: %w", err)
		}
		defer kf.Destroy()
		if s, err = keys.NewKeyFileSlot(ks.mk, kf, label); err != nil {
			_ = os.Remove(keyFile)
			return fmt.Errorf("key add: %w", err)
		}
	default:
		if s, err = keys.NewRecoverySlot(ks.mk, rs[0], label); err != nil {
			return fmt.Errorf("key add: %w", err)
		}
	}
	if err := ks.ring.Add(ks.mk, s); err != nil {
		if keyFile != "" {
			_ = os.Remove(keyFile)
		}
		return fmt.Errorf("key add: %w", err)
	}
	if c.Bool(jsonFlag.Name) {
		return printJSON(e, keyChangeJSON{Store: ks.repo.String(), Added: s.ID, Type: s.Type, KeyID: ks.mk.ID().String(), KeyFile: keyFile})
	}
	printable.Sayf(e.stderr, "added key slot %s (%s) to %s, master key %s", s.ID, s.Type, ks.repo, ks.mk.ID())
	if keyFile != "" {
		printable.Sayf(e.stderr, "keep the key file %s on this host only (cron backs up with --key-file %s)", keyFile, keyFile)
	}
	return nil
}

func runKeyRemove(ctx context.Context, e *env, c *cli.Context, id string) error {
	ks, err := openKeySession(ctx, e, c)
	if err != nil {
		return err
	}
	defer ks.close(e)
	if other, ok := ks.foreign[id]; ok {
		// Not a slot of the store's key: removing it cannot lock anyone
		// out of the backups.
		if err := ks.repo.RemoveKeySlot(id); err != nil {
			return fmt.Errorf("key remove: %w", err)
		}
		if c.Bool(jsonFlag.Name) {
			return printJSON(e, keyChangeJSON{Store: ks.repo.String(), Removed: id, KeyID: other.String()})
		}
		printable.Sayf(e.stderr, "removed key slot %s from %s: it wrapped master key %s, not %s, the key the store was opened with", id, ks.repo, other, ks.mk.ID())
		return nil
	}
	if err := ks.ring.Remove(id); err != nil {
		return fmt.Errorf("key remove: %w", err)
	}
	if c.Bool(jsonFlag.Name) {
		return printJSON(e, keyChangeJSON{Store: ks.repo.String(), Removed: id, KeyID: ks.mk.ID().String(), Unlocked: id == ks.slot.ID})
	}
	printable.Sayf(e.stderr, "removed key slot %s from %s", id, ks.repo)
	if id == ks.slot.ID {
		printable.Sayf(e.stderr, "it was the slot this run unlocked the store with: from now on open it with another slot's secret (thinback key list shows the %d left)", len(ks.ring.Slots()))
	}
	return nil
}

func runKeyPasswd(ctx context.Context, e *env, c *cli.Context, id string) error {
	p, err := argon2Params(c)
	if err != nil {
		return err
	}
	newSrc, err := newPassphraseSources(c, e)
	if err != nil {
		return err
	}
	ks, err := openKeySession(ctx, e, c)
	if err != nil {
		return err
	}
	defer ks.close(e)
	if id == "" {
		if id, err = passwdSlot(ks); err != nil {
			return err
		}
	}
	np, err := newSrc.NewPassphrase(ctx, "New passphrase: ")
	if err != nil {
		return fmt.Errorf("key passwd: %w", err)
	}
	defer clear(np)
	s, err := ks.ring.Passwd(ks.mk, id, np, p)
	if err != nil {
		return fmt.Errorf("key passwd: %w", err)
	}
	if c.Bool(jsonFlag.Name) {
		return printJSON(e, keyChangeJSON{Store: ks.repo.String(), Added: s.ID, Removed: id, Type: s.Type, KeyID: ks.mk.ID().String()})
	}
	printable.Sayf(e.stderr, "changed the passphrase of %s: key slot %s replaces %s (same master key %s, no backup touched)", ks.repo, s.ID, id, ks.mk.ID())
	return nil
}

// keyChangeJSON is what key add, remove and passwd --json print: the slot
// added and the one removed (passwd: both), and the master key's id.
type keyChangeJSON struct {
	Store   string    `json:"store"`
	Added   string    `json:"added,omitempty"`
	Removed string    `json:"removed,omitempty"`
	Type    keys.Type `json:"type,omitempty"` // of the slot added
	KeyID   string    `json:"key_id"`
	KeyFile string    `json:"key_file,omitempty"` // the key file key add made
	// Unlocked: the slot removed is the one this run opened the store with.
	Unlocked bool `json:"unlocked_with_removed,omitempty"`
}

// passwdSlot picks the slot key passwd changes when none is named: the
// passphrase slot that unlocked the store, else its only one.
func passwdSlot(ks *keySession) (string, error) {
	if ks.slot.Type == keys.TypePassphrase {
		return ks.slot.ID, nil
	}
	var ids []string
	for _, s := range ks.ring.Slots() {
		if s.Type == keys.TypePassphrase {
			ids = append(ids, s.ID)
		}
	}
	switch len(ids) {
	case 1:
		return ids[0], nil
	case 0:
		return "", usageError{msg: fmt.Sprintf("key passwd: %s has no passphrase slot: add one with thinback key add --new-passphrase", ks.repo)}
	}
	return "", usageError{msg: fmt.Sprintf("key passwd: %s has %d passphrase slots (%s): name the one to change", ks.repo, len(ids), strings.Join(ids, ", "))}
}

// dataKeyID returns the key id of the first encrypted delta file of the
// store whose header reads, and the file; false when there is none.
func dataKeyID(repo catalog.Repository) (archive.KeyID, string, bool) {
	files, err := repo.Files()
	if err != nil {
		return archive.KeyID{}, "", false
	}
	for _, f := range files {
		rc, err := repo.OpenStream(f.Path)
		if err != nil {
			continue
		}
		h, err := archive.NewReader(rc).Header()
		rc.Close()
		if err == nil && h.IsEncrypted() {
			return h.KeyID, f.Path, true
		}
	}
	return archive.KeyID{}, "", false
}
