package catalog

import (
	"errors"
	"fmt"
	"strings"
)

// Errors returned by opening and using a catalog. Callers compare with
// errors.Is; the concrete types below carry the path or name involved.
var (
	// ErrBusy: another process holds the catalog file's lock for longer
	// than Options.Timeout. See BusyError.
	ErrBusy = errors.New("catalog is locked by another thinback process")

	// ErrVersion: the file was written by a newer thinback whose schema
	// this one does not know. See VersionError.
	ErrVersion = errors.New("catalog schema version not supported")

	// ErrInvalid: the file is not a thinback catalog (not a bbolt file,
	// or a bbolt file of another program). See InvalidError.
	ErrInvalid = errors.New("not a thinback catalog")

	// ErrDamaged: the file is a catalog whose bbolt pages fail their
	// checksums (a torn write, a bad disk). See DamagedError.
	ErrDamaged = errors.New("catalog file is damaged")

	// ErrFormat: the file is a bbolt file of a format version this
	// thinback's bbolt does not read. See FormatError.
	ErrFormat = errors.New("catalog file format version not supported")

	// ErrCorrupt: a stored record does not decode or fails validation.
	// See RecordError.
	ErrCorrupt = errors.New("corrupt catalog record")

	// ErrInvalidRecord: a record given to a Put method fails validation.
	// See RecordError.
	ErrInvalidRecord = errors.New("invalid catalog record")

	// ErrNotFound: the volume, snapshot or target is not in the catalog.
	ErrNotFound = errors.New("not found in catalog")

	// ErrExist: the snapshot, sequence number or file already exists.
	ErrExist = errors.New("already exists")

	// ErrInUse: the record is still needed, e.g. a snapshot that is the
	// parent of another one, or a volume that still has snapshots.
	ErrInUse = errors.New("still in use")

	// ErrReadOnly: a write was attempted in a read-only transaction.
	ErrReadOnly = errors.New("catalog transaction is read-only")

	// ErrLocked: the volume is locked by another thinback process (or by
	// another LockVolume call of this one). See LockedError.
	ErrLocked = errors.New("volume is locked by another thinback process")

	// ErrNoSpace: the store's filesystem is full. See NoSpaceError.
	ErrNoSpace = errors.New("no space left on device")

	// ErrTooLarge: a file would pass the largest size its filesystem
	// allows (FAT's 4 GiB). See TooLargeError.
	ErrTooLarge = errors.New("file too large for its filesystem")

	// ErrLeftover: a catalog change was committed, but files it made
	// obsolete could not be removed. See LeftoverError.
	ErrLeftover = errors.New("obsolete files left behind")
)

// BusyError reports that the catalog file stayed locked by another process
// for longer than the open timeout. A backup holds the lock only for the
// few milliseconds of each transaction, so this means another process is
// stuck or holds the file open on purpose.
type BusyError struct {
	Path string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("catalog %s is locked by another thinback process", e.Path)
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// VersionError reports a catalog written with a schema newer than this
// package understands. Reading it could misinterpret records and writing
// it could destroy what the newer version stored, so it is refused.
type VersionError struct {
	Path      string
	Version   uint32 // found in the file
	Supported uint32 // the newest this package knows
}

func (e *VersionError) Error() string {
	return fmt.Sprintf("catalog %s has schema version %d, this thinback supports up to %d: upgrade thinback",
		e.Path, e.Version, e.Supported)
}

// Is makes errors.Is(err, ErrVersion) true.
func (e *VersionError) Is(target error) bool { return target == ErrVersion }

// InvalidError reports a file that is not a thinback catalog. Err is the
// underlying reason (for example bbolt's "invalid database").
type InvalidError struct {
	Path string
	Err  error
}

func (e *InvalidError) Error() string {
	return fmt.Sprintf("%s is not a thinback catalog: %v", e.Path, e.Err)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Unwrap returns the underlying reason.
func (e *InvalidError) Unwrap() error { return e.Err }

// DamagedError reports a catalog file whose bbolt meta pages fail their
// checksums. The catalog is a cache of the delta files: a store's is
// recreated by `thinback catalog rebuild`.
type DamagedError struct {
	Path string
	Err  error
}

func (e *DamagedError) Error() string {
	return fmt.Sprintf("catalog %s is damaged (%v): move it aside and run thinback catalog rebuild to recreate it from the delta files", e.Path, e.Err)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// Unwrap returns bbolt's error.
func (e *DamagedError) Unwrap() error { return e.Err }

// FormatError reports a bbolt file whose format version this thinback's
// bbolt does not know: written by a newer bbolt, or damaged in a way that
// looks like it.
type FormatError struct {
	Path string
	Err  error
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("catalog %s has a bbolt file format this thinback does not read (%v): upgrade thinback, "+
		"or if the file is damaged, move it aside and run thinback catalog rebuild", e.Path, e.Err)
}

// Is makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Unwrap returns bbolt's error.
func (e *FormatError) Unwrap() error { return e.Err }

// RecordError reports a record that does not decode or validate. When it
// comes from reading, errors.Is(err, ErrCorrupt) holds; when it comes from
// a Put, errors.Is(err, ErrInvalidRecord) holds.
type RecordError struct {
	Bucket string // "volumes", "snapshots", "targets"
	Key    string
	Err    error
	write  bool
}

func (e *RecordError) Error() string {
	if e.write {
		return fmt.Sprintf("catalog: invalid %s record %q: %v", singular(e.Bucket), e.Key, e.Err)
	}
	return fmt.Sprintf("catalog: corrupt %s record %q: %v", singular(e.Bucket), e.Key, e.Err)
}

// Is makes errors.Is match ErrCorrupt or ErrInvalidRecord.
func (e *RecordError) Is(target error) bool {
	if e.write {
		return target == ErrInvalidRecord
	}
	return target == ErrCorrupt
}

// Unwrap returns the decoding or validation error.
func (e *RecordError) Unwrap() error { return e.Err }

func singular(bucket string) string { return strings.TrimSuffix(bucket, "s") }

// LockedError reports a volume whose lock is held elsewhere. A cron job
// that finds the previous run still going should exit with a distinct code.
type LockedError struct {
	Volume string // "" for the lock of the store's key slots (LockKeySlots)
	Path   string // the lock file
	PID    int    // the holder's pid as written in the lock file; 0 if unknown
}

func (e *LockedError) Error() string {
	holder := ""
	if e.PID > 0 {
		holder = fmt.Sprintf("pid %d, ", e.PID)
	}
	if e.Volume == "" {
		return fmt.Sprintf("the key slots of the store are being changed by another thinback process (%slock file %s): try again when it is done", holder, e.Path)
	}
	return fmt.Sprintf("volume %q is locked by another thinback process (%slock file %s)", e.Volume, holder, e.Path)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// NoSpaceError reports that the filesystem holding Path is full. Whatever
// was being written has been removed.
type NoSpaceError struct {
	Path string
	Err  error
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("no space left on device writing %s: %v", e.Path, e.Err)
}

// Is makes errors.Is(err, ErrNoSpace) true.
func (e *NoSpaceError) Is(target error) bool { return target == ErrNoSpace }

// Unwrap returns the system error.
func (e *NoSpaceError) Unwrap() error { return e.Err }

// TooLargeError reports that writing Path failed because the file would
// pass the largest size its filesystem allows (EFBIG). FS and Limit are
// set when the filesystem is known: "FAT" and 4 GiB - 1 byte for vfat and
// msdos, the filesystem of most USB sticks and SD cards. Whatever was
// being written has been removed.
type TooLargeError struct {
	Path  string
	FS    string // "FAT", or "" when unknown
	Limit int64  // the filesystem's largest file, 0 when unknown
	Err   error
}

func (e *TooLargeError) Error() string {
	limit := "the largest file size its filesystem allows"
	if e.FS != "" {
		limit = fmt.Sprintf("the %d-byte (4 GiB) file size limit of %s", e.Limit, e.FS)
	}
	return fmt.Sprintf("%s would be larger than %s: put it on a filesystem without that limit "+
		"(exFAT, ext4, XFS), or back up into a store on one (%v)", e.Path, limit, e.Err)
}

// Is makes errors.Is(err, ErrTooLarge) true.
func (e *TooLargeError) Is(target error) bool { return target == ErrTooLarge }

// Unwrap returns the system error.
func (e *TooLargeError) Unwrap() error { return e.Err }

// LeftoverError reports files that a committed change made obsolete but
// that could not be removed. The change itself succeeded; the files are
// orphans that Store.RemoveOrphans removes later.
type LeftoverError struct {
	Paths []string // relative to the store root
	Err   error    // the first removal error
}

func (e *LeftoverError) Error() string {
	return fmt.Sprintf("catalog updated, but obsolete files remain (%s): %v; run orphan cleanup later",
		strings.Join(e.Paths, ", "), e.Err)
}

// Is makes errors.Is(err, ErrLeftover) true.
func (e *LeftoverError) Is(target error) bool { return target == ErrLeftover }

// Unwrap returns the first removal error.
func (e *LeftoverError) Unwrap() error { return e.Err }
