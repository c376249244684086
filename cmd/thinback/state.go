package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/thinback/thinback/archive"
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
	t := catalog.Target{Key: s.id.Key, Path: path, Volume: st.VolumeName, VolumeUUID: st.VolumeUUID,
		Dev: s.id.Dev, Ino: s.id.Ino}
	if !st.Snapshot.ID.IsZero() {
		t.Snapshot, t.SnapshotName, t.SnapshotTime = st.Snapshot.ID.String(), st.Snapshot.Name, st.Snapshot.Time
	}
	if m := st.InProgress; m != nil {
		t.InProgress = &catalog.Mark{Snapshot: m.Snapshot.String(), Files: m.Files, Started: m.Started}
		if !m.Parent.IsZero() {
			t.InProgress.Parent = m.Parent.String()
		}
		if !m.Undo.IsZero() {
			t.InProgress.UndoSnapshot = m.Undo.String()
		}
	}
	err := catalog.Update(s.path, nil, func(tx *catalog.Tx) error { return tx.PutTarget(&t) })
	if err != nil {
		return fmt.Errorf("state file %s: %w", s.path, err)
	}
	return nil
}

func targetState(t catalog.Target) (restore.State, error) {
	st := restore.State{VolumeName: t.Volume, VolumeUUID: t.VolumeUUID}
	parse := func(s string) (archive.ID, error) {
		if s == "" {
			return archive.ID{}, nil
		}
		return archive.ParseID(s)
	}
	var err error
	if st.Snapshot.ID, err = parse(t.Snapshot); err != nil {
		return st, err
	}
	st.Snapshot.Name, st.Snapshot.Time = t.SnapshotName, t.SnapshotTime
	if m := t.InProgress; m != nil {
		st.InProgress = &restore.Mark{Files: m.Files, Started: m.Started}
		for _, p := range []struct {
			dst *archive.ID
			s   string
		}{{&st.InProgress.Snapshot, m.Snapshot}, {&st.InProgress.Parent, m.Parent}, {&st.InProgress.Undo, m.UndoSnapshot}} {
			if *p.dst, err = parse(p.s); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}
