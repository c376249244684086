package s3store

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// Files lists the delta files under volumes/ whose names follow the
// layout, each as one file however many pieces it takes, ordered by
// volume, Seq and Gen: the input of a catalog rebuild. A file whose
// pieces are not all there (an upload that a crash stopped after some
// pieces) is left out.
func (s *Store) Files() ([]catalog.DeltaFile, error) {
	type group struct {
		f     catalog.DeltaFile
		sizes map[int]int64
	}
	groups := map[string]*group{}
	err := s.s3.List(s.ctx, volumesDir, func(oi s3.ObjectInfo) error {
		f, n, ok := parsePiece(oi.Name)
		if !ok {
			return nil
		}
		g := groups[f.Path]
		if g == nil {
			g = &group{f: f, sizes: map[int]int64{}}
			groups[f.Path] = g
		}
		g.sizes[n] = oi.Size
		return nil
	})
	if err != nil {
		return nil, err
	}
	var files []catalog.DeltaFile
	for _, g := range groups {
		if size, ok := s.wholeSize(g.sizes); ok {
			g.f.Size = size
			files = append(files, g.f)
		}
	}
	catalog.SortDeltaFiles(files)
	return files, nil
}

// wholeSize adds up the pieces of one file, if they make a whole: pieces
// 1 to k, all but the last of the store's piece size.
func (s *Store) wholeSize(sizes map[int]int64) (int64, bool) {
	var total int64
	for n := 1; n <= len(sizes); n++ {
		size, ok := sizes[n]
		if !ok || (n < len(sizes) && size != s.meta.PieceSize) {
			return 0, false
		}
		total += size
	}
	return total, len(sizes) > 0
}

// SetRetention records a volume's prune policy in its volume.json and
// the cache. The caller should hold the volume's lock.
func (s *Store) SetRetention(volume string, r catalog.Retention) error {
	var v catalog.Volume
	if err := s.View(func(tx *catalog.Tx) (err error) {
		v, err = tx.Volume(volume)
		return err
	}); err != nil {
		return err
	}
	v.Retention = r
	if err := catalog.ValidateVolume(v); err != nil {
		return err
	}
	info, err := s.putObject(s.ctx, volumeObjectName(volume), volumeObject{Format: volumeFormat, Volume: v})
	if err != nil {
		return err
	}
	return s.cacheUpdate(func(tx *catalog.Tx) error { return tx.PutVolume(&v) }, map[string]string{info.Name: info.ETag}, nil)
}

// Rebuild makes the record objects say what the delta files say: it
// writes the record of each of snaps, removes the records of snapshots
// not among them, writes volume.json for volumes that have none (the
// first of vols of each name), and rebuilds the cache from the records.
// It holds the lock of every volume it touches while it does (and fails
// with catalog.ErrLocked if another process holds one), but cleans up
// nothing: with records gone, every file would look unreferenced.
func (s *Store) Rebuild(vols []catalog.Volume, snaps []catalog.Snapshot) error {
	l, err := s.listRecords(recordsDir)
	if err != nil {
		return err
	}
	scope := map[string]bool{}
	for _, sn := range snaps {
		scope[sn.Volume] = true
	}
	for name := range l.snaps {
		if v, _, _, _ := parseRecordName(name); v != "" {
			scope[v] = true
		}
	}
	var locks []*volLock
	defer func() {
		for _, vl := range locks {
			if err := vl.release(); err != nil {
				s.notify("releasing the lock of volume %s: %v", vl.volume, err)
			}
		}
	}()
	for _, volume := range sortedKeys(scope) {
		s.mu.Lock()
		_, mine := s.locks[volume]
		s.mu.Unlock()
		if mine {
			continue
		}
		vl, err := s.lockVolume(volume)
		if err != nil {
			return fmt.Errorf("catalog rebuild: %w", err)
		}
		locks = append(locks, vl)
	}

	byName := map[string]catalog.Volume{}
	for _, v := range vols {
		if _, ok := byName[v.Name]; !ok {
			byName[v.Name] = v
		}
	}
	cachedVols := map[string]catalog.Volume{}
	if err := s.View(func(tx *catalog.Tx) error {
		all, err := tx.Volumes()
		for _, v := range all {
			cachedVols[v.Name] = v
		}
		return err
	}); err != nil {
		return err
	}
	want := map[string]bool{}
	for _, sn := range snaps {
		v, ok := cachedVols[sn.Volume]
		if !ok {
			if v, ok = byName[sn.Volume]; !ok {
				return fmt.Errorf("catalog rebuild: snapshot %s of volume %q comes without its volume's record", sn.ID, sn.Volume)
			}
			if _, there := l.volumes[volumeObjectName(sn.Volume)]; !there {
				if _, err := s.putObject(s.ctx, volumeObjectName(sn.Volume), volumeObject{Format: volumeFormat, Volume: v}); err != nil {
					return err
				}
				l.volumes[volumeObjectName(sn.Volume)] = s3.ObjectInfo{}
			}
			cachedVols[sn.Volume] = v
		}
		if err := catalog.ValidateSnapshot(sn); err != nil {
			return err
		}
		name := recordName(sn.Volume, sn.Seq, sn.ID)
		want[name] = true
		if _, err := s.putObject(s.ctx, name, recordObject{Format: recordFormat, Volume: v, Snapshot: sn}); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(l.snaps) {
		if !want[name] {
			if err := s.s3.Delete(s.ctx, name); err != nil {
				return err
			}
		}
	}
	// The cache starts afresh from the records just written.
	unlock, err := s.cacheLock()
	if err != nil {
		return err
	}
	for _, f := range []string{s.db, s.sidecarPath()} {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			unlock()
			return fmt.Errorf("cache of store %s: %w", s.loc, err)
		}
	}
	unlock()
	return s.sync("")
}

// CleanTemp has nothing to do: a store on object storage keeps no temp
// files. What interrupted writers leave (multipart uploads, the files
// their journals name) is cleaned up by LockVolume.
func (s *Store) CleanTemp() ([]string, error) { return nil, nil }

// RemoveOrphans cleans up, as LockVolume does, every volume whose lock
// this Store holds, and returns what it removed. Volumes locked by no
// one are left for their next writer: taking their locks here would make
// a backup of one volume collide with another host's backup of another.
func (s *Store) RemoveOrphans() ([]string, error) {
	s.mu.Lock()
	var held []*volLock
	for _, vl := range s.locks {
		held = append(held, vl)
	}
	s.mu.Unlock()
	var removed []string
	var first error
	for _, vl := range held {
		r, err := s.clean(vl)
		removed = append(removed, r...)
		if err != nil && first == nil {
			first = err
		}
	}
	return removed, first
}

// Check lists every inconsistency of the records (as catalog's Check
// does) and of the objects: a snapshot whose file is missing or has
// another size than recorded, records that do not decode, files no
// record references (ErrOrphan; they are kept, and catalog rebuild
// adopts them), journals and multipart uploads of interrupted writers
// that their volume's next writer removes (ErrOrphan too). opts.Verify
// gets the snapshot's file name, for OpenStream. File problems are
// confirmed against the records read again, so a prune on another host
// meanwhile is not reported.
func (s *Store) Check(opts catalog.CheckOptions) ([]error, error) {
	var problems []error
	if err := s.View(func(tx *catalog.Tx) error {
		problems = tx.Check(catalog.CheckOptions{})
		return nil
	}); err != nil {
		return nil, err
	}
	s.mu.Lock()
	for _, name := range sortedKeys(s.problems) {
		problems = append(problems, &catalog.CheckError{Problem: catalog.ErrCorrupt, File: name, Err: s.problems[name]})
	}
	locked := map[string]bool{}
	for v := range s.locks {
		locked[v] = true
	}
	s.mu.Unlock()

	objects := map[string]int64{}
	if err := s.s3.List(s.ctx, volumesDir, func(oi s3.ObjectInfo) error {
		objects[oi.Name] = oi.Size
		return nil
	}); err != nil {
		return nil, err
	}
	fileProblems, err := s.checkFiles(objects, opts.Verify)
	if err != nil {
		return nil, err
	}
	if len(fileProblems) > 0 {
		// Confirm against the records as they are now.
		if err := s.sync(""); err != nil {
			return nil, err
		}
		now := map[string]catalog.Snapshot{}
		refs := map[string]bool{}
		if err := s.View(func(tx *catalog.Tx) error {
			all, err := tx.AllSnapshots()
			for _, sn := range all {
				now[sn.ID] = sn
				for n := 1; n <= pieces(sn.FileSize, s.meta.PieceSize); n++ {
					refs[pieceName(sn.File, n)] = true
				}
			}
			return err
		}); err != nil {
			return nil, err
		}
		for _, p := range fileProblems {
			var ce *catalog.CheckError
			if errors.As(p, &ce) {
				if ce.Problem == catalog.ErrOrphan && refs[ce.File] {
					continue
				}
				if ce.Snapshot != "" {
					if sn, ok := now[ce.Snapshot]; !ok || sn.File != ce.File {
						continue
					}
				}
			}
			problems = append(problems, p)
		}
	}

	l, err := s.listRecords(recordsDir)
	if err != nil {
		return nil, err
	}
	for _, j := range l.journals {
		if v, _, _, _ := parseRecordName(j.Name); !locked[v] {
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrOrphan, Volume: v, File: j.Name,
				Detail: "the journal of an interrupted write: the volume's next writer removes the files it names that no record references"})
		}
	}
	err = s.s3.ListUploads(s.ctx, volumesDir, func(u s3.PendingUpload) error {
		v := ""
		if f, _, ok := parsePiece(u.Name); ok {
			v = f.Volume
		}
		if !locked[v] {
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrOrphan, Volume: v, File: u.Name,
				Detail: fmt.Sprintf("an unfinished upload started %s: the volume's next writer aborts it", u.Initiated.UTC().Format("2006-01-02 15:04:05"))})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return problems, nil
}

// checkFiles compares the cached records with the objects listed.
func (s *Store) checkFiles(objects map[string]int64, verify func(catalog.Snapshot, string) error) ([]error, error) {
	var snaps []catalog.Snapshot
	if err := s.View(func(tx *catalog.Tx) (err error) {
		snaps, err = tx.AllSnapshots()
		return err
	}); err != nil {
		return nil, err
	}
	var problems []error
	refs := map[string]bool{}
	for _, sn := range snaps {
		k := pieces(sn.FileSize, s.meta.PieceSize)
		var missing []string
		var total int64
		for n := 1; n <= k; n++ {
			name := pieceName(sn.File, n)
			refs[name] = true
			size, ok := objects[name]
			if !ok {
				missing = append(missing, name)
			}
			total += size
		}
		switch {
		case len(missing) > 0:
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrFileMissing, Volume: sn.Volume, Snapshot: sn.ID,
				File: sn.File, Detail: "no object " + strings.Join(missing, ", ")})
		case total != sn.FileSize:
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrFileSize, Volume: sn.Volume, Snapshot: sn.ID,
				File: sn.File, Detail: fmt.Sprintf("%d bytes in the store, %d recorded", total, sn.FileSize)})
		case verify != nil:
			if err := verify(sn, sn.File); err != nil {
				problems = append(problems, &catalog.CheckError{Problem: catalog.ErrFileDigest, Volume: sn.Volume, Snapshot: sn.ID,
					File: sn.File, Err: err})
			}
		}
	}
	for _, name := range sortedKeys(objects) {
		if !refs[name] {
			v := ""
			if f, _, ok := parsePiece(name); ok {
				v = f.Volume
			}
			problems = append(problems, &catalog.CheckError{Problem: catalog.ErrOrphan, Volume: v, File: name,
				Detail: "no record references it: it is kept (thinback catalog rebuild adopts it)"})
		}
	}
	return problems, nil
}
