package main

import (
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/urfave/cli/v2"
)

func initCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "init",
		Usage: "create a backup store (optional: the first backup or receive creates it)",
		Description: "Creates DIR/catalog.db, DIR/volumes/, DIR/tmp/ and DIR/locks/. An existing store is\n" +
			"left as it is.\n\n" +
			"With --encrypt, the store's backups are encrypted: a new random master key, kept only\n" +
			"wrapped in key slots, the first opened by a passphrase (from --password-file,\n" +
			"--password-command or $THINBACK_PASSWORD, or typed twice); --new-key-file also makes a\n" +
			"key file for cron (--key-file), --recovery-recipient a slot an age identity kept offline\n" +
			"opens. The master key id is printed: thinback key list shows it again. Refused for a store\n" +
			"that has key slots already (thinback key add) or holds unencrypted backups (make a new\n" +
			"store). A store on S3 or on another host (ssh://) is made only with --encrypt or\n" +
			"--no-encrypt; a directory is plain unless --encrypt is given. The first backup or receive\n" +
			"into a new store takes the same flags.\n\n" +
			"Exit codes: 0 made (or there already), 1 the store has key slots already or the key file\n" +
			"exists, 2 bad command line (a new S3 or ssh:// store without --encrypt or --no-encrypt,\n" +
			"--encrypt on a store with plain backups), 9 another thinback is changing the key slots, 14 no passphrase\n" +
			"given and no terminal to type it at.",
		Flags: []cli.Flag{storeFlag, jsonFlag},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "takes no arguments: give the store with --store DIR"); err != nil {
				return err
			}
			s, err := openStore(c.Context, e, c.String("store"), true)
			if err != nil {
				return err
			}
			defer closeStore(e, s)
			if c.Bool("json") {
				j := initJSON{Store: s.String()}
				if e.made != nil && e.made.store == s.String() {
					j.Encrypted, j.KeyID = true, e.made.key.ID().String()
				}
				return printJSON(e, j)
			}
			printable.Sayf(e.stderr, "store %s is ready: back up into it with thinback backup VG/LV --store %s", s, s)
			return nil
		},
	}
}

// initJSON is init --json's result: the store, and the id of the master
// key when this run made it encrypted.
type initJSON struct {
	Store     string `json:"store"`
	Encrypted bool   `json:"encrypted,omitempty"`
	KeyID     string `json:"key_id,omitempty"`
}
