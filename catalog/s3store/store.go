package s3store

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"golang.org/x/sys/unix"
)

// Sizes of the objects a delta file is cut into.
const (
	// DefaultPieceSize is the largest object of a delta file in a store
	// made with the default options: 8192 parts of 16 MiB, well inside
	// S3's 10 000 parts, so the upload never runs out of parts and its
	// memory stays at three 16 MiB buffers whatever the file's size.
	DefaultPieceSize = 128 << 30
	minPieceSize     = 5 << 20
	maxPieceSize     = 5 << 40 // S3's largest object
	defaultPartSize  = 16 << 20
	maxParts         = 10000
)

// DefaultLockTTL is how long a volume's lock stays valid without a
// renewal; a holder renews it every third of that.
const DefaultLockTTL = 10 * time.Minute

// Options tune Open. The zero value opens an existing store with the
// credentials of the environment and the default cache directory.
type Options struct {
	// S3 configures the connection (credentials, region, TLS, part size).
	// A zero PartSize is 16 MiB.
	S3 s3.Options

	// Cache is the directory the local caches of stores live in, one
	// subdirectory per store id; empty means DefaultCacheDir.
	Cache string

	// Create makes the store when the address holds none (thinback init,
	// or the first backup or receive); otherwise that is ErrNotStore.
	Create bool

	// BreakStaleLocks lets LockVolume remove a stale lock (not renewed
	// within its time to live by the server's clock, or of an older
	// thinback of this host whose pid runs no more) and take the volume.
	// A lock that is being renewed is never broken; one of a process of
	// this host that provably no longer runs is broken without it.
	BreakStaleLocks bool

	// LockTTL is the time to live of the volume locks this Store takes;
	// zero means DefaultLockTTL.
	LockTTL time.Duration

	// PieceSize is the largest object of a delta file for a store this
	// Open creates (zero: DefaultPieceSize). An existing store keeps the
	// piece size it was made with.
	PieceSize int64

	// Notify, if set, is told what the store does on its own: uploads
	// and files of interrupted runs removed, a stale lock broken, a
	// damaged record skipped. One line each, without a trailing newline.
	Notify func(msg string)
}

// Store is a thinback store on S3-compatible object storage, with a local
// cache of its catalog. It implements catalog.Repository. Its methods
// are safe for concurrent use, but a Store is meant for one command: it
// takes the context of that command, and Close releases its locks.
type Store struct {
	ctx  context.Context
	s3   *s3.Store
	loc  s3.Location
	opts Options
	meta storeObject
	host string

	cacheDir string // this store's cache
	db       string // the cache's catalog

	mu       sync.Mutex
	locks    map[string]*volLock // volume -> lock held by this Store
	problems map[string]error    // object -> why it was not used (damaged records)
}

// DefaultCacheDir is where the local caches of stores live unless told
// otherwise: $XDG_CACHE_HOME/thinback when XDG_CACHE_HOME is set, else
// /var/cache/thinback for root (cron jobs), else ~/.cache/thinback.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "thinback"), nil
	}
	if os.Geteuid() == 0 {
		return "/var/cache/thinback", nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: set XDG_CACHE_HOME or give one (%w)", err)
	}
	return filepath.Join(home, ".cache", "thinback"), nil
}

// Open opens the store at loc: it checks the bucket and the credentials,
// reads the store object (making it with Options.Create), and brings the
// local cache of the catalog up to date from the record objects. ctx
// bounds every request the Store makes, until Close.
func Open(ctx context.Context, loc s3.Location, opts *Options) (*Store, error) {
	s := &Store{ctx: ctx, loc: loc, locks: make(map[string]*volLock), problems: make(map[string]error)}
	if opts != nil {
		s.opts = *opts
	}
	if s.opts.S3.PartSize == 0 {
		s.opts.S3.PartSize = defaultPartSize
	}
	if s.opts.LockTTL <= 0 {
		s.opts.LockTTL = DefaultLockTTL
	}
	if s.opts.PieceSize == 0 {
		s.opts.PieceSize = DefaultPieceSize
	}
	s.host, _ = os.Hostname()
	var err error
	if s.s3, err = s3.Open(ctx, loc, &s.opts.S3); err != nil {
		return nil, err
	}
	if err := s.readStoreObject(); err != nil {
		return nil, err
	}
	if s.meta.PieceSize > maxParts*s.opts.S3.PartSize {
		return nil, fmt.Errorf("store %s: its delta files are cut into objects of %d bytes, more than %d parts of %d bytes hold: give a larger part size",
			loc, s.meta.PieceSize, maxParts, s.opts.S3.PartSize)
	}
	if err := s.openCache(); err != nil {
		return nil, err
	}
	if err := s.sync(""); err != nil {
		return nil, err
	}
	return s, nil
}

// readStoreObject reads thinback-store.json, or makes it.
func (s *Store) readStoreObject() error {
	for try := 0; ; try++ {
		data, _, err := s.s3.Get(s.ctx, storeObjectName, maxStoreObject)
		if errors.Is(err, s3.ErrNotFound) && s.opts.Create && try == 0 {
			if err := s.createStoreObject(); err != nil && !errors.Is(err, s3.ErrExist) {
				return err
			}
			continue // read what is there now: ours, or a racing writer's
		}
		if errors.Is(err, s3.ErrNotFound) {
			return &NotStoreError{Store: s.loc.String()}
		}
		if err != nil {
			return err
		}
		if err = json.Unmarshal(data, &s.meta); err == nil {
			err = s.meta.validate()
		}
		if err != nil {
			return &DamagedError{Store: s.loc.String(), Object: storeObjectName, Err: err}
		}
		return nil
	}
}

func (s *Store) createStoreObject() error {
	if s.opts.PieceSize < minPieceSize || s.opts.PieceSize > maxPieceSize {
		return fmt.Errorf("store %s: piece size %d is outside %d to %d", s.loc, s.opts.PieceSize, int64(minPieceSize), int64(maxPieceSize))
	}
	o := storeObject{Format: storeFormat, ID: newID(), PieceSize: s.opts.PieceSize, Created: time.Now().UTC()}
	data, err := encode(o)
	if err != nil {
		return err
	}
	// A conditional create: two first writers of one store agree on one
	// id. This is also where a server without conditional writes is found
	// out (s3.ErrNoConditional), before anything else is written.
	_, err = s.s3.Create(s.ctx, storeObjectName, data)
	return err
}

// newID returns a random (version 4) UUID.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// openCache makes the cache directory of this store: <cache>/<store id>.
// The base directory may be a link the user made; the store's own
// directory and its files are thinback's and never followed. Both must
// be the running user's and writable by no one else (see
// privateCacheDir): whoever can write to the cache can change what this
// machine believes the store holds.
func (s *Store) openCache() error {
	base := s.opts.Cache
	if base == "" {
		var err error
		if base, err = DefaultCacheDir(); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(base, 0o700); err != nil {
		return fmt.Errorf("cache of store %s: %w", s.loc, catalog.WriteError(base, err))
	}
	if err := s.privateCacheDir(base, os.Stat); err != nil {
		return err
	}
	s.cacheDir = filepath.Join(base, s.meta.ID)
	if _, err := catalog.OwnDir(s.cacheDir, true); err != nil {
		return fmt.Errorf("cache of store %s: %w", s.loc, catalog.WriteError(s.cacheDir, err))
	}
	if err := s.privateCacheDir(s.cacheDir, os.Lstat); err != nil {
		return err
	}
	s.db = filepath.Join(s.cacheDir, "catalog.db")
	// For people looking into the cache directory: which store it is.
	_ = s.writeCacheFile(filepath.Join(s.cacheDir, "store"), []byte(s.loc.String()+"\n"))
	return nil
}

// privateCacheDir refuses a cache directory that is not the running
// user's, or that group or others may write to, as ssh refuses such a
// key directory. stat is os.Stat for the base directory, which may be a
// link the user made, and os.Lstat for a store's own.
func (s *Store) privateCacheDir(dir string, stat func(string) (os.FileInfo, error)) error {
	fi, err := stat(dir)
	if err != nil {
		return fmt.Errorf("cache of store %s: %w", s.loc, err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return &CacheDirError{Store: s.loc.String(), Path: dir,
			Problem: fmt.Sprintf("is owned by uid %d, not by uid %d that thinback runs as", st.Uid, os.Geteuid()),
			Fix:     fmt.Sprintf("chown it to uid %d and chmod 0700 it", os.Geteuid())}
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return &CacheDirError{Store: s.loc.String(), Path: dir,
			Problem: fmt.Sprintf("is writable by group or others (mode %04o)", fi.Mode().Perm()),
			Fix:     "chmod 0700 " + dir}
	}
	return nil
}

// writeCacheFile replaces the cache file name with data: a temp file
// (never opened through a link, see catalog.OpenOwn), fsynced, renamed
// over the old one, which, a link, would itself be replaced and not
// followed.
func (s *Store) writeCacheFile(name string, data []byte) error {
	tmp := name + ".tmp"
	f, err := catalog.OpenOwn(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return catalog.WriteError(tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return catalog.WriteError(name, err)
	}
	return catalog.SyncDir(filepath.Dir(name))
}

// String returns the store's address.
func (s *Store) String() string { return s.loc.String() }

// ID returns the store's id (the name of its cache directory).
func (s *Store) ID() string { return s.meta.ID }

// CacheDir returns this store's cache directory.
func (s *Store) CacheDir() string { return s.cacheDir }

// CacheDB returns the path of the cache's catalog file.
func (s *Store) CacheDB() string { return s.db }

// LocalFiles returns the cache's catalog: the delta files are in the
// bucket, not on this machine.
func (s *Store) LocalFiles([]catalog.Snapshot) []catalog.LocalFile {
	return []catalog.LocalFile{{What: "catalog cache", Path: s.db}}
}

// View runs fn in a read-only transaction of the cached catalog: the
// records as they were when the Store was opened (and, for a locked
// volume, when it was locked), plus what this Store committed since.
func (s *Store) View(fn func(*catalog.Tx) error) error {
	return catalog.View(s.db, nil, fn)
}

// Close releases the volume locks still held.
func (s *Store) Close() error {
	s.mu.Lock()
	var held []*volLock
	for _, l := range s.locks {
		held = append(held, l)
	}
	s.mu.Unlock()
	var first error
	for _, l := range held {
		if err := l.release(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (s *Store) notify(format string, args ...any) {
	if s.opts.Notify != nil {
		s.opts.Notify(fmt.Sprintf(format, args...))
	}
}

// cacheLock serialises the processes of this machine that update the
// cache of one store: a sync and a commit each read the cache, the
// bucket and the sidecar, and write the cache and the sidecar, as one
// step. It is a flock, released by the kernel if the process dies.
func (s *Store) cacheLock() (unlock func(), err error) {
	name := filepath.Join(s.cacheDir, "sync.lock")
	f, err := catalog.OpenOwn(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cache of store %s: %w", s.loc, catalog.WriteError(name, err))
	}
	deadline := time.Now().Add(catalog.DefaultTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			_ = f.Close()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &catalog.BusyError{Path: name}
			}
			return nil, fmt.Errorf("cache of store %s: lock %s: %w", s.loc, name, err)
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-s.ctx.Done():
			_ = f.Close()
			return nil, s.ctx.Err()
		}
	}
}

// sidecar is what the cache knows about the objects it was made from:
// the ETag of every record and volume object it holds, so a sync fetches
// only what changed. It is written after the catalog it describes, so a
// crash between the two leaves a sidecar that is out of date, which only
// makes the next sync fetch more.
type sidecar struct {
	Store string            `json:"store"`
	ETags map[string]string `json:"etags"`
}

func (s *Store) sidecarPath() string { return filepath.Join(s.cacheDir, "records.json") }

// loadSidecar reads the sidecar; a missing or unreadable one is empty
// (everything is fetched again).
func (s *Store) loadSidecar() sidecar {
	sc := sidecar{ETags: map[string]string{}}
	f, err := catalog.OpenOwn(s.sidecarPath(), os.O_RDONLY, 0)
	if err != nil {
		return sc
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 256<<20))
	if err != nil || json.Unmarshal(data, &sc) != nil || sc.ETags == nil {
		return sidecar{ETags: map[string]string{}}
	}
	return sc
}

// saveSidecar replaces the sidecar: a temp file, fsynced, renamed over
// the old one. The caller holds cacheLock.
func (s *Store) saveSidecar(sc sidecar) error {
	sc.Store = s.loc.String()
	data, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	return s.writeCacheFile(s.sidecarPath(), data)
}

// cacheUpdate runs fn on the cache's catalog and records the ETags of the
// objects it put there (etags) and the names it dropped (drop) in the
// sidecar, under cacheLock.
func (s *Store) cacheUpdate(fn func(*catalog.Tx) error, etags map[string]string, drop []string) error {
	unlock, err := s.cacheLock()
	if err != nil {
		return err
	}
	defer unlock()
	sc := s.loadSidecar()
	if err := catalog.Update(s.db, nil, fn); err != nil {
		return fmt.Errorf("cache of store %s: %w", s.loc, catalog.WriteError(s.db, err))
	}
	for _, n := range drop {
		delete(sc.ETags, n)
	}
	for n, e := range etags {
		sc.ETags[n] = e
	}
	return s.saveSidecar(sc)
}
