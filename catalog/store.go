package catalog

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Store is a backup store directory:
//
//	catalog.db                              the catalog (bbolt)
//	volumes/<DirName(volume)>/<seq>-<id>.tbk delta files (<seq> is %08d)
//	volumes/<DirName(volume)>/<seq>-<id>.<n>.tbk  the n-th rewrite by Replace
//	tmp/                                    files being written
//	locks/<DirName(volume)>.lock            per-volume locks
//
// A Store holds no file open between calls: each View or Update opens the
// catalog for one transaction, so a backup that runs for an hour does not
// keep `thinback list` out. A Store is safe for concurrent use.
type Store struct {
	dir  string // absolute
	opts Options
	mu   sync.RWMutex // serialises this process's own transactions
}

// OpenStore opens the store at dir, creating the directory, its layout and
// an empty catalog as needed: the first backup creates the store.
func OpenStore(dir string) (*Store, error) { return OpenStoreOptions(dir, nil) }

// OpenStoreOptions is OpenStore with options for the catalog (the lock
// timeout; ReadOnly is ignored, the store decides per transaction).
func OpenStoreOptions(dir string, opts *Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("catalog: store %s: %w", dir, err)
	}
	s := &Store{dir: abs}
	if opts != nil {
		s.opts = *opts
	}
	s.opts.ReadOnly = false
	_, statErr := os.Lstat(s.DBPath())
	created, err := s.create()
	if errors.Is(err, unix.EROFS) && statErr == nil {
		// A store on read-only media (a backup disk mounted ro for a
		// restore) can still be read; writes fail when attempted.
		if verr := s.View(func(*Tx) error { return nil }); verr != nil {
			return nil, verr
		}
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	if created || statErr != nil {
		if err := SyncDir(abs); err != nil {
			return nil, fmt.Errorf("catalog: create store: %w", err)
		}
	}
	return s, nil
}

// create makes the layout and the catalog, or checks that an existing
// catalog is ours and not from a newer thinback.
func (s *Store) create() (created bool, err error) {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return false, noSpace(s.dir, fmt.Errorf("catalog: create store: %w", err))
	}
	// The root is the user's to name (it may be a link to a backup disk);
	// what is inside it is thinback's own and never followed.
	for _, sub := range []string{"volumes", "tmp", "locks"} {
		made, err := OwnDir(filepath.Join(s.dir, sub), true)
		if err != nil {
			return created, noSpace(s.dir, fmt.Errorf("catalog: create store: %w", err))
		}
		created = created || made
	}
	if err := s.Update(func(*Tx) error { return nil }); err != nil {
		return created, noSpace(s.DBPath(), err)
	}
	return created, nil
}

// Dir returns the store's absolute root directory.
func (s *Store) Dir() string { return s.dir }

// DBPath returns the path of the store's catalog file.
func (s *Store) DBPath() string { return filepath.Join(s.dir, "catalog.db") }

// Path turns a path relative to the store root (Snapshot.File, or what
// Orphans and CleanTemp return) into an absolute one.
func (s *Store) Path(rel string) string { return filepath.Join(s.dir, filepath.FromSlash(rel)) }

func (s *Store) tmpDir() string     { return filepath.Join(s.dir, "tmp") }
func (s *Store) volumesDir() string { return filepath.Join(s.dir, "volumes") }

// View runs fn in a read-only transaction on the store's catalog.
func (s *Store) View(fn func(*Tx) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return View(s.DBPath(), &s.opts, fn)
}

// Update runs fn in a read-write transaction on the store's catalog.
// Changing snapshot records directly leaves their files alone; Commit,
// Replace and Remove keep files and records in step.
func (s *Store) Update(fn func(*Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Update(s.DBPath(), &s.opts, fn)
}

// fileName is the store-relative name of a delta file: generation 0 is
// the name Commit gives, generation n the n-th rewrite by Replace. The
// names of one snapshot differ by generation, so a rewrite never replaces
// the file the catalog points at.
func fileName(volume string, seq uint64, id string, gen int) string {
	name := fmt.Sprintf("%08d-%s", seq, id)
	if gen > 0 {
		name += "." + strconv.Itoa(gen)
	}
	return path.Join("volumes", DirName(volume), name+".tbk")
}

var deltaName = regexp.MustCompile(`^([0-9]{8,20})-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(?:\.([1-9][0-9]{0,8}))?\.tbk$`)

// parseFileName parses the base name of a delta file.
func parseFileName(base string) (seq uint64, id string, gen int, ok bool) {
	m := deltaName.FindStringSubmatch(base)
	if m == nil {
		return 0, "", 0, false
	}
	seq, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil || seq == 0 {
		return 0, "", 0, false
	}
	if m[3] != "" {
		gen, _ = strconv.Atoi(m[3])
	}
	return seq, m[2], gen, true
}

// DeltaFile is a delta file found in the store by Files.
type DeltaFile struct {
	Path   string // relative to the store root, '/'-separated
	Volume string // decoded from the directory name
	Seq    uint64
	ID     string
	Gen    int // 0 as written by Commit, n after the n-th Replace
	Size   int64
}

// Files lists the delta files under volumes/ whose directory and file
// names follow the store layout, ordered by volume, Seq and Gen. It is the
// input of a catalog rebuild: the caller reads each file's header and
// records it (tx.ResetSnapshots, then PutVolume/PutSnapshot with File set
// to Path). When a crash left several generations of one snapshot, the
// highest Gen is the newest; the others are orphans once it is recorded.
// Files with other names are not listed (Orphans lists them).
func (s *Store) Files() ([]DeltaFile, error) {
	dirs, err := os.ReadDir(s.volumesDir())
	if err != nil {
		return nil, fmt.Errorf("catalog: list delta files: %w", err)
	}
	var files []DeltaFile
	for _, d := range dirs {
		if !d.IsDir() {
			continue
		}
		volume, err := ParseDirName(d.Name())
		if err != nil {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(s.volumesDir(), d.Name()))
		if err != nil {
			return nil, fmt.Errorf("catalog: list delta files: %w", err)
		}
		for _, e := range entries {
			seq, id, gen, ok := parseFileName(e.Name())
			if !ok || !e.Type().IsRegular() {
				continue
			}
			info, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			if err != nil {
				return nil, fmt.Errorf("catalog: list delta files: %w", err)
			}
			files = append(files, DeltaFile{
				Path: path.Join("volumes", d.Name(), e.Name()), Volume: volume,
				Seq: seq, ID: id, Gen: gen, Size: info.Size(),
			})
		}
	}
	SortDeltaFiles(files)
	return files, nil
}

// SortDeltaFiles puts files in the order every store lists them: by
// volume, then sequence number, snapshot ID and generation.
func SortDeltaFiles(files []DeltaFile) {
	sort.Slice(files, func(i, j int) bool {
		a, b := &files[i], &files[j]
		if a.Volume != b.Volume {
			return a.Volume < b.Volume
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Gen < b.Gen
	})
}

// listVolumeFiles returns every non-directory entry under volumes/,
// store-relative.
func (s *Store) listVolumeFiles() ([]string, error) {
	var files []string
	err := filepath.WalkDir(s.volumesDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p != s.volumesDir() {
				return nil // removed meanwhile
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(s.dir, p)
		if err != nil {
			return err
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("catalog: list %s: %w", s.volumesDir(), err)
	}
	return files, nil
}

// referencedFiles returns every Snapshot.File in the catalog. It fails on
// an unreadable snapshot record: its file is unknown, so no file can be
// proven unreferenced.
func referencedFiles(tx *Tx) (map[string]bool, error) {
	snaps, err := tx.AllSnapshots()
	if err != nil {
		return nil, err
	}
	refs := make(map[string]bool, len(snaps))
	for _, sn := range snaps {
		refs[sn.File] = true
	}
	return refs, nil
}

// Orphans lists the files under volumes/ that no snapshot references,
// store-relative: what a crash between writing a file and recording it (or
// between recording a change and removing the old files) leaves behind.
// A file that a concurrent Commit has renamed but not yet recorded is
// listed too; RemoveOrphans takes the volume locks to avoid that.
func (s *Store) Orphans() ([]string, error) {
	// Files first, then the catalog: a file recorded in between is seen
	// as referenced, never the other way round.
	files, err := s.listVolumeFiles()
	if err != nil {
		return nil, err
	}
	var refs map[string]bool
	if err := s.View(func(tx *Tx) (err error) {
		refs, err = referencedFiles(tx)
		return err
	}); err != nil {
		return nil, err
	}
	var orphans []string
	for _, f := range files {
		if !refs[f] {
			orphans = append(orphans, f)
		}
	}
	return orphans, nil
}

// RemoveOrphans removes the files Orphans lists and returns them. It only
// touches a volume's directory while holding that volume's lock (taking it
// if this process does not hold it already), so it never removes the file
// of a backup that is between its rename and its catalog commit; volumes
// locked by other processes are skipped until the next run. Do not call it
// while this process commits to a volume it has locked.
func (s *Store) RemoveOrphans() ([]string, error) {
	dirs, err := os.ReadDir(s.volumesDir())
	if err != nil {
		return nil, fmt.Errorf("catalog: remove orphans: %w", err)
	}
	allowed := make(map[string]bool)
	for _, d := range dirs {
		volume, err := ParseDirName(d.Name())
		if err != nil {
			// Not a directory Commit writes to: no writer to wait for.
			allowed[d.Name()] = true
			continue
		}
		if lockHeld(s.lockPath(volume)) {
			allowed[d.Name()] = true
			continue
		}
		unlock, err := s.LockVolume(volume)
		if errors.Is(err, ErrLocked) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer func() { _ = unlock() }()
		allowed[d.Name()] = true
	}
	// Listed only now that the locks are held, so a file recorded by a
	// writer that finished before we locked is seen as referenced.
	orphans, err := s.Orphans()
	if err != nil {
		return nil, err
	}
	var removed []string
	synced := make(map[string]bool)
	var firstErr error
	for _, rel := range orphans {
		top := strings.SplitN(strings.TrimPrefix(rel, "volumes/"), "/", 2)[0]
		if !allowed[top] {
			continue
		}
		if err := os.Remove(s.Path(rel)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			if firstErr == nil {
				firstErr = fmt.Errorf("catalog: remove orphan: %w", err)
			}
			continue
		}
		removed = append(removed, rel)
		synced[filepath.Dir(s.Path(rel))] = false
	}
	for dir := range synced {
		if err := SyncDir(dir); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	return removed, firstErr
}

// Remove deletes a snapshot of volume: first its record, in one
// transaction, then its file, so a crash in between leaves an orphan file
// rather than a record without a file. A snapshot that is the parent of
// another is refused (ErrInUse): merge it into its child with Replace.
func (s *Store) Remove(volume, id string) error {
	var file string
	err := s.Update(func(tx *Tx) error {
		sn, err := tx.Snapshot(id)
		if err != nil {
			return err
		}
		if sn.Volume != volume {
			return fmt.Errorf("catalog: snapshot %s belongs to volume %q, not %q: %w", id, sn.Volume, volume, ErrNotFound)
		}
		kids, err := tx.Children(id)
		if err != nil {
			return err
		}
		if len(kids) > 0 {
			return fmt.Errorf("catalog: snapshot %s of volume %q is the parent of %s: %w",
				id, volume, kids[0].ID, ErrInUse)
		}
		file = sn.File
		return tx.DeleteSnapshot(id)
	})
	if err != nil {
		return noSpace(s.DBPath(), err)
	}
	at("remove:recorded")
	return s.removeFiles([]string{file})
}

// removeFiles removes files the catalog no longer references and makes the
// removal durable; what cannot be removed is reported as a LeftoverError.
func (s *Store) removeFiles(rels []string) error {
	var (
		left     []string
		firstErr error
		dirs     = make(map[string]bool)
	)
	for _, rel := range rels {
		at("remove:file")
		p := s.Path(rel)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			left = append(left, rel)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		dirs[filepath.Dir(p)] = true
	}
	for dir := range dirs {
		if err := SyncDir(dir); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		return &LeftoverError{Paths: left, Err: firstErr}
	}
	return nil
}
