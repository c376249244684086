package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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

// stateDir checks the state file's directory: thinback's own (it makes
// /var/lib/thinback), so a symbolic link there is refused rather than
// followed to wherever it points (the file itself is opened without
// following links by the catalog package). With create, a missing
// directory is made, mode 0700. A missing directory is fine to read:
// no target is known.
func stateDir(path string, create bool) error {
	dir := filepath.Dir(path)
	if create {
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return fmt.Errorf("state file %s: %w", path, err)
		}
	}
	if _, err := catalog.OwnDir(dir, create); err != nil && !(errors.Is(err, fs.ErrNotExist) && !create) {
		return fmt.Errorf("state file %s: %w (give the state file's real path with --state or $THINBACK_STATE)", path, err)
	}
	return nil
}

// load returns the target's recorded state (zero when unknown).
func (s *stateFile) load() (restore.State, error) {
	var st restore.State
	if err := stateDir(s.path, false); err != nil {
		return st, err
	}
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
	if err := stateDir(s.path, true); err != nil {
		return err
	}
	err := catalog.Update(s.path, nil, func(tx *catalog.Tx) error { return tx.PutTarget(&t) })
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return nil
}
