package sshstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/thinback/thinback/catalog"
)

// View runs fn in a read-only transaction of a local copy of the
// server's catalog. Each View asks the server whether its catalog
// changed since the copy was made (a round trip) and fetches it whole
// when it did: the catalog holds records only, and is small.
//
// The copy is a temp file of this process, removed by Close: a catalog
// cache kept between runs would have to be trusted not to have been
// replaced by anything else, and refetching once per command costs one
// transfer of the records.
func (cl *Client) View(fn func(*catalog.Tx) error) error {
	cl.viewMu.Lock()
	defer cl.viewMu.Unlock()
	if err := cl.refresh(); err != nil {
		return err
	}
	return catalog.View(filepath.Join(cl.dir, "catalog.db"), nil, fn)
}

// maxCatalog bounds the copy of a server's catalog on this machine's
// disk: records of millions of snapshots, far more than a store holds.
var maxCatalog int64 = 1 << 30

// refresh brings the local copy up to date; cl.viewMu is held.
func (cl *Client) refresh() error {
	if cl.dir == "" {
		dir, err := os.MkdirTemp("", "thinback-sshstore-")
		if err != nil {
			return fmt.Errorf("store %s: a directory for the copy of its catalog: %w", cl.name, err)
		}
		cl.dir = dir
	}
	db := filepath.Join(cl.dir, "catalog.db")
	cl.mu.Lock()
	defer cl.mu.Unlock()
	gen := cl.gen
	if !cl.have {
		gen = generation{}
	}
	if err := cl.send(&msg{Op: opView, Gen: gen}); err != nil {
		return err
	}
	m, err := cl.recv()
	if err != nil {
		return err
	}
	if m.Same {
		if !cl.have || m.Gen != cl.gen {
			return cl.fail(fmt.Errorf("%w: the server called a catalog current that the client does not have", ErrProtocol))
		}
		return nil
	}
	// Whatever happens below, the old copy is no longer current.
	cl.have = false
	tmp, err := os.CreateTemp(cl.dir, "catalog.db.*")
	if err != nil {
		return cl.drain(m, fmt.Errorf("store %s: a copy of its catalog: %w", cl.name, err))
	}
	defer os.Remove(tmp.Name())
	werr := func() error {
		var size int64
		for {
			if size += int64(len(m.Data)); size > maxCatalog {
				return cl.fail(fmt.Errorf("%w: a catalog of more than %d bytes", ErrProtocol, maxCatalog))
			}
			if _, err := tmp.Write(m.Data); err != nil {
				return fmt.Errorf("store %s: writing the copy of its catalog %s: %w", cl.name, tmp.Name(), err)
			}
			if !m.More {
				return nil
			}
			next, err := cl.recv()
			if err != nil {
				return err
			}
			if next.Gen != m.Gen {
				return cl.fail(fmt.Errorf("%w: the catalog changed generation while it was sent", ErrProtocol))
			}
			m = next
		}
	}()
	if cerr := tmp.Close(); werr == nil && cerr != nil {
		werr = fmt.Errorf("store %s: writing the copy of its catalog: %w", cl.name, cerr)
	}
	if werr != nil {
		return werr
	}
	if err := os.Rename(tmp.Name(), db); err != nil {
		return fmt.Errorf("store %s: the copy of its catalog: %w", cl.name, err)
	}
	cl.gen, cl.have = m.Gen, true
	return nil
}

// drain reads the rest of a catalog being sent after a local failure, so
// the connection stays in step, and returns err.
func (cl *Client) drain(m *msg, err error) error {
	for m.More {
		next, rerr := cl.recv()
		if rerr != nil {
			return errors.Join(err, rerr)
		}
		m = next
	}
	return err
}
