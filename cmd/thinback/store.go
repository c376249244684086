package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/verify"
	"github.com/urfave/cli/v2"
)

// storeFlag names the backup store; THINBACK_STORE sets a default.
var storeFlag = &cli.StringFlag{Name: "store", TakesFile: true, EnvVars: []string{"THINBACK_STORE"}, Usage: "the backup store: a directory, s3:https://HOST[:PORT]/BUCKET[/PREFIX], or ssh://[USER@]HOST[:PORT]/PATH (or $THINBACK_STORE)"}

// stateFlag names the file recording what each target on this machine holds.
var stateFlag = &cli.StringFlag{Name: "state", TakesFile: true, Usage: "state file recording what each target holds (default $THINBACK_STATE or " + defaultStateFile + ")"}

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON"}

// openStore opens (creating if needed) the store named by --store, and
// cleans up temporary files left by crashed runs, saying so. The caller
// closes it (closeStore). A command with the flags that say how to make
// a store (init, backup, receive) makes it so (newStore.open).
func openStore(ctx context.Context, e *env, dir string, create bool) (catalog.Repository, error) {
	if dir == "" {
		return nil, usageError{msg: "give the backup store with --store DIR (or set THINBACK_STORE)"}
	}
	if create && e.create != nil {
		return e.create.open(ctx, e, dir)
	}
	return openStoreAt(ctx, e, dir, create)
}

// openStoreAt is openStore without the rules of new stores.
func openStoreAt(ctx context.Context, e *env, dir string, create bool) (catalog.Repository, error) {
	if s3.IsLocation(dir) {
		return openS3Store(ctx, e, dir, create)
	}
	if isSSHStore(dir) {
		return openSSHStore(ctx, e, dir, create)
	}
	if !create {
		if _, err := os.Stat(dir + "/catalog.db"); err != nil {
			return nil, fmt.Errorf("%s is not a thinback store (no catalog.db): %w", dir, err)
		}
	}
	s, err := catalog.OpenStore(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	reportCleaned(e, dir, s)
	return s, nil
}

// reportCleaned cleans up temporary files left by crashed runs in a
// store, saying so.
func reportCleaned(e *env, dir string, s interface{ CleanTemp() ([]string, error) }) {
	if removed, err := s.CleanTemp(); err != nil {
		printable.Sayf(e.stderr, "thinback: cleaning temporary files of %s: %v", dir, err)
	} else if len(removed) > 0 {
		printable.Sayf(e.stderr, "thinback: removed %d temporary file(s) left by an interrupted run: %s", len(removed), strings.Join(removed, ", "))
	}
}

// closeStore closes a store, warning if that failed: whatever a command
// did is committed by then.
func closeStore(e *env, s catalog.Repository) {
	if err := s.Close(); err != nil {
		warn(e, "closing store %s: %v", s, err)
	}
}

// readDelta reads a delta file to its verified END record. With payloads,
// every record is decompressed and every block digest checked (on all
// cores); without, only the header and the records' metadata are read and
// chained, seeking over the payloads.
func readDelta(ctx context.Context, path string, payloads bool) (*archive.Header, archive.Trailer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, archive.Trailer{}, err
	}
	defer f.Close()
	return verify.File(ctx, f, payloads)
}

// warn prints a failure that did not fail the run. Warnings are printed
// even with --quiet: they need someone's attention.
func warn(e *env, format string, args ...any) {
	fmt.Fprintf(e.stderr, "thinback: warning: "+format+"\n", args...)
}

// unlockWarn releases a volume lock and warns if that failed. The lock is
// a flock, which the kernel drops when the process exits, so a failure
// puts no data at risk.
func unlockWarn(e *env, unlock func() error, volume string) {
	if err := unlock(); err != nil {
		warn(e, "releasing the lock of volume %s: %v", volume, err)
	}
}
