package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/restore"
)

// defaultStateFile keeps what each target holds, for apply's chain checks.
const defaultStateFile = "/var/lib/thinback/state.db"

// stateFile is the catalog file that records targets' states.
type stateFile struct {
	path string
	id   restore.Identity
	// loaded is the record load found (nil: none), which revert puts back.
	loaded *catalog.Target
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

// load returns the target's recorded state (zero when unknown). When the
// target is not the one the record was made for (a file or device
// replaced under the same name), the state says so in Modified.
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
		s.loaded = &t
		if st, err = record.TargetState(t); err != nil {
			return err
		}
		st.Modified = s.id.Changed(restore.Identity{Key: t.Key, Dev: t.Dev, Ino: t.Ino, Device: t.Device})
		return nil
	})
	if err != nil {
		return st, fmt.Errorf("state file %s: %w", s.path, err)
	}
	return st, nil
}

// save records st for the target.
func (s *stateFile) save(path string, st restore.State) error {
	t := record.OfTarget(s.id, path, st)
	if err := stateDir(s.path, true); err != nil {
		return err
	}
	err := catalog.Update(s.path, nil, func(tx *catalog.Tx) error { return tx.PutTarget(&t) })
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return nil
}

// revert puts back the record load found, or removes the target's record
// if there was none: an apply that left nothing on the target (or removed
// the file it created) must not leave a mark behind.
func (s *stateFile) revert() error {
	err := catalog.Update(s.path, nil, func(tx *catalog.Tx) error {
		if s.loaded != nil {
			t := *s.loaded
			return tx.PutTarget(&t)
		}
		if err := tx.DeleteTarget(s.id.Key); err != nil && !errors.Is(err, catalog.ErrNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return nil
}
