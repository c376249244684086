package restore

import (
	"errors"
	"fmt"
	"time"

	"github.com/thinback/thinback/archive"
)

// Chain errors. Test with errors.Is.
var (
	// ErrNotChain: files given together do not form a chain. It is
	// archive.ErrNotChain, where the rules between files live.
	ErrNotChain = archive.ErrNotChain
	// ErrBlockSize: files given together have different block sizes, so
	// their records cannot be merged block by block. It is
	// archive.ErrBlockSize.
	ErrBlockSize = archive.ErrBlockSize
	// ErrMismatch: the target does not hold the parent of an incremental.
	ErrMismatch = errors.New("target does not match incremental source")
	// ErrVolumeMismatch: the file is of another volume than the target holds.
	ErrVolumeMismatch = errors.New("file belongs to another volume")
	// ErrInterrupted: an earlier apply to the target did not finish.
	ErrInterrupted = errors.New("an earlier apply to the target was interrupted")
)

// State is what is known about a target: the snapshot it holds, and an
// apply in progress.
type State struct {
	VolumeName string
	VolumeUUID string
	VolumeSize int64
	// Snapshot the target holds; a zero ID means unknown.
	Snapshot archive.Snapshot
	// InProgress is set while an apply runs, and stays set if it is cut
	// short: the target is then partly written.
	InProgress *Mark
}

// Mark records an apply in progress.
type Mark struct {
	Snapshot archive.ID // the snapshot being applied (the last file's)
	Parent   archive.ID // the first file's parent, zero for a full
	Undo     archive.ID // the snapback file's snapshot, zero without one
	Files    []string
	Started  time.Time
}

// File is a delta file's header with the name used in messages.
type File = archive.ChainFile

func describe(s archive.Snapshot) string { return s.Describe() }

// CheckChain decides whether files may be applied, in order, to a target in
// state st: the rules between the files (archive.CheckLinks), then those
// between the first file and what the target holds. force skips the checks
// against the target (not those between the files).
func CheckChain(files []File, target string, st State, force bool) error {
	if len(files) == 0 {
		return errors.New("no delta files to apply")
	}
	if err := archive.CheckLinks(files); err != nil {
		return err
	}
	if force {
		return nil
	}
	first, last := files[0], files[len(files)-1]
	mark := st.InProgress

	// A snapback file undoing an interrupted apply.
	if mark != nil && len(files) == 1 && first.Header.IsSnapback() &&
		!mark.Undo.IsZero() && first.Header.Snapshot.ID == mark.Undo && first.Header.Parent.ID == mark.Snapshot {
		return nil
	}
	// Running the same apply again finishes an interrupted one.
	if mark != nil && last.Header.Snapshot.ID == mark.Snapshot && first.Header.Parent.ID == mark.Parent {
		return nil
	}
	if u, v := st.VolumeUUID, first.Header.VolumeUUID; u != "" && v != "" && u != v {
		return fmt.Errorf("%s is of volume %s (%s) but target %s holds volume %s (%s): %w; choose the right target, or use --force to overwrite it", first.Name, first.Header.VolumeName, v, target, st.VolumeName, u, ErrVolumeMismatch)
	}
	if first.Header.IsFull() {
		return nil // a full defines every byte, whatever the target held
	}
	if mark != nil {
		return fmt.Errorf("applying %s to %s was interrupted; the target is partly written: %w; run the same apply again to finish it, apply its snapback file to undo it, or apply a full", describe(archive.Snapshot{ID: mark.Snapshot}), target, ErrInterrupted)
	}
	switch held := st.Snapshot; {
	case held.ID == first.Header.Parent.ID:
		return nil
	case held.ID == last.Header.Snapshot.ID:
		return nil // already applied: applying again writes the same bytes
	case held.ID.IsZero():
		return fmt.Errorf("cannot apply %s to %s: it is an incremental from %s, and nothing is known of what the target holds: %w; apply the chain from its full, or use --force if the target holds %s", first.Name, target, describe(first.Header.Parent), ErrMismatch, first.Header.Parent.Name)
	default:
		return fmt.Errorf("cannot apply %s to %s: the target holds %s, but the file is an incremental from %s: %w; apply the files that lead from the target's snapshot to it, or use --force", first.Name, target, describe(held), describe(first.Header.Parent), ErrMismatch)
	}
}
