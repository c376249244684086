package main

import (
	"fmt"

	"github.com/thinback/thinback/catalog"
	"github.com/urfave/cli/v2"
)

// keepFlags are the retention options, with Proxmox Backup Server's
// meaning: for each period kind, keep the newest snapshot of each of the
// last N periods that have one.
func keepFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "keep-last", Usage: "keep the newest N snapshots"},
		&cli.IntFlag{Name: "keep-hourly", Usage: "keep the newest snapshot of each of the last N hours that have one"},
		&cli.IntFlag{Name: "keep-daily", Usage: "... of each of the last N days"},
		&cli.IntFlag{Name: "keep-weekly", Usage: "... of each of the last N ISO weeks"},
		&cli.IntFlag{Name: "keep-monthly", Usage: "... of each of the last N months"},
		&cli.IntFlag{Name: "keep-yearly", Usage: "... of each of the last N years"},
	}
}

func retentionFrom(c *cli.Context) (catalog.Retention, error) {
	r := catalog.Retention{
		KeepLast: c.Int("keep-last"), KeepHourly: c.Int("keep-hourly"), KeepDaily: c.Int("keep-daily"),
		KeepWeekly: c.Int("keep-weekly"), KeepMonthly: c.Int("keep-monthly"), KeepYearly: c.Int("keep-yearly"),
	}
	for _, f := range keepFlags() {
		name := f.Names()[0]
		if n := c.Int(name); n < 0 {
			return r, usageError{msg: fmt.Sprintf("%s: --%s %d: the --keep-* options take a number of snapshots, 0 or more",
				c.Command.Name, name, n), hint: c.Command.HelpName}
		}
	}
	return r, nil
}
