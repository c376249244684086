package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/pointintime"
	"github.com/urfave/cli/v2"
)

// What cat, mount, serve and verify --device share: a store opened only
// to read, and the delta files of one point in time (package
// pointintime).

// readStore is a store opened by openReadStore.
type readStore struct{ *pointintime.Store }

// openReadStore opens the store named by --store to read points in time
// from it. A directory is opened read-only (catalog.OpenReadOnly):
// nothing is created, cleaned or written in it; an S3 store is opened
// without creating it and without locks. unlock, if set, gives the
// store's key (storeKey), asked for before anything else is read.
func openReadStore(ctx context.Context, e *env, dir string, unlock func(context.Context, catalog.Repository) (*archive.Key, error)) (*readStore, error) {
	if dir == "" {
		return nil, usageError{msg: "give the backup store with --store DIR (or set THINBACK_STORE)"}
	}
	var r catalog.Repository
	var err error
	switch {
	case s3.IsLocation(dir):
		// Opened as list and restore open it, never to create: nothing
		// is written to the bucket and no volume is locked, so a backup
		// or prune goes on meanwhile; the local cache of the catalog is
		// brought up to date as every reader does. The files are read by
		// ranged GETs of the records a read needs (OpenDelta).
		var st catalog.Repository
		if st, err = openS3Store(ctx, e, dir, false); err == nil {
			r = &refreshing{Store: st.(*s3store.Store), last: time.Now(), warn: func(err error) { warn(e, "%v (reading the catalog as it was)", err) }}
		}
	case isSSHStore(dir):
		// Read through one connection for as long as the command runs;
		// nothing is cleaned or written there.
		r, err = openSSHStoreMode(ctx, e, dir, "")
	default:
		r, err = catalog.OpenReadOnly(dir)
	}
	if err != nil {
		return nil, err
	}
	var key *archive.Key
	if unlock != nil {
		if key, err = unlock(ctx, r); err != nil {
			r.Close()
			return nil, err
		}
	}
	return &readStore{&pointintime.Store{Repository: r, Key: key}}, nil
}

// refreshEvery is how often a lasting reader of an S3 store (mount,
// serve) brings its cache of the catalog up to date, at most: once per
// look at the catalog, and no more often than this.
const refreshEvery = 5 * time.Second

// refreshing is an S3 store whose View first brings the local cache of
// the catalog up to date (Refresh) if that was done more than
// refreshEvery ago, so a mount or serve that runs for days shows the
// backups made since and no longer offers the points pruned away. A
// refresh that fails (the network is down) is told and the catalog read
// as it was.
type refreshing struct {
	*s3store.Store
	warn func(error)

	mu   sync.Mutex
	last time.Time
}

func (r *refreshing) View(fn func(*catalog.Tx) error) error {
	r.mu.Lock()
	if time.Since(r.last) >= refreshEvery {
		if err := r.Store.Refresh(); err != nil {
			r.warn(err)
		}
		r.last = time.Now()
	}
	r.mu.Unlock()
	return r.Store.View(fn)
}

// recordCacheFlag is --record-cache of mount and serve, whose cache of
// decoded records is "of each open image" or "shared by every client".
func recordCacheFlag(whose string) cli.Flag {
	return &cli.Int64Flag{Name: "record-cache", Value: archive.DefaultSnapshotCache >> 20,
		Usage: "keep up to `MIB` MiB of decoded records in memory, " + whose + " (reads of a record cached fetch nothing from the store)"}
}

// recordCache is --record-cache in bytes.
func recordCache(c *cli.Context) (int64, error) {
	n := c.Int64("record-cache")
	if n < 1 || n > 1<<20 {
		return 0, usageError{msg: fmt.Sprintf("--record-cache %d: give the MiB of decoded records to keep in memory, from 1 to 1048576 (default %d)", n, archive.DefaultSnapshotCache>>20)}
	}
	return n << 20, nil
}

// unlocker is storeKey with the secrets of c, for the commands that
// open their store themselves (openReadStore, restore, verify).
func unlocker(e *env, c *cli.Context) func(context.Context, catalog.Repository) (*archive.Key, error) {
	return func(ctx context.Context, r catalog.Repository) (*archive.Key, error) { return storeKey(ctx, e, c, r) }
}

// fileUnlocker is unlocker for delta files outside a store (fileKey).
func fileUnlocker(e *env, c *cli.Context) func(context.Context) (*archive.Key, error) {
	return func(ctx context.Context) (*archive.Key, error) { return fileKey(ctx, e, c) }
}

// selectSnapshot is pointintime.Select, whose errors in what the user
// typed are usage errors (exit 2).
func selectSnapshot(tx *catalog.Tx, volume, at, snapshot string) (catalog.Snapshot, error) {
	snap, err := pointintime.Select(tx, volume, at, snapshot)
	return snap, usageOf(err)
}

// findSnapshot is pointintime.Find, as selectSnapshot.
func findSnapshot(tx *catalog.Tx, volume, ref string) (catalog.Snapshot, error) {
	snap, err := pointintime.Find(tx, volume, ref)
	return snap, usageOf(err)
}

// parseTime is pointintime.ParseTime, as selectSnapshot.
func parseTime(s string) (time.Time, error) {
	t, err := pointintime.ParseTime(s)
	return t, usageOf(err)
}
