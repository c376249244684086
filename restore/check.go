package restore

import (
	"errors"
	"fmt"
	"path"
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
	// ErrResume: a resumed file (archive.Header.ResumeFrom) was given for
	// a target that holds no interrupted apply it continues: none, one of
	// another snapshot or parent, or one that made less durable than the
	// file starts at.
	ErrResume = errors.New("target holds no interrupted transfer that the resumed file continues")
	// ErrModified: the target no longer holds the snapshot it was left at
	// (it was replaced, or written to since), so an incremental cannot be
	// applied to it. The words are ZFS's.
	ErrModified = errors.New("destination has been modified since most recent snapshot")
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
	// Fingerprint samples what the apply that left the target at Snapshot
	// wrote (see Target.Verify); nil when unknown.
	Fingerprint *Fingerprint
	// FileStat is a regular file target's size, times and inode after
	// that apply (see Target.Verify); nil for a block device, or when
	// unknown (a record older than it), when the fingerprint is used.
	FileStat *FileStat
	// Modified, when set, says why the target no longer holds Snapshot:
	// it was replaced under its name (its identity differs from the one
	// recorded) or written to since (Target.Verify). CheckChain then
	// treats it as holding nothing.
	Modified string
}

// Mark records an apply in progress.
type Mark struct {
	Snapshot archive.ID // the snapshot being applied (the last file's)
	Parent   archive.ID // the first file's parent, zero for a full
	Undo     archive.ID // the snapback file's snapshot, zero without one
	Files    []string
	Started  time.Time
	// WroteFrom and WroteTo bound the bytes an apply that stopped may
	// have overwritten (it writes in ascending order); Stopped says why,
	// when running it again with the same files cannot finish it (one of
	// them is damaged).
	WroteFrom, WroteTo int64
	Stopped            string
	// Done is the durable prefix of the apply, kept only when it is
	// recorded as it goes (Options.Checkpoint): every byte below it holds
	// the snapshot being applied, written and fsynced (and saved in the
	// snapback file first). A multiple of the files' block size; 0 when
	// nothing is known. A resumed file from there on finishes the apply
	// (see archive.Header.ResumeFrom).
	Done int64
	// Size is the volume size being applied (the last file's).
	Size int64
}

// File is a delta file's header with the name used in messages.
type File = archive.ChainFile

func describe(s archive.Snapshot) string { return s.Describe() }

// modifiedError says ErrModified in full, in ZFS's words with the target
// and the snapshot in them.
type modifiedError struct{ msg string }

func (e *modifiedError) Error() string        { return e.msg }
func (e *modifiedError) Is(target error) bool { return target == ErrModified }

// namedVolume reports whether h's volume name was chosen (send --volume, a
// store's volume, an LVM origin) rather than derived from the file name of
// the image or of the snapshot LV the file was sent from: those change
// along a chain (send --file b.img --base-file a.img names its volume
// b.img), so they say nothing about which volume a file is of.
func namedVolume(h *archive.Header) bool {
	if p := h.Attr(archive.AttrFilePath); p != "" && h.VolumeName == path.Base(p) {
		return false
	}
	if vg, lv := h.Attr(archive.AttrLVMVG), h.Attr(archive.AttrLVMLV); vg != "" && h.VolumeName == vg+"/"+lv {
		return false
	}
	return true
}

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

	// A target replaced or written to since holds nothing known: only a
	// full defines it.
	if st.Modified != "" {
		if first.Header.IsFull() {
			return nil
		}
		held := "its last snapshot"
		if !st.Snapshot.ID.IsZero() {
			held = describe(st.Snapshot)
		}
		return &modifiedError{fmt.Sprintf("cannot apply %s: destination %s has been modified since most recent snapshot %s (%s); apply the chain from its full (thinback restore does that by itself), or use --force if it still holds that snapshot",
			first.Name, target, held, st.Modified)}
	}

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
	// Without a UUID on both sides, an incremental's volume is its name,
	// when the name was chosen rather than derived from an image's or a
	// snapshot's file name (which a chain of sends does not keep).
	// A snapback file carries the name of what the target held before
	// the apply it undoes, which is what it gives back.
	if u, v := st.VolumeUUID, first.Header.VolumeUUID; (u == "" || v == "") && !first.Header.IsFull() && !first.Header.IsSnapback() &&
		st.VolumeName != "" && first.Header.VolumeName != st.VolumeName && namedVolume(first.Header) {
		return fmt.Errorf("%s is an incremental of volume %s, but target %s holds volume %s: %w; choose the right target, or use --force if they are the same volume", first.Name, first.Header.VolumeName, target, st.VolumeName, ErrVolumeMismatch)
	}
	if first.Header.IsFull() {
		return nil // a full defines every byte, whatever the target held
	}
	if mark != nil {
		if mark.Stopped != "" {
			return fmt.Errorf("applying %s to %s stopped (%s) after bytes %d to %d were overwritten: the target matches neither snapshot: %w; apply a good copy of the files (the same apply then finishes it), apply its snapback file to undo it, or apply a full", describe(archive.Snapshot{ID: mark.Snapshot}), target, mark.Stopped, mark.WroteFrom, mark.WroteTo, ErrInterrupted)
		}
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

// checkResumed lets a resumed file (archive.Header.ResumeFrom) be applied
// only on its own, to a target whose state holds the interrupted apply it
// continues: the same snapshot from the same parent, durable at least up
// to where the file starts. Nothing forces it: below its offset the file
// says nothing, so on any other target it would leave bytes of neither
// snapshot.
func checkResumed(files []File, target string, st State) error {
	if len(files) != 1 || !files[0].Header.IsResumed() {
		return nil // several files with a resumed one: archive.CheckLinks refuses them
	}
	f := files[0]
	h := f.Header
	m := st.InProgress
	what := fmt.Sprintf("%s is the rest of a transfer of %s", f.Name, describe(h.Snapshot))
	if !h.IsFull() {
		what += " from " + describe(h.Parent)
	}
	what += fmt.Sprintf(", from byte %d", h.ResumeFrom)
	switch {
	case m == nil:
		return fmt.Errorf("%s, but %s holds no interrupted transfer: %w; send the whole stream again (without --resume)", what, target, ErrResume)
	case m.Snapshot != h.Snapshot.ID || m.Parent != h.Parent.ID:
		return fmt.Errorf("%s, but the transfer interrupted on %s was of %s from %s: %w; get its token with thinback receive --to %s --resume-token, or send the whole stream again",
			what, target, describe(archive.Snapshot{ID: m.Snapshot}), describe(archive.Snapshot{ID: m.Parent}), ErrResume, target)
	case m.Done < h.ResumeFrom:
		return fmt.Errorf("%s, but the transfer interrupted on %s made only bytes below %d durable: %w; get its token with thinback receive --to %s --resume-token, and send again from there",
			what, target, m.Done, ErrResume, target)
	}
	return nil
}
