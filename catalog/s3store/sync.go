package s3store

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
)

// fetchWorkers is how many record objects a sync reads at once: a cold
// cache of a store with a thousand snapshots is a thousand small GETs.
const fetchWorkers = 16

// listing is what a sync finds under records/ (or one volume's part of it).
type listing struct {
	snaps    map[string]s3.ObjectInfo // snapshot record objects by name
	volumes  map[string]s3.ObjectInfo // volume.json objects by name
	journals []s3.ObjectInfo
}

func (s *Store) listRecords(prefix string) (*listing, error) {
	l := &listing{snaps: map[string]s3.ObjectInfo{}, volumes: map[string]s3.ObjectInfo{}}
	err := s.s3.List(s.ctx, prefix, func(oi s3.ObjectInfo) error {
		switch _, kind, _, _ := parseRecordName(oi.Name); kind {
		case kindSnapshot:
			l.snaps[oi.Name] = oi
		case kindVolume:
			l.volumes[oi.Name] = oi
		case kindJournal:
			l.journals = append(l.journals, oi)
		}
		// Anything else (a newer thinback's objects, a file someone put
		// there) is not ours to read or to remove.
		return nil
	})
	return l, err
}

// sync brings the cache up to date with the record objects: of every
// volume when volume is "", else of that volume only. Records that are
// new or changed since the cache last saw them (by ETag) are fetched and
// checked before they are used; snapshots whose records are gone are
// dropped, and so are volumes left without snapshots. A damaged record is
// skipped and kept in the Store's problems (see Check), and Notify says so.
func (s *Store) sync(volume string) error {
	prefix := recordsDir
	if volume != "" {
		prefix = recordPrefix(volume)
	}
	l, err := s.listRecords(prefix)
	if err != nil {
		return err
	}
	unlock, err := s.cacheLock()
	if err != nil {
		return err
	}
	defer unlock()
	sc := s.loadSidecar()

	inScope := func(v string) bool { return volume == "" || v == volume }
	cached := map[string]catalog.Snapshot{} // by record name
	cachedVols := map[string]catalog.Volume{}
	if err := s.View(func(tx *catalog.Tx) error {
		snaps, err := tx.AllSnapshots()
		if err != nil {
			return err
		}
		for _, sn := range snaps {
			if inScope(sn.Volume) {
				cached[recordName(sn.Volume, sn.Seq, sn.ID)] = sn
			}
		}
		vols, err := tx.Volumes()
		for _, v := range vols {
			if inScope(v.Name) {
				cachedVols[v.Name] = v
			}
		}
		return err
	}); err != nil {
		return fmt.Errorf("cache of store %s: %w (remove %s to start it afresh)", s.loc, err, s.cacheDir)
	}

	var fetch []string
	for name, oi := range l.snaps {
		if _, ok := cached[name]; !ok || sc.ETags[name] != oi.ETag {
			fetch = append(fetch, name)
		}
	}
	for name, oi := range l.volumes {
		if sc.ETags[name] != oi.ETag {
			fetch = append(fetch, name)
		}
	}
	sort.Strings(fetch)
	got, problems, err := s.fetchAll(fetch, l)
	if err != nil {
		return err
	}

	// What the cache is to hold for the scope, before it is written.
	newETags := map[string]string{}
	for name, oi := range l.snaps {
		if _, bad := problems[name]; !bad {
			newETags[name] = oi.ETag
		}
	}
	for name, oi := range l.volumes {
		if _, bad := problems[name]; !bad {
			newETags[name] = oi.ETag
		}
	}
	err = catalog.Update(s.db, nil, func(tx *catalog.Tx) error {
		// Gone first: a snapshot whose record moved (another seq) is
		// dropped before it is put again.
		for name, sn := range cached {
			if _, ok := l.snaps[name]; !ok || problems[name] != nil {
				if err := tx.DeleteSnapshot(sn.ID); err != nil && !errors.Is(err, catalog.ErrNotFound) {
					return err
				}
			}
		}
		// Volume records: volume.json where there is one, else the one
		// travelling with the volume's newest record.
		vols := map[string]catalog.Volume{}
		fromObject := map[string]bool{}
		for _, r := range got {
			if r.record != nil {
				if v, ok := vols[r.record.Volume.Name]; !ok || v.Created.IsZero() {
					vols[r.record.Volume.Name] = r.record.Volume
				}
			}
		}
		for _, r := range got {
			if r.volume != nil {
				vols[r.volume.Name], fromObject[r.volume.Name] = *r.volume, true
			}
		}
		for name, v := range vols {
			if c, ok := cachedVols[name]; ok && !fromObject[name] {
				continue // the cache's record stands until volume.json changes
			} else if ok && c == v {
				continue
			}
			rec := v
			if err := tx.PutVolume(&rec); err != nil {
				return err
			}
		}
		for _, r := range got {
			if r.record == nil {
				continue
			}
			if _, err := tx.Volume(r.record.Snapshot.Volume); errors.Is(err, catalog.ErrNotFound) {
				v := r.record.Volume
				if err := tx.PutVolume(&v); err != nil {
					return err
				}
			}
			sn := r.record.Snapshot
			if old, err := tx.Snapshot(sn.ID); err == nil && (old.Volume != sn.Volume || old.Seq != sn.Seq) {
				// The same id under two names: the bucket holds two
				// records of one snapshot. Keep the first, report the
				// other.
				problems[r.name] = &DamagedError{Store: s.loc.String(), Object: r.name,
					Err: fmt.Errorf("snapshot %s is also recorded as #%d of volume %q", sn.ID, old.Seq, old.Volume)}
				delete(newETags, r.name)
				continue
			}
			if err := tx.PutSnapshot(&sn); err != nil {
				problems[r.name] = &DamagedError{Store: s.loc.String(), Object: r.name, Err: err}
				delete(newETags, r.name)
				continue
			}
		}
		// A volume without snapshots is not in the store (a first backup
		// that failed leaves at most its volume.json).
		all, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range all {
			if !inScope(v.Name) {
				continue
			}
			snaps, err := tx.Snapshots(v.Name)
			if err != nil {
				return err
			}
			if len(snaps) == 0 {
				if err := tx.DeleteVolume(v.Name); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cache of store %s: %w (remove %s to start it afresh)", s.loc, catalog.WriteError(s.db, err), s.cacheDir)
	}
	for name := range sc.ETags {
		if strings.HasPrefix(name, prefix) {
			delete(sc.ETags, name)
		}
	}
	for name, e := range newETags {
		sc.ETags[name] = e
	}
	if err := s.saveSidecar(sc); err != nil {
		return fmt.Errorf("cache of store %s: %w", s.loc, err)
	}

	s.mu.Lock()
	for name := range s.problems {
		if strings.HasPrefix(name, prefix) {
			delete(s.problems, name)
		}
	}
	for name, p := range problems {
		s.problems[name] = p
	}
	s.mu.Unlock()
	for _, name := range sortedKeys(problems) {
		s.notify("skipping %v (thinback verify lists it; thinback catalog rebuild recreates records from the delta files)", problems[name])
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fetched is one record or volume object read by a sync.
type fetched struct {
	name   string
	record *recordObject
	volume *catalog.Volume
}

// fetchAll reads the named objects, fetchWorkers at a time, and checks
// each. An object that vanished since the listing is left out; one that
// is damaged is a problem, so one bad object never keeps a command from
// the rest of the store. A request that fails (the server, the network,
// after the client's retries) fails the sync: a cache missing records
// it could have had would make a backup choose a worse base.
func (s *Store) fetchAll(names []string, l *listing) ([]fetched, map[string]error, error) {
	var (
		mu       sync.Mutex
		got      []fetched
		problems = map[string]error{}
		failed   error
		wg       sync.WaitGroup
		next     = make(chan string)
	)
	for range min(fetchWorkers, len(names)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range next {
				f, err := s.fetch(name)
				mu.Lock()
				switch {
				case errors.Is(err, s3.ErrNotFound):
					delete(l.snaps, name)
					delete(l.volumes, name)
				case errors.Is(err, catalog.ErrCorrupt):
					problems[name] = err
				case err != nil:
					if failed == nil {
						failed = err
					}
				default:
					got = append(got, f)
				}
				mu.Unlock()
			}
		}()
	}
	for _, n := range names {
		next <- n
	}
	close(next)
	wg.Wait()
	sort.Slice(got, func(i, j int) bool { return got[i].name < got[j].name })
	return got, problems, failed
}

func (s *Store) fetch(name string) (fetched, error) {
	data, _, err := s.s3.Get(s.ctx, name, maxRecordObject)
	if err != nil {
		if errors.Is(err, s3.ErrTooLarge) {
			return fetched{}, &DamagedError{Store: s.loc.String(), Object: name, Err: err}
		}
		return fetched{}, err
	}
	f := fetched{name: name}
	switch _, kind, _, _ := parseRecordName(name); kind {
	case kindVolume:
		v, err := decodeVolume(name, data)
		if err != nil {
			return f, &DamagedError{Store: s.loc.String(), Object: name, Err: err}
		}
		f.volume = &v
	default:
		r, err := decodeRecord(name, data)
		if err != nil {
			return f, &DamagedError{Store: s.loc.String(), Object: name, Err: err}
		}
		f.record = &r
	}
	return f, nil
}
