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
			"left as it is.",
		Flags: []cli.Flag{storeFlag},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "takes no arguments: give the store with --store DIR"); err != nil {
				return err
			}
			s, err := openStore(c.Context, e, c.String("store"), true)
			if err != nil {
				return err
			}
			defer closeStore(e, s)
			printable.Sayf(e.stderr, "store %s is ready: back up into it with thinback backup VG/LV --store %s", s, s)
			return nil
		},
	}
}
