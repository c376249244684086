package catalog

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Snapshot is one backup of a volume: a full (Parent == "") or an
// incremental on top of Parent, stored in one delta file.
type Snapshot struct {
	// ID is the snapshot's canonical UUID, chosen by the caller and
	// written in the delta file's header; the catalog never invents one.
	ID string `json:"id"`
	// Volume is the Volume.Name this snapshot belongs to.
	Volume string `json:"volume"`
	// Parent is the ID of the snapshot this one is a delta against, or
	// "" for a full.
	Parent string `json:"parent,omitempty"`
	// Seq orders the snapshots of one volume; it only grows. PutSnapshot
	// (and Store.Commit) assign the next one when it is zero.
	Seq uint64 `json:"seq"`
	// Time is when the snapshot was taken.
	Time time.Time `json:"time"`
	// Name is a human label (the LV snapshot name for LVM sources).
	Name string `json:"name,omitempty"`
	// LVName, LVUUID and ThinID identify the thin snapshot on the pool.
	LVName string `json:"lv_name,omitempty"`
	LVUUID string `json:"lv_uuid,omitempty"`
	ThinID int64  `json:"thin_id,omitempty"`
	// VolumeSize is the volume's size in bytes at this snapshot.
	VolumeSize int64 `json:"volume_size"`
	// ParentSize is the volume's size in bytes at Parent, as the delta
	// file's header says; 0 for a full. An incremental covers only what
	// changed within ParentSize (and what lies beyond it), so one whose
	// ParentSize is not its parent's VolumeSize would restore with stale
	// bytes: Commit refuses it and Check reports it (ErrParentSize).
	// Records written before thinback kept it have 0 here, which Check
	// reads as "not recorded".
	ParentSize int64 `json:"parent_size,omitempty"`
	// DataBytes and ZeroBytes are the bytes changed: written as data and
	// as zero ranges.
	DataBytes int64 `json:"data_bytes"`
	ZeroBytes int64 `json:"zero_bytes"`
	// FileSize and File describe the delta file; File is relative to the
	// store root, with '/' separators. Store.Commit sets both.
	FileSize int64  `json:"file_size"`
	File     string `json:"file"`
	// FileDigest is the delta file's final digest (lower-case hex), as
	// given by the caller; the catalog does not read files.
	FileDigest string `json:"file_digest,omitempty"`
	// Created is when the record was written; set by PutSnapshot when zero.
	Created time.Time `json:"created,omitzero"`
}

// IsFull reports whether the snapshot is a full backup.
func (s *Snapshot) IsFull() bool { return s.Parent == "" }

// ValidID reports whether id is a canonical UUID string: 36 characters,
// lower-case hex in groups of 8-4-4-4-12.
func ValidID(id string) error {
	if len(id) != 36 {
		return fmt.Errorf("id %q is not a canonical UUID", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return fmt.Errorf("id %q is not a canonical UUID", id)
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return fmt.Errorf("id %q is not a canonical UUID", id)
			}
		}
	}
	return nil
}

// validate checks a stored snapshot; Seq must be assigned.
func (s *Snapshot) validate(key string) error {
	if err := s.validateFields(); err != nil {
		return err
	}
	if s.ID != key {
		return fmt.Errorf("id %q does not match its key", s.ID)
	}
	if s.Seq == 0 {
		return errors.New("seq is 0")
	}
	if err := validFile(s.File); err != nil {
		return err
	}
	return nil
}

// validateFields checks everything the caller supplies, before Seq and
// File are known.
func (s *Snapshot) validateFields() error {
	if err := ValidID(s.ID); err != nil {
		return err
	}
	if err := ValidVolumeName(s.Volume); err != nil {
		return err
	}
	if s.Parent != "" {
		if err := ValidID(s.Parent); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
		if s.Parent == s.ID {
			return errors.New("snapshot is its own parent")
		}
	}
	if s.Time.IsZero() {
		return errors.New("time is not set")
	}
	if s.Parent == "" && s.ParentSize != 0 {
		return fmt.Errorf("a full has a parent size (%d)", s.ParentSize)
	}
	for name, n := range map[string]int64{"volume size": s.VolumeSize, "parent size": s.ParentSize, "data bytes": s.DataBytes,
		"zero bytes": s.ZeroBytes, "file size": s.FileSize} {
		if n < 0 {
			return fmt.Errorf("%s %d is negative", name, n)
		}
	}
	if s.FileDigest != "" {
		if _, err := hex.DecodeString(s.FileDigest); err != nil || strings.ToLower(s.FileDigest) != s.FileDigest {
			return fmt.Errorf("file digest %q is not lower-case hex", s.FileDigest)
		}
	}
	return checkFields(map[string]string{"name": s.Name, "lv name": s.LVName, "lv uuid": s.LVUUID,
		"file": s.File, "file digest": s.FileDigest})
}

// validFile accepts only clean relative paths under "volumes/", so that no
// record, however damaged, can make thinback open or delete a file
// outside the store.
func validFile(f string) error {
	if f == "" {
		return errors.New("file is empty")
	}
	if path.Clean(f) != f || path.IsAbs(f) || strings.Contains(f, "\\") {
		return fmt.Errorf("file %q is not a clean relative path", f)
	}
	parts := strings.Split(f, "/")
	if len(parts) < 3 || parts[0] != "volumes" {
		return fmt.Errorf("file %q is not under volumes/", f)
	}
	for _, p := range parts {
		if p == ".." || p == "." || p == "" {
			return fmt.Errorf("file %q is not a clean relative path", f)
		}
	}
	return nil
}

// Snapshot returns the snapshot with the given id, or an error wrapping
// ErrNotFound.
func (tx *Tx) Snapshot(id string) (Snapshot, error) {
	b := tx.bucket(bucketSnapshots)
	var data []byte
	if b != nil {
		data = b.Get([]byte(id))
	}
	if data == nil {
		return Snapshot{}, fmt.Errorf("catalog: snapshot %s: %w", id, ErrNotFound)
	}
	return decode[Snapshot](bucketSnapshots, []byte(id), data)
}

// seqBucket returns the volume's seq index, or nil.
func (tx *Tx) seqBucket(volume string) *bolt.Bucket {
	seqs := tx.bucket(bucketSeqs)
	if seqs == nil {
		return nil
	}
	return seqs.Bucket([]byte(volume))
}

// Snapshots returns the volume's snapshots in Seq order (oldest first).
func (tx *Tx) Snapshots(volume string) ([]Snapshot, error) {
	sb := tx.seqBucket(volume)
	if sb == nil {
		return nil, nil
	}
	var snaps []Snapshot
	err := sb.ForEach(func(k, id []byte) error {
		s, err := tx.Snapshot(string(id))
		if errors.Is(err, ErrNotFound) {
			return &RecordError{Bucket: string(bucketSeqs), Key: fmt.Sprintf("%s/%d", volume, seqOf(k)),
				Err: fmt.Errorf("index names missing snapshot %s", id)}
		}
		if err != nil {
			return err
		}
		snaps = append(snaps, s)
		return nil
	})
	return snaps, err
}

func seqOf(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// AllSnapshots returns every snapshot, ordered by volume name and Seq.
func (tx *Tx) AllSnapshots() ([]Snapshot, error) {
	b := tx.bucket(bucketSnapshots)
	if b == nil {
		return nil, nil
	}
	var snaps []Snapshot
	err := b.ForEach(func(k, data []byte) error {
		s, err := decode[Snapshot](bucketSnapshots, k, data)
		if err != nil {
			return err
		}
		snaps = append(snaps, s)
		return nil
	})
	sortSnapshots(snaps)
	return snaps, err
}

func sortSnapshots(snaps []Snapshot) {
	sort.Slice(snaps, func(i, j int) bool {
		a, b := &snaps[i], &snaps[j]
		if a.Volume != b.Volume {
			return a.Volume < b.Volume
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.ID < b.ID
	})
}

// Latest returns the volume's snapshot with the highest Seq, or an error
// wrapping ErrNotFound when it has none.
func (tx *Tx) Latest(volume string) (Snapshot, error) {
	if sb := tx.seqBucket(volume); sb != nil {
		if _, id := sb.Cursor().Last(); id != nil {
			return tx.Snapshot(string(id))
		}
	}
	return Snapshot{}, fmt.Errorf("catalog: volume %q has no snapshots: %w", volume, ErrNotFound)
}

// At returns the volume's newest snapshot whose Time is at or before t
// (the greater Seq wins a tie), or an error wrapping ErrNotFound.
func (tx *Tx) At(volume string, t time.Time) (Snapshot, error) {
	snaps, err := tx.Snapshots(volume)
	if err != nil {
		return Snapshot{}, err
	}
	best := -1
	for i := range snaps {
		if snaps[i].Time.After(t) {
			continue
		}
		// Seq order is ascending, so a later equal time wins the tie.
		if best < 0 || !snaps[i].Time.Before(snaps[best].Time) {
			best = i
		}
	}
	if best < 0 {
		return Snapshot{}, fmt.Errorf("catalog: volume %q has no snapshot at or before %s: %w",
			volume, t.Format(time.RFC3339), ErrNotFound)
	}
	return snaps[best], nil
}

// Chain returns the snapshots needed to restore id: the full first, then
// each incremental, id last. A chain that does not end in a full (a
// missing parent, a parent in another volume, or a loop) is an error
// wrapping ErrBrokenChain, naming where it breaks.
func (tx *Tx) Chain(id string) ([]Snapshot, error) {
	var chain []Snapshot
	seen := make(map[string]bool)
	cur, err := tx.Snapshot(id)
	if err != nil {
		return nil, err
	}
	for {
		if seen[cur.ID] {
			return nil, &CheckError{Problem: ErrCycle, Volume: cur.Volume, Snapshot: id,
				Detail: fmt.Sprintf("the chain loops at %s", cur.ID)}
		}
		seen[cur.ID] = true
		chain = append(chain, cur)
		if cur.Parent == "" {
			break
		}
		p, err := tx.Snapshot(cur.Parent)
		if errors.Is(err, ErrNotFound) {
			return nil, &CheckError{Problem: ErrBrokenChain, Volume: cur.Volume, Snapshot: id,
				Detail: fmt.Sprintf("parent %s of %s is missing", cur.Parent, cur.ID)}
		}
		if err != nil {
			return nil, err
		}
		if p.Volume != cur.Volume {
			return nil, &CheckError{Problem: ErrBrokenChain, Volume: cur.Volume, Snapshot: id,
				Detail: fmt.Sprintf("parent %s of %s belongs to volume %q", p.ID, cur.ID, p.Volume)}
		}
		cur = p
	}
	for i, j := 0, len(chain)-1; i < j; i, j = i+1, j-1 {
		chain[i], chain[j] = chain[j], chain[i]
	}
	return chain, nil
}

// Children returns the snapshots whose Parent is id, in Seq order.
func (tx *Tx) Children(id string) ([]Snapshot, error) {
	s, err := tx.Snapshot(id)
	if err != nil {
		return nil, err
	}
	snaps, err := tx.Snapshots(s.Volume)
	if err != nil {
		return nil, err
	}
	var kids []Snapshot
	for _, c := range snaps {
		if c.Parent == id {
			kids = append(kids, c)
		}
	}
	return kids, nil
}

// PutSnapshot creates or updates a snapshot record. The volume must exist.
// A zero Seq is assigned: the volume's highest Seq so far plus one for a
// new snapshot, the stored one for an existing snapshot. An existing
// snapshot keeps its volume and Seq; a new one may not reuse a Seq. Zero
// Created is set to the current time. The parent is not required to
// exist yet (a rebuild may add a child first); Check reports a parent
// that never appears.
func (tx *Tx) PutSnapshot(s *Snapshot) error {
	snaps, err := tx.writeBucket(bucketSnapshots)
	if err != nil {
		return err
	}
	rec := *s
	if err := rec.validateFields(); err != nil {
		return &RecordError{Bucket: string(bucketSnapshots), Key: rec.ID, Err: err, write: true}
	}
	if _, err := tx.Volume(rec.Volume); err != nil {
		return fmt.Errorf("catalog: snapshot %s: %w", rec.ID, err)
	}
	if data := snaps.Get([]byte(rec.ID)); data != nil {
		old, err := decode[Snapshot](bucketSnapshots, []byte(rec.ID), data)
		if err != nil {
			return err
		}
		if old.Volume != rec.Volume {
			return fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q: %w",
				rec.ID, old.Volume, rec.Volume, ErrExist)
		}
		if rec.Seq == 0 {
			rec.Seq = old.Seq
		} else if rec.Seq != old.Seq {
			return fmt.Errorf("catalog: snapshot %s has seq %d, cannot change it to %d: %w",
				rec.ID, old.Seq, rec.Seq, ErrExist)
		}
	}
	seqs, err := tx.writeBucket(bucketSeqs)
	if err != nil {
		return err
	}
	sb, err := seqs.CreateBucketIfNotExists([]byte(rec.Volume))
	if err != nil {
		return err
	}
	last, err := tx.writeBucket(bucketLastSeq)
	if err != nil {
		return err
	}
	high := seqOf(last.Get([]byte(rec.Volume)))
	if k, _ := sb.Cursor().Last(); seqOf(k) > high {
		high = seqOf(k)
	}
	if rec.Seq == 0 {
		rec.Seq = high + 1
	} else if id := sb.Get(seqKey(rec.Seq)); id != nil && string(id) != rec.ID {
		return fmt.Errorf("catalog: seq %d of volume %q is already used by snapshot %s: %w",
			rec.Seq, rec.Volume, id, ErrExist)
	}
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	if err := put(snaps, bucketSnapshots, rec.ID, &rec); err != nil {
		return err
	}
	if err := sb.Put(seqKey(rec.Seq), []byte(rec.ID)); err != nil {
		return err
	}
	if rec.Seq > high {
		if err := last.Put([]byte(rec.Volume), seqKey(rec.Seq)); err != nil {
			return err
		}
	}
	*s = rec
	return nil
}

// DeleteSnapshot removes a snapshot record and its index entry. It does
// not look at children or files: Store.Remove and Store.Replace do that.
// A record that no longer decodes can still be deleted.
func (tx *Tx) DeleteSnapshot(id string) error {
	snaps, err := tx.writeBucket(bucketSnapshots)
	if err != nil {
		return err
	}
	data := snaps.Get([]byte(id))
	if data == nil {
		return fmt.Errorf("catalog: snapshot %s: %w", id, ErrNotFound)
	}
	seqs, err := tx.writeBucket(bucketSeqs)
	if err != nil {
		return err
	}
	if s, err := decode[Snapshot](bucketSnapshots, []byte(id), data); err == nil {
		if sb := seqs.Bucket([]byte(s.Volume)); sb != nil {
			if v := sb.Get(seqKey(s.Seq)); string(v) == id {
				if err := sb.Delete(seqKey(s.Seq)); err != nil {
					return err
				}
			}
		}
	} else if err := deleteIndexEntries(seqs, id); err != nil {
		// The record is unreadable, so its volume and seq are unknown:
		// look for it everywhere in the index.
		return err
	}
	return snaps.Delete([]byte(id))
}

func deleteIndexEntries(seqs *bolt.Bucket, id string) error {
	var stale [][2][]byte
	err := seqs.ForEachBucket(func(vol []byte) error {
		return seqs.Bucket(vol).ForEach(func(k, v []byte) error {
			if string(v) == id {
				stale = append(stale, [2][]byte{append([]byte(nil), vol...), append([]byte(nil), k...)})
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	for _, e := range stale {
		if err := seqs.Bucket(e[0]).Delete(e[1]); err != nil {
			return err
		}
	}
	return nil
}

// ResetSnapshots deletes every snapshot record and the Seq index, keeping
// volumes, targets and the per-volume Seq counters (so Seqs never go
// backwards). It is the first step of rebuilding the catalog from the delta
// files in a store (see Store.Files).
func (tx *Tx) ResetSnapshots() error {
	if !tx.Writable() {
		return ErrReadOnly
	}
	for _, name := range [][]byte{bucketSnapshots, bucketSeqs} {
		if tx.btx.Bucket(name) != nil {
			if err := tx.btx.DeleteBucket(name); err != nil {
				return err
			}
		}
		if _, err := tx.btx.CreateBucket(name); err != nil {
			return err
		}
	}
	return nil
}
