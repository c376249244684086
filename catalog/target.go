package catalog

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Target is a restored device or file and the snapshot it holds: the
// state that lets a later apply of an incremental check that the target
// is at the incremental's parent, and lets an interrupted apply be named
// and finished. `thinback apply` keeps these in a small standalone catalog
// (a state file); a store's catalog keeps them for restores from it.
type Target struct {
	// Key identifies the target; the caller chooses it (for example the
	// resolved device path).
	Key string `json:"key"`
	// Path is the device or file as the user named it.
	Path string `json:"path"`
	// Volume, VolumeUUID: the volume whose data the target holds.
	Volume     string `json:"volume,omitempty"`
	VolumeUUID string `json:"volume_uuid,omitempty"`
	// Snapshot is the ID of the snapshot the target holds, "" if none
	// completed yet.
	Snapshot     string    `json:"snapshot,omitempty"`
	SnapshotName string    `json:"snapshot_name,omitempty"`
	SnapshotTime time.Time `json:"snapshot_time,omitzero"`
	// Updated is when the record was written; PutTarget sets it when zero.
	Updated time.Time `json:"updated,omitzero"`
	// Dev and Ino identify the target's inode, so that a regular file
	// replaced since the last apply is noticed by the caller.
	Dev uint64 `json:"dev,omitempty"`
	Ino uint64 `json:"ino,omitempty"`
	// Device identifies a block device target beyond its key (its LV
	// UUID, device-mapper UUID, or numbers, size and serial), so that a
	// device replaced under the same name is noticed by the caller.
	Device string `json:"device,omitempty"`
	// Fingerprint samples what the last completed apply left on the
	// target, so that a target written to since is noticed by the caller.
	Fingerprint *Fingerprint `json:"fingerprint,omitempty"`
	// FileStat is what the last completed apply left on a regular file
	// target: its size, times and inode, so that any write since is
	// noticed by the caller. Records written before it have none.
	FileStat *FileStat `json:"file_stat,omitempty"`
	// InProgress is set while an apply runs and left behind when it is
	// interrupted.
	InProgress *Mark `json:"in_progress,omitempty"`
}

// Mark records an apply in progress.
type Mark struct {
	// Snapshot is the ID being applied; Parent is what the target held
	// before ("" when the apply started from a full).
	Snapshot string `json:"snapshot"`
	Parent   string `json:"parent,omitempty"`
	// Files are the delta files being applied, in order, as given.
	Files []string `json:"files,omitempty"`
	// UndoSnapshot is the snapback file's snapshot ID, if one is written.
	UndoSnapshot string    `json:"undo_snapshot,omitempty"`
	Started      time.Time `json:"started,omitzero"`
	// WroteFrom and WroteTo bound the bytes of the target an apply that
	// stopped may have overwritten; Stopped says why it stopped, when
	// running it again with the same files cannot finish it (a damaged
	// file).
	WroteFrom int64  `json:"wrote_from,omitempty"`
	WroteTo   int64  `json:"wrote_to,omitempty"`
	Stopped   string `json:"stopped,omitempty"`
	// Done is the durable prefix of an apply that records its progress:
	// every byte below it holds Snapshot (a resumed transfer starts
	// there). VolumeSize is the size being applied.
	Done       int64 `json:"done,omitempty"`
	VolumeSize int64 `json:"volume_size,omitempty"`
}

// Fingerprint is what a target held after an apply: the digests of a few
// of its blocks, and its size.
type Fingerprint struct {
	Size      int64    `json:"size"`
	BlockSize int64    `json:"block_size"`
	Samples   []Sample `json:"samples"`
}

// Sample is one block's digest (hex) at a byte offset.
type Sample struct {
	Offset int64  `json:"offset"`
	Digest string `json:"digest"`
}

// FileStat is a regular file's size, modification and status-change
// times (nanoseconds since the epoch), device and inode.
type FileStat struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	CtimeNs int64  `json:"ctime_ns"`
	Dev     uint64 `json:"dev"`
	Ino     uint64 `json:"ino"`
}

// maxSamples bounds a fingerprint, so a record stays small whatever a
// damaged state file says.
const maxSamples = 256

func (fp *Fingerprint) validate() error {
	if fp.Size < 0 || fp.BlockSize < 512 || fp.BlockSize > 1<<20 {
		return fmt.Errorf("fingerprint of a %d-byte target in %d-byte blocks", fp.Size, fp.BlockSize)
	}
	if len(fp.Samples) > maxSamples {
		return fmt.Errorf("fingerprint has %d samples, more than %d", len(fp.Samples), maxSamples)
	}
	for _, s := range fp.Samples {
		if s.Offset < 0 || s.Offset >= fp.Size {
			return fmt.Errorf("fingerprint sample at offset %d, outside the %d-byte target", s.Offset, fp.Size)
		}
		if len(s.Digest) != 64 || strings.Trim(s.Digest, "0123456789abcdef") != "" {
			return fmt.Errorf("fingerprint sample at offset %d: digest %q is not 64 hex digits", s.Offset, s.Digest)
		}
	}
	return nil
}

func (t *Target) validate(key string) error {
	if t.Key == "" {
		return errors.New("key is empty")
	}
	if t.Key != key {
		return fmt.Errorf("key %q does not match the record's key", t.Key)
	}
	if t.Snapshot != "" {
		if err := ValidID(t.Snapshot); err != nil {
			return fmt.Errorf("snapshot: %w", err)
		}
	}
	// The volume is what the applied file's header says, recorded to be
	// compared with the next file's, not a volume of this catalog: it is
	// kept exact (and printed escaped), so an apply is never refused
	// after it wrote the target just because of a name.
	if t.Volume != "" && (!utf8.ValidString(t.Volume) || strings.ContainsRune(t.Volume, 0)) {
		return fmt.Errorf("volume name %+q is not valid UTF-8 without NUL", t.Volume)
	}
	fields := map[string]string{"key": t.Key, "path": t.Path, "volume uuid": t.VolumeUUID,
		"snapshot name": t.SnapshotName, "device": t.Device}
	if t.Fingerprint != nil {
		if err := t.Fingerprint.validate(); err != nil {
			return err
		}
	}
	if t.FileStat != nil && t.FileStat.Size < 0 {
		return fmt.Errorf("file stat of a %d-byte target", t.FileStat.Size)
	}
	if m := t.InProgress; m != nil {
		if err := ValidID(m.Snapshot); err != nil {
			return fmt.Errorf("in-progress snapshot: %w", err)
		}
		for name, id := range map[string]string{"in-progress parent": m.Parent, "undo snapshot": m.UndoSnapshot} {
			if id != "" {
				if err := ValidID(id); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
			}
		}
		if m.WroteFrom < 0 || m.WroteTo < m.WroteFrom {
			return fmt.Errorf("in-progress mark says bytes %d to %d were written", m.WroteFrom, m.WroteTo)
		}
		if m.Done < 0 || m.VolumeSize < 0 || (m.VolumeSize > 0 && m.Done > m.VolumeSize) {
			return fmt.Errorf("in-progress mark says bytes below %d of %d are done", m.Done, m.VolumeSize)
		}
		fields["in-progress stop reason"] = m.Stopped
		if len(m.Files) > maxField {
			return fmt.Errorf("in-progress mark lists %d files, more than %d", len(m.Files), maxField)
		}
		for i, f := range m.Files {
			fields[fmt.Sprintf("in-progress file %d", i)] = f
		}
	}
	return checkFields(fields)
}

// Target returns the target with the given key, or an error wrapping
// ErrNotFound.
func (tx *Tx) Target(key string) (Target, error) {
	b := tx.bucket(bucketTargets)
	var data []byte
	if b != nil && key != "" {
		data = b.Get([]byte(key))
	}
	if data == nil {
		return Target{}, fmt.Errorf("catalog: target %q: %w", key, ErrNotFound)
	}
	return decode[Target](bucketTargets, []byte(key), data)
}

// Targets returns every target, sorted by key.
func (tx *Tx) Targets() ([]Target, error) {
	b := tx.bucket(bucketTargets)
	if b == nil {
		return nil, nil
	}
	var ts []Target
	err := b.ForEach(func(k, data []byte) error {
		t, err := decode[Target](bucketTargets, k, data)
		if err != nil {
			return err
		}
		ts = append(ts, t)
		return nil
	})
	sort.Slice(ts, func(i, j int) bool { return ts[i].Key < ts[j].Key })
	return ts, err
}

// PutTarget creates or replaces a target. It sets t.Updated to the current
// time when it is zero.
func (tx *Tx) PutTarget(t *Target) error {
	b, err := tx.writeBucket(bucketTargets)
	if err != nil {
		return err
	}
	rec := *t
	if rec.Updated.IsZero() {
		rec.Updated = time.Now().UTC()
	}
	if err := put(b, bucketTargets, rec.Key, &rec); err != nil {
		return err
	}
	*t = rec
	return nil
}

// DeleteTarget removes a target, or returns an error wrapping ErrNotFound.
func (tx *Tx) DeleteTarget(key string) error {
	b, err := tx.writeBucket(bucketTargets)
	if err != nil {
		return err
	}
	if key == "" || b.Get([]byte(key)) == nil {
		return fmt.Errorf("catalog: target %q: %w", key, ErrNotFound)
	}
	return b.Delete([]byte(key))
}
