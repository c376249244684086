package catalog

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// The inconsistencies Check reports, each inside a CheckError. Compare with
// errors.Is. (An unreadable record is reported with ErrCorrupt.)
var (
	ErrIndex           = errors.New("seq index does not match the snapshot records")
	ErrUnknownVolume   = errors.New("snapshot of a volume that is not in the catalog")
	ErrMissingParent   = errors.New("parent snapshot is missing")
	ErrParentVolume    = errors.New("parent snapshot belongs to another volume")
	ErrParentOrder     = errors.New("parent snapshot is not older than its child")
	ErrParentSize      = errors.New("incremental's parent size is not its parent's volume size")
	ErrCycle           = errors.New("snapshot chain loops")
	ErrBrokenChain     = errors.New("snapshot chain does not end in a full")
	ErrDuplicateSeq    = errors.New("snapshots share a seq")
	ErrDuplicateFile   = errors.New("snapshots share a file")
	ErrNoDigest        = errors.New("file digest is not recorded")
	ErrFileMissing     = errors.New("delta file is missing")
	ErrFileSize        = errors.New("delta file size differs from the catalog")
	ErrFileDigest      = errors.New("delta file does not verify")
	ErrOrphan          = errors.New("delta file is not referenced by the catalog")
	ErrUnknownSnapshot = errors.New("target holds a snapshot that is not in the catalog")
	ErrTargetVolume    = errors.New("target's snapshot belongs to another volume")
)

// CheckError is one inconsistency found by Check, naming what it concerns.
type CheckError struct {
	Problem  error  // one of the Err* values above, or ErrCorrupt
	Volume   string // the volume concerned, if any
	Snapshot string // the snapshot ID concerned, if any
	Target   string // the target key concerned, if any
	File     string // store-relative file concerned, if any
	Detail   string // what exactly is wrong, for people
	Err      error  // an underlying error (a stat or Verify failure), if any
}

func (e *CheckError) Error() string {
	var subject []string
	if e.Volume != "" {
		subject = append(subject, fmt.Sprintf("volume %q", e.Volume))
	}
	if e.Snapshot != "" {
		subject = append(subject, "snapshot "+e.Snapshot)
	}
	if e.Target != "" {
		subject = append(subject, fmt.Sprintf("target %q", e.Target))
	}
	if e.File != "" {
		subject = append(subject, "file "+e.File)
	}
	msg := "catalog: " + strings.Join(subject, " ")
	if len(subject) > 0 {
		msg += ": "
	}
	msg += e.Problem.Error()
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap lets errors.Is match both the problem and the underlying error.
func (e *CheckError) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Problem, e.Err}
	}
	return []error{e.Problem}
}

// CheckOptions select what Check looks at beyond the records.
type CheckOptions struct {
	// Dir is the store root. When set, Check also checks the files: each
	// recorded file exists with its recorded size, and every file under
	// volumes/ is referenced. Store.Check sets it.
	Dir string

	// Verify, when set, is called for every recorded file that exists
	// with the recorded size, with its absolute path; an error it returns
	// is reported as ErrFileDigest. The catalog does not parse delta
	// files: this is where the caller verifies contents and digests.
	Verify func(snap Snapshot, path string) error
}

// Check returns every inconsistency of the catalog, each a *CheckError:
// unreadable records, a seq index out of step with the records, snapshots
// of unknown volumes, missing parents, parents in another volume or not
// older than their child, loops, chains that therefore do not end in a
// full, shared Seqs or files, unrecorded digests, and targets holding
// unknown snapshots of known volumes; with opts.Dir, also missing files,
// files of the wrong size and unreferenced files. Several fulls in one
// volume are fine. An empty result means consistent.
//
// Check runs inside the transaction. On a store, prefer Store.Check, which
// looks at the files (and runs Verify) outside the transaction.
func (tx *Tx) Check(opts CheckOptions) []error {
	st := tx.loadCheckState()
	st.checkRecords()
	if opts.Dir != "" {
		st.problems = append(st.problems, checkFiles(opts.Dir, st, opts.Verify)...)
	}
	return st.problems
}

// Check checks the store: Tx.Check's record checks in a read transaction,
// then the files (existence, size, orphans, opts.Verify) without holding
// the catalog, so a long Verify does not block backups. File problems are
// confirmed against a fresh read of the catalog, so a snapshot pruned or
// committed meanwhile is not reported. opts.Dir is ignored. err is set
// only when the check could not run.
func (s *Store) Check(opts CheckOptions) (problems []error, err error) {
	var st *checkState
	if err := s.View(func(tx *Tx) error {
		st = tx.loadCheckState()
		return nil
	}); err != nil {
		return nil, err
	}
	st.checkRecords()
	fileProblems := checkFiles(s.dir, st, opts.Verify)
	if len(fileProblems) == 0 {
		return st.problems, nil
	}
	var now *checkState
	if err := s.View(func(tx *Tx) error {
		now = tx.loadCheckState()
		return nil
	}); err != nil {
		return nil, err
	}
	refs := make(map[string]bool)
	for _, sn := range now.snaps {
		refs[sn.File] = true
	}
	for _, p := range fileProblems {
		var ce *CheckError
		if !errors.As(p, &ce) {
			st.problems = append(st.problems, p)
			continue
		}
		if ce.Problem == ErrOrphan {
			if _, err := os.Lstat(s.Path(ce.File)); err != nil || refs[ce.File] {
				continue // removed or recorded meanwhile
			}
		} else if ce.Snapshot != "" {
			if sn, ok := now.snaps[ce.Snapshot]; !ok || sn.File != st.snaps[ce.Snapshot].File {
				continue // pruned or rewritten meanwhile
			}
		}
		st.problems = append(st.problems, p)
	}
	return st.problems, nil
}

// checkState is the catalog as read for Check: the records that decode,
// plus the problems found while reading.
type checkState struct {
	volumes  map[string]Volume
	snaps    map[string]Snapshot
	order    []string // snapshot IDs by volume, Seq, ID
	targets  []Target
	problems []error
}

func (st *checkState) add(e *CheckError) { st.problems = append(st.problems, e) }

func (tx *Tx) loadCheckState() *checkState {
	st := &checkState{volumes: make(map[string]Volume), snaps: make(map[string]Snapshot)}
	corrupt := make(map[string]bool)
	if b := tx.bucket(bucketVolumes); b != nil {
		_ = b.ForEach(func(k, data []byte) error {
			v, err := decode[Volume](bucketVolumes, k, data)
			if err != nil {
				st.add(&CheckError{Problem: ErrCorrupt, Volume: string(k), Err: err})
				return nil
			}
			st.volumes[v.Name] = v
			return nil
		})
	}
	if b := tx.bucket(bucketSnapshots); b != nil {
		_ = b.ForEach(func(k, data []byte) error {
			sn, err := decode[Snapshot](bucketSnapshots, k, data)
			if err != nil {
				corrupt[string(k)] = true
				st.add(&CheckError{Problem: ErrCorrupt, Snapshot: string(k), Err: err})
				return nil
			}
			st.snaps[sn.ID] = sn
			st.order = append(st.order, sn.ID)
			return nil
		})
	}
	sort.Slice(st.order, func(i, j int) bool {
		a, b := st.snaps[st.order[i]], st.snaps[st.order[j]]
		if a.Volume != b.Volume {
			return a.Volume < b.Volume
		}
		if a.Seq != b.Seq {
			return a.Seq < b.Seq
		}
		return a.ID < b.ID
	})
	if b := tx.bucket(bucketTargets); b != nil {
		_ = b.ForEach(func(k, data []byte) error {
			t, err := decode[Target](bucketTargets, k, data)
			if err != nil {
				st.add(&CheckError{Problem: ErrCorrupt, Target: string(k), Err: err})
				return nil
			}
			st.targets = append(st.targets, t)
			return nil
		})
	}
	// The host's watermarks and store keys (a state file's): each must
	// decode; they name no record of the same file.
	if b := tx.bucket(bucketMarks); b != nil {
		_ = b.ForEach(func(k, data []byte) error {
			if _, err := decode[Watermark](bucketMarks, k, data); err != nil {
				st.add(&CheckError{Problem: ErrCorrupt, Detail: fmt.Sprintf("watermark %q", k), Err: err})
			}
			return nil
		})
	}
	if b := tx.bucket(bucketStoreKeys); b != nil {
		_ = b.ForEach(func(k, data []byte) error {
			if _, err := decode[StoreKey](bucketStoreKeys, k, data); err != nil {
				st.add(&CheckError{Problem: ErrCorrupt, Detail: fmt.Sprintf("store key %q", k), Err: err})
			}
			return nil
		})
	}
	st.checkIndex(tx, corrupt)
	return st
}

// checkIndex compares the per-volume seq index with the records.
func (st *checkState) checkIndex(tx *Tx, corrupt map[string]bool) {
	indexed := make(map[string]bool)
	if seqs := tx.bucket(bucketSeqs); seqs != nil {
		_ = seqs.ForEach(func(vol, v []byte) error {
			volume := string(vol)
			sb := seqs.Bucket(vol)
			if sb == nil {
				st.add(&CheckError{Problem: ErrIndex, Volume: volume, Detail: "index entry is not a bucket"})
				return nil
			}
			return sb.ForEach(func(k, idb []byte) error {
				id := string(idb)
				if len(k) != 8 {
					st.add(&CheckError{Problem: ErrIndex, Volume: volume, Detail: fmt.Sprintf("key %x is not a seq", k)})
					return nil
				}
				seq := seqOf(k)
				sn, ok := st.snaps[id]
				switch {
				case !ok && corrupt[id]:
					// Reported as corrupt already.
				case !ok:
					st.add(&CheckError{Problem: ErrIndex, Volume: volume, Snapshot: id,
						Detail: fmt.Sprintf("seq %d names a snapshot that does not exist", seq)})
				case sn.Volume != volume || sn.Seq != seq:
					st.add(&CheckError{Problem: ErrIndex, Volume: volume, Snapshot: id,
						Detail: fmt.Sprintf("indexed as seq %d of volume %q, record says seq %d of volume %q",
							seq, volume, sn.Seq, sn.Volume)})
				default:
					indexed[id] = true
				}
				return nil
			})
		})
	}
	for _, id := range st.order {
		if !indexed[id] {
			sn := st.snaps[id]
			st.add(&CheckError{Problem: ErrIndex, Volume: sn.Volume, Snapshot: id,
				Detail: fmt.Sprintf("seq %d is not in the index", sn.Seq)})
		}
	}
}

// checkRecords checks what the records say about each other.
func (st *checkState) checkRecords() {
	type volSeq struct {
		volume string
		seq    uint64
	}
	bySeq := make(map[volSeq][]string)
	byFile := make(map[string][]string)
	for _, id := range st.order {
		sn := st.snaps[id]
		if _, ok := st.volumes[sn.Volume]; !ok {
			st.add(&CheckError{Problem: ErrUnknownVolume, Volume: sn.Volume, Snapshot: id})
		}
		if sn.FileDigest == "" {
			st.add(&CheckError{Problem: ErrNoDigest, Volume: sn.Volume, Snapshot: id, File: sn.File})
		}
		if sn.Parent != "" {
			p, ok := st.snaps[sn.Parent]
			switch {
			case !ok:
				st.add(&CheckError{Problem: ErrMissingParent, Volume: sn.Volume, Snapshot: id,
					Detail: "parent " + sn.Parent})
			case p.Volume != sn.Volume:
				st.add(&CheckError{Problem: ErrParentVolume, Volume: sn.Volume, Snapshot: id,
					Detail: fmt.Sprintf("parent %s belongs to volume %q", p.ID, p.Volume)})
			case p.Seq >= sn.Seq:
				st.add(&CheckError{Problem: ErrParentOrder, Volume: sn.Volume, Snapshot: id,
					Detail: fmt.Sprintf("parent %s has seq %d, the snapshot %d", p.ID, p.Seq, sn.Seq)})
			case sn.ParentSize != 0 && sn.ParentSize != p.VolumeSize:
				st.add(&CheckError{Problem: ErrParentSize, Volume: sn.Volume, Snapshot: id,
					Detail: parentSizeDetail(sn.ParentSize, p)})
			}
		}
		k := volSeq{sn.Volume, sn.Seq}
		bySeq[k] = append(bySeq[k], id)
		byFile[sn.File] = append(byFile[sn.File], id)
	}
	for _, id := range st.order {
		sn := st.snaps[id]
		if ids := bySeq[volSeq{sn.Volume, sn.Seq}]; len(ids) > 1 && ids[0] == id {
			st.add(&CheckError{Problem: ErrDuplicateSeq, Volume: sn.Volume, Snapshot: id,
				Detail: fmt.Sprintf("seq %d is used by %s", sn.Seq, strings.Join(ids, ", "))})
		}
		if ids := byFile[sn.File]; len(ids) > 1 && ids[0] == id {
			st.add(&CheckError{Problem: ErrDuplicateFile, Volume: sn.Volume, Snapshot: id, File: sn.File,
				Detail: "used by " + strings.Join(ids, ", ")})
		}
	}
	st.checkChains()
	for _, t := range st.targets {
		if t.Snapshot == "" {
			continue
		}
		sn, ok := st.snaps[t.Snapshot]
		_, known := st.volumes[t.Volume]
		switch {
		case !ok && known:
			st.add(&CheckError{Problem: ErrUnknownSnapshot, Volume: t.Volume, Snapshot: t.Snapshot, Target: t.Key})
		case ok && t.Volume != "" && sn.Volume != t.Volume:
			st.add(&CheckError{Problem: ErrTargetVolume, Volume: t.Volume, Snapshot: t.Snapshot, Target: t.Key,
				Detail: fmt.Sprintf("the snapshot belongs to volume %q", sn.Volume)})
		}
	}
}

// parentSizeDetail names both sizes of an ErrParentSize.
func parentSizeDetail(parentSize int64, p Snapshot) string {
	return fmt.Sprintf("it was made from a volume of %d bytes, but its parent %s (#%d) is %d bytes: "+
		"restoring it would leave stale data", parentSize, p.ID, p.Seq, p.VolumeSize)
}

// checkChains follows each snapshot's parents down to a full. A snapshot
// whose own link is bad has been reported above; a snapshot whose chain
// passes through a bad link further down is reported as ErrBrokenChain, so
// every snapshot that cannot be restored is named. Each loop is reported
// once, on its smallest member.
func (st *checkState) checkChains() {
	const (
		unknown = iota
		ok
		broken
	)
	status := make(map[string]int)
	breakAt := make(map[string]string) // broken snapshot -> where its chain breaks
	for _, start := range st.order {
		var path []string
		onPath := make(map[string]int)
		cur := start
		result, where := ok, ""
		for {
			if s := status[cur]; s != unknown {
				result, where = s, breakAt[cur]
				break
			}
			if i, seen := onPath[cur]; seen {
				loop := append([]string(nil), path[i:]...)
				sort.Strings(loop)
				sn := st.snaps[loop[0]]
				st.add(&CheckError{Problem: ErrCycle, Volume: sn.Volume, Snapshot: loop[0],
					Detail: "loop through " + strings.Join(loop, ", ")})
				for _, id := range loop {
					status[id], breakAt[id] = broken, id
				}
				path = path[:i]
				result, where = broken, cur
				break
			}
			onPath[cur] = len(path)
			path = append(path, cur)
			sn := st.snaps[cur]
			if sn.Parent == "" {
				result = ok
				break
			}
			p, found := st.snaps[sn.Parent]
			if !found || p.Volume != sn.Volume {
				result, where = broken, cur
				break
			}
			cur = sn.Parent
		}
		for _, id := range path {
			status[id], breakAt[id] = result, where
			if result == broken && id != where {
				sn := st.snaps[id]
				st.add(&CheckError{Problem: ErrBrokenChain, Volume: sn.Volume, Snapshot: id,
					Detail: "the chain breaks at " + where})
			}
		}
	}
}

// checkFiles checks the recorded files under dir and looks for files no
// record references.
func checkFiles(dir string, st *checkState, verify func(Snapshot, string) error) []error {
	var problems []error
	refs := make(map[string]bool, len(st.snaps))
	for _, id := range st.order {
		sn := st.snaps[id]
		refs[sn.File] = true
		p := filepath.Join(dir, filepath.FromSlash(sn.File))
		// Lstat: a link planted in place of a delta file is not the file
		// the catalog recorded, whatever it points at.
		fi, err := os.Lstat(p)
		switch {
		case err != nil:
			problems = append(problems, &CheckError{Problem: ErrFileMissing, Volume: sn.Volume, Snapshot: id,
				File: sn.File, Err: err})
		case !fi.Mode().IsRegular():
			problems = append(problems, &CheckError{Problem: ErrFileMissing, Volume: sn.Volume, Snapshot: id,
				File: sn.File, Detail: "not a regular file but " + describeMode(fi.Mode())})
		case fi.Size() != sn.FileSize:
			problems = append(problems, &CheckError{Problem: ErrFileSize, Volume: sn.Volume, Snapshot: id,
				File: sn.File, Detail: fmt.Sprintf("%d bytes on disk, %d recorded", fi.Size(), sn.FileSize)})
		case verify != nil:
			if err := verify(sn, p); err != nil {
				problems = append(problems, &CheckError{Problem: ErrFileDigest, Volume: sn.Volume, Snapshot: id,
					File: sn.File, Err: err})
			}
		}
	}
	s := &Store{dir: dir}
	files, err := s.listVolumeFiles()
	if err != nil {
		return append(problems, err)
	}
	for _, f := range files {
		if !refs[f] {
			problems = append(problems, &CheckError{Problem: ErrOrphan, File: f})
		}
	}
	return problems
}
