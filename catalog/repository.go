package catalog

import (
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"
)

// Repository is a backup store as thinback's commands use it, whatever
// holds it: a local directory (Store) or a store on object storage (the
// s3store subpackage). The commands see records through catalog
// transactions and files through readers; how records become durable and
// where the bytes live is the store's business.
//
// A Repository's View sees the records as the store had them when it was
// opened (a store on object storage brings its local copy of the records
// up to date then, and again for a volume when LockVolume takes it), plus
// what this process committed since.
type Repository interface {
	DeltaWriter
	KeySlots // the key slots of an encrypted store

	// String names the store in messages: its directory, or its address.
	String() string

	// View runs fn in a read-only transaction of the store's catalog.
	View(fn func(*Tx) error) error

	// LockVolume takes the volume's lock for a command that writes to it
	// (ErrLocked when another process holds it). A writer holds it from
	// before it reads the volume's records until after its last commit.
	LockVolume(volume string) (unlock func() error, err error)

	// OpenDelta opens a snapshot's file (Snapshot.File) for reading at
	// any offset, as archive's chain readers and restore's merge do.
	OpenDelta(file string) (DeltaReader, error)

	// OpenStream opens a snapshot's file for one pass from its start to
	// its end, which a store may serve faster than random access (object
	// storage keeps several ranged reads in flight ahead).
	OpenStream(file string) (io.ReadCloser, error)

	// Files lists the delta files the store holds, as named by the
	// store's layout: the input of a catalog rebuild.
	Files() ([]DeltaFile, error)

	// Remove deletes a snapshot that no other depends on: its record,
	// then its file (see Store.Remove).
	Remove(volume, id string) error

	// SetRetention records a volume's prune policy.
	SetRetention(volume string, r Retention) error

	// Rebuild replaces every snapshot record with snaps, read from the
	// store's files (Seq, File and FileSize as Files found them), and
	// records those of vols the store has no record of (the first of a
	// name when vols repeats one: the oldest file's, as Files orders
	// them). Existing volume records, with their retention policies, are
	// kept.
	Rebuild(vols []Volume, snaps []Snapshot) error

	// CleanTemp removes what writers that died left while writing, and
	// RemoveOrphans the files no record references; both return what
	// they removed, for the caller to report.
	CleanTemp() ([]string, error)
	RemoveOrphans() ([]string, error)

	// Check lists every inconsistency of the records and the files (see
	// Store.Check). CheckOptions.Verify is given the snapshot and its
	// file's name for OpenDelta or OpenStream.
	Check(opts CheckOptions) ([]error, error)

	// LocalFiles lists the files and directories of this machine through
	// which the store holds chain (a snapshot's chain, full first): a
	// command that writes to a file or device it is given refuses one
	// that is, or holds, any of them.
	LocalFiles(chain []Snapshot) []LocalFile

	// Close releases what the store holds (locks still held, open
	// connections). The local store holds nothing between calls.
	Close() error
}

// DeltaReader is a delta file of a store, open for reading front to back
// and at offsets (archive.ReadSeekerAt). Name names it in messages.
type DeltaReader interface {
	io.Reader
	io.Seeker
	io.ReaderAt
	io.Closer
	Name() string
}

var _ Repository = (*Store)(nil)

// LocalFile is a file or directory of this machine that a store keeps
// (see Repository.LocalFiles). What names it in messages: "store",
// "catalog", "delta file", "catalog cache".
type LocalFile struct {
	What string
	Path string
	Dir  bool // a directory: nothing under it either
}

// LocalFiles returns the store's directory, its catalog and the delta
// files of chain.
func (s *Store) LocalFiles(chain []Snapshot) []LocalFile {
	files := []LocalFile{{What: "store", Path: s.Dir(), Dir: true}, {What: "catalog", Path: s.DBPath()}}
	for _, sn := range chain {
		files = append(files, LocalFile{What: "delta file", Path: s.Path(sn.File)})
	}
	return files
}

// String returns the store's directory.
func (s *Store) String() string { return s.dir }

// Close does nothing: a Store holds no file open between calls.
func (s *Store) Close() error { return nil }

// OpenDelta opens the delta file at the store-relative path file for
// reading. Like the store's other own files, it is refused when it is a
// symbolic link or a special file (ErrNotOwn), and a name that is not a
// clean path under volumes/ is refused before anything is opened.
func (s *Store) OpenDelta(file string) (DeltaReader, error) {
	if err := validFile(file); err != nil {
		return nil, fmt.Errorf("catalog: open delta file: %w", err)
	}
	f, err := OpenOwn(s.Path(file), syscall.O_RDONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return f, nil
}

// OpenStream is OpenDelta: a local file is as fast either way.
func (s *Store) OpenStream(file string) (io.ReadCloser, error) { return s.OpenDelta(file) }

// SetRetention records r as volume's prune policy.
func (s *Store) SetRetention(volume string, r Retention) error {
	return noSpace(s.DBPath(), s.Update(func(tx *Tx) error {
		v, err := tx.Volume(volume)
		if err != nil {
			return err
		}
		v.Retention = r
		return tx.PutVolume(&v)
	}))
}

// Rebuild resets the snapshot records and records snaps (and the volumes
// of vols not yet recorded) in one transaction. The per-volume Seq
// counters are kept, so Seqs never go backwards.
func (s *Store) Rebuild(vols []Volume, snaps []Snapshot) error {
	byName := make(map[string]Volume, len(vols))
	for _, v := range vols {
		if _, ok := byName[v.Name]; !ok {
			byName[v.Name] = v
		}
	}
	return noSpace(s.DBPath(), s.Update(func(tx *Tx) error {
		if err := tx.ResetSnapshots(); err != nil {
			return err
		}
		for _, sn := range snaps {
			if _, err := tx.Volume(sn.Volume); errors.Is(err, ErrNotFound) {
				v, ok := byName[sn.Volume]
				if !ok {
					return fmt.Errorf("catalog: rebuild: snapshot %s of volume %q comes without its volume's record", sn.ID, sn.Volume)
				}
				if err := tx.PutVolume(&v); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			rec := sn
			if err := tx.PutSnapshot(&rec); err != nil {
				return err
			}
		}
		return nil
	}))
}

// FileName is the store-relative name of a delta file in a store's
// layout: volumes/<DirName(volume)>/<seq>-<id>.tbk, or <seq>-<id>.<gen>.tbk
// for the gen-th rewrite by a prune. Every store back end names its
// files so, which is what lets a rebuild read Seq and ID from a name.
func FileName(volume string, seq uint64, id string, gen int) string {
	return fileName(volume, seq, id, gen)
}

// ParseFileName parses the base name of a delta file named by FileName.
func ParseFileName(base string) (seq uint64, id string, gen int, ok bool) {
	return parseFileName(base)
}

// ParseFile parses a store-relative delta file name made by FileName.
func ParseFile(file string) (f DeltaFile, ok bool) {
	if validFile(file) != nil {
		return f, false
	}
	dir, base := path.Split(file)
	dir = path.Clean(dir)
	if path.Dir(dir) != "volumes" {
		return f, false
	}
	volume, err := ParseDirName(path.Base(dir))
	if err != nil {
		return f, false
	}
	seq, id, gen, ok := parseFileName(base)
	if !ok {
		return f, false
	}
	return DeltaFile{Path: file, Volume: volume, Seq: seq, ID: id, Gen: gen}, true
}

// NextSeq is the Seq a new snapshot of volume gets when it is committed
// now: one more than the highest Seq ever assigned to the volume.
func (tx *Tx) NextSeq(volume string) uint64 { return tx.nextSeq(volume) }

// CheckReplace reports why rec could not replace the record of its
// snapshot with the snapshots listed in remove deleted in the same step
// (see Store.Replace), and returns the snapshot's current record and the
// records of those to remove. It fills a zero Seq and Created of rec from
// the current record. A store that is not a local directory makes the
// same checks as Replace through it.
func (tx *Tx) CheckReplace(rec *Snapshot, remove []string) (old Snapshot, removed []Snapshot, err error) {
	if err := rec.validateFields(); err != nil {
		return old, nil, &RecordError{Bucket: string(bucketSnapshots), Key: rec.ID, Err: err, write: true}
	}
	return tx.checkReplace(rec, remove)
}

// ValidateSnapshot checks a complete snapshot record (Seq and File set) as
// the catalog does before it stores one: what a store reading records
// from elsewhere checks before it uses them. Errors match
// ErrInvalidRecord.
func ValidateSnapshot(s Snapshot) error {
	if err := s.validate(s.ID); err != nil {
		return &RecordError{Bucket: string(bucketSnapshots), Key: s.ID, Err: err, write: true}
	}
	return nil
}

// ValidateVolume checks a volume record as the catalog does before it
// stores one. Errors match ErrInvalidRecord.
func ValidateVolume(v Volume) error {
	if err := v.validate(v.Name); err != nil {
		return &RecordError{Bucket: string(bucketVolumes), Key: v.Name, Err: err, write: true}
	}
	return nil
}
