package catalog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// SchemaVersion is the record layout this package reads and writes. It is
// stored in the file; a file with a higher version is refused with
// ErrVersion rather than half understood. Adding an optional JSON field does
// not need a new version (older readers ignore unknown fields); changing
// the meaning of a field or a key does.
const SchemaVersion uint32 = 1

// DefaultTimeout is how long Open waits for another process to release
// the catalog file. Every thinback process keeps the file open only for
// the duration of one transaction, so a longer wait means something is
// stuck; then ErrBusy names the file instead of hanging forever.
const DefaultTimeout = 10 * time.Second

// Bucket and key names. Changing any of them needs a new SchemaVersion.
var (
	bucketMeta      = []byte("meta")
	bucketVolumes   = []byte("volumes")    // volume name -> Volume JSON
	bucketSnapshots = []byte("snapshots")  // snapshot id -> Snapshot JSON
	bucketSeqs      = []byte("seqs")       // volume name -> bucket(seq uint64 BE -> snapshot id)
	bucketLastSeq   = []byte("lastseq")    // volume name -> highest seq ever assigned (uint64 BE)
	bucketTargets   = []byte("targets")    // target key -> Target JSON
	bucketMarks     = []byte("watermarks") // key id "/" volume name -> Watermark JSON
	bucketStoreKeys = []byte("storekeys")  // store location -> StoreKey JSON

	keyVersion = []byte("version") // uint32 BE
)

// allBuckets are created when a file is initialised.
var allBuckets = [][]byte{bucketMeta, bucketVolumes, bucketSnapshots, bucketSeqs, bucketLastSeq, bucketTargets,
	bucketMarks, bucketStoreKeys}

// Options configure Open.
type Options struct {
	// Timeout bounds the wait for another process's lock on the file.
	// Zero means DefaultTimeout; a negative value fails at once.
	Timeout time.Duration

	// ReadOnly opens the file with a shared lock: any number of readers
	// may have it open at once, and writers wait for them. The file must
	// exist.
	ReadOnly bool
}

func (o *Options) boltTimeout() time.Duration {
	switch {
	case o.Timeout == 0:
		return DefaultTimeout
	case o.Timeout < 0:
		// bbolt treats 0 as "wait forever" and gives up after the first
		// failed attempt for any negative value.
		return -1
	default:
		return o.Timeout
	}
}

// DB is an open catalog file. While it is open, the process holds the
// file's lock (exclusive, or shared when read-only): keep it open only as
// long as needed, or use the package-level View and Update, which open the
// file for one transaction.
type DB struct {
	path     string
	bolt     *bolt.DB
	readOnly bool
}

// Open opens the catalog file at path, creating it and its parent
// directories (mode 0700, file mode 0600) unless opts.ReadOnly is set.
//
// It fails with ErrBusy (BusyError) when another process holds the file
// longer than opts.Timeout, ErrInvalid (InvalidError) when the file is not
// a thinback catalog, ErrDamaged (DamagedError) when its pages fail their
// checksums, ErrFormat (FormatError) when bbolt does not know its file
// format, and ErrVersion (VersionError) when its schema is newer than
// SchemaVersion.
func Open(path string, opts *Options) (*DB, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	if !o.ReadOnly {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("catalog: create directory for %s: %w", path, err)
		}
	}
	// bbolt opens the file itself; OpenOwn makes it refuse a symbolic
	// link (or a FIFO, or a hard link to another file) planted where the
	// catalog or the state file should be.
	b, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: o.boltTimeout(), ReadOnly: o.ReadOnly, OpenFile: OpenOwn})
	if err != nil {
		return nil, openError(path, err)
	}
	db := &DB{path: path, bolt: b, readOnly: o.ReadOnly}
	if err := db.init(); err != nil {
		_ = b.Close()
		return nil, err
	}
	return db, nil
}

// openError gives bbolt's open failures the distinct meanings callers
// need: waiting for a lock, a damaged catalog (rebuild it), a file format
// of another bbolt, a file that is not ours, or anything else.
func openError(path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return &BusyError{Path: path}
	case errors.Is(err, ErrNotOwn):
		return fmt.Errorf("catalog: %w", err)
	case errors.Is(err, berrors.ErrChecksum):
		return &DamagedError{Path: path, Err: err}
	case errors.Is(err, berrors.ErrVersionMismatch):
		return &FormatError{Path: path, Err: err}
	case errors.Is(err, berrors.ErrInvalid):
		return &InvalidError{Path: path, Err: err}
	}
	return fmt.Errorf("catalog: open %s: %w", path, err)
}

// init checks the schema version and, for a new writable file, creates
// the buckets.
func (db *DB) init() error {
	var (
		version uint32
		found   bool
		foreign bool
	)
	err := db.bolt.View(func(btx *bolt.Tx) error {
		m := btx.Bucket(bucketMeta)
		if m == nil {
			// A bbolt file with buckets but no meta belongs to another
			// program; writing ours next to them would be wrong.
			return btx.ForEach(func([]byte, *bolt.Bucket) error {
				foreign = true
				return nil
			})
		}
		v := m.Get(keyVersion)
		if len(v) != 4 {
			return &InvalidError{Path: db.path, Err: fmt.Errorf("schema version is %d bytes, want 4", len(v))}
		}
		version, found = binary.BigEndian.Uint32(v), true
		return nil
	})
	if err != nil {
		return err
	}
	switch {
	case found && version == 0:
		return &InvalidError{Path: db.path, Err: errors.New("schema version 0")}
	case found && version > SchemaVersion:
		return &VersionError{Path: db.path, Version: version, Supported: SchemaVersion}
	case !found && foreign:
		return &InvalidError{Path: db.path, Err: errors.New("bbolt file without thinback metadata")}
	case !found && !db.readOnly:
		err := db.bolt.Update(func(btx *bolt.Tx) error {
			for _, name := range allBuckets {
				if _, err := btx.CreateBucketIfNotExists(name); err != nil {
					return err
				}
			}
			var v [4]byte
			binary.BigEndian.PutUint32(v[:], SchemaVersion)
			return btx.Bucket(bucketMeta).Put(keyVersion, v[:])
		})
		if err != nil {
			return fmt.Errorf("catalog: initialise %s: %w", db.path, err)
		}
	}
	// A read-only open of a file that was created but never initialised
	// (a crash right after bbolt created it) reads as an empty catalog.
	return nil
}

// Path returns the file's path.
func (db *DB) Path() string { return db.path }

// Close releases the file and its lock.
func (db *DB) Close() error {
	if err := db.bolt.Close(); err != nil {
		return fmt.Errorf("catalog: close %s: %w", db.path, err)
	}
	return nil
}

// View runs fn in a read-only transaction. The Tx must not be used after
// fn returns.
func (db *DB) View(fn func(*Tx) error) error {
	return db.bolt.View(func(btx *bolt.Tx) error { return fn(&Tx{btx: btx}) })
}

// Update runs fn in a read-write transaction: if fn returns nil the
// transaction is committed (and fsynced) as a whole, otherwise nothing of
// it is written. The Tx must not be used after fn returns.
func (db *DB) Update(fn func(*Tx) error) error {
	if db.readOnly {
		return fmt.Errorf("catalog %s: %w", db.path, ErrReadOnly)
	}
	return db.bolt.Update(func(btx *bolt.Tx) error { return fn(&Tx{btx: btx}) })
}

// View opens the catalog at path read-only, runs fn in one transaction and
// closes the file, so the shared lock is held only while fn runs. A missing
// (or empty) file reads as an empty catalog and is not created: a command
// that only looks never leaves files behind.
func View(path string, opts *Options, fn func(*Tx) error) (err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.ReadOnly = true
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && fi.Mode().IsRegular() && fi.Size() == 0) {
		return fn(&Tx{})
	}
	db, err := Open(path, &o)
	if err != nil {
		return err
	}
	defer closeInto(db, &err)
	return db.View(fn)
}

// closeInto closes db, also while a panic in a closure unwinds (so the
// file lock is never left behind), and keeps the first error.
func closeInto(db *DB, err *error) {
	if cerr := db.Close(); *err == nil {
		*err = cerr
	}
}

// Update opens (creating if needed) the catalog at path, runs fn in one
// read-write transaction and closes the file, so the exclusive lock is held
// only while fn runs.
func Update(path string, opts *Options, fn func(*Tx) error) (err error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.ReadOnly = false
	db, err := Open(path, &o)
	if err != nil {
		return err
	}
	defer closeInto(db, &err)
	return db.Update(fn)
}
