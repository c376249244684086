package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// defaultStateFile keeps what each target holds, for apply's chain checks.
const defaultStateFile = "/var/lib/thinback/state.db"

// stateFile is the catalog file that records targets' states.
type stateFile struct {
	path string
	id   restore.Identity
	// replaced is set when a regular file was replaced since its state
	// was recorded: the record no longer describes it.
	replaced bool
}

func stateFilePath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("THINBACK_STATE"); env != "" {
		return env
	}
	return defaultStateFile
}

// load returns the target's recorded state (zero when unknown).
func (s *stateFile) load() (restore.State, error) {
	var st restore.State
	err := catalog.View(s.path, nil, func(tx *catalog.Tx) error {
		t, err := tx.Target(s.id.Key)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if (s.id.Dev != 0 || s.id.Ino != 0) && (t.Dev != s.id.Dev || t.Ino != s.id.Ino) {
			s.replaced = true
			return nil
		}
		st, err = targetState(t)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("state file %s: %w", s.path, err)
	}
	return st, nil
}

// save records st for the target.
func (s *stateFile) save(path string, st restore.State) error {
	t := targetRecord(s.id, path, st)
	err := catalog.Update(s.path, nil, func(tx *catalog.Tx) error { return tx.PutTarget(&t) })
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return nil
}
