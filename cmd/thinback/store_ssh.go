package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/sshstore"
	"github.com/thinback/thinback/cmd/internal/remote"
)

// A store on another host (--store ssh://[USER@]HOST[:PORT]/PATH) is a
// directory store there, served by `thinback agent store PATH` run over
// ssh (--rsh, --remote-thinback): the commands here see it through
// sshstore.Client, as any other catalog.Repository.

// isSSHStore reports whether a --store names a store on another host.
func isSSHStore(dir string) bool { return strings.HasPrefix(dir, "ssh://") }

// openSSHStore connects to the store at an ssh:// address; create makes
// it there when the address holds none, as for a local directory.
func openSSHStore(ctx context.Context, e *env, addr string, create bool) (catalog.Repository, error) {
	mode := ""
	if create {
		mode = "--create"
	}
	s, err := openSSHStoreMode(ctx, e, addr, mode)
	if err != nil {
		return nil, err
	}
	reportCleaned(e, addr, s)
	return s, nil
}

// openSSHStoreMode connects to the store at an ssh:// address, which the
// agent opens as mode says: "" an existing store, "--create" making one,
// "--rebuild" making a catalog where only it was lost (openRebuilt).
func openSSHStoreMode(ctx context.Context, e *env, addr, mode string) (*sshstore.Client, error) {
	d, err := remote.ParseDest(addr)
	if err != nil {
		return nil, err
	}
	if !d.Remote() {
		return nil, usageError{msg: fmt.Sprintf("%s: an ssh:// store names its host: ssh://[USER@]HOST[:PORT]/PATH", addr)}
	}
	// A store's path is absolute on its host, however many slashes it
	// has (ParseDest keeps a VG/LV-like one relative, for volumes).
	path := d.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	args := []string{path}
	if mode != "" {
		args = []string{mode, path}
	}
	conn, err := remote.Dial(ctx, d, e.ssh, "store", args...)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", addr, err)
	}
	return sshstore.NewClient(conn, addr)
}

func init() { agentServices["store"] = agentStore }

// agentStore serves the directory store at the path it is given to a
// client on another host (openSSHStore): "--create PATH" makes the store
// when there is none, as the local commands that make one do.
func agentStore(ctx context.Context, e *env, c *remote.Conn, args []string) error {
	mode := ""
	if len(args) == 2 && (args[0] == "--create" || args[0] == "--rebuild") {
		mode, args = args[0], args[1:]
	}
	if len(args) != 1 || args[0] == "" {
		return refuseStore(c, fmt.Errorf("agent store: give the store's directory (and --create or --rebuild before it): got %q", args))
	}
	dir := args[0]
	create := mode == "--create"
	if mode == "--rebuild" {
		// A directory that lost its catalog.db but keeps delta files or
		// key slots is still a store (see openRebuilt).
		for _, name := range []string{"catalog.db", "volumes", "keys"} {
			if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
				create = true
			}
		}
		if !create {
			return refuseStore(c, fmt.Errorf("catalog rebuild: no store at %s (no catalog.db, volumes or keys in it), so nothing to rebuild; "+
				"check --store, or make a store with thinback init", dir))
		}
	}
	s, err := openAgentStore(dir, create)
	if err != nil {
		return refuseStore(c, err)
	}
	if err := sshstore.Serve(ctx, c, s); err != nil {
		return fmt.Errorf("agent store %s: %w", dir, err)
	}
	return nil
}

// openAgentStore opens the store at dir for a client, as openStoreAt
// opens a local one (the client cleans what dead writers left).
func openAgentStore(dir string, create bool) (*catalog.Store, error) {
	if !create {
		if _, err := os.Stat(dir + "/catalog.db"); err != nil {
			return nil, fmt.Errorf("%s is not a thinback store (no catalog.db): %w", dir, err)
		}
	}
	s, err := catalog.OpenStore(dir)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", dir, err)
	}
	return s, nil
}

// refuseStore tells the client why there is no store to serve.
func refuseStore(c *remote.Conn, err error) error {
	if rerr := sshstore.Refuse(c, err); rerr != nil {
		return fmt.Errorf("%w (and telling the client failed: %v)", err, rerr)
	}
	return reportedError{err}
}
