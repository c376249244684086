// Package verify checks a store: every delta file read to its verified
// END record, every record against its file's header, and the catalog
// against the files (chains unbroken, no file missing, altered or
// unknown). Device compares a device or file with a point in time from
// the digests of its chain. It returns what it finds; the command prints
// it.
package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// File reads a delta file to its verified END record. With payloads,
// every record is decompressed and every block digest checked (on all
// cores; an encrypted file's payloads are authenticated instead, see
// archive.ScanOptions.SkipSealedDigests); without, only the header and
// the records' metadata are read and chained, seeking over the payloads. A stream (no io.Seeker) is read
// front to back, payloads included.
func File(ctx context.Context, f io.Reader, payloads bool) (*archive.Header, archive.Trailer, error) {
	return readFile(ctx, f, payloads, nil)
}

// FileKey is File reading a file encrypted under key (see Options.Key).
func FileKey(ctx context.Context, f io.Reader, payloads bool, key *archive.Key) (*archive.Header, archive.Trailer, error) {
	return readFile(ctx, f, payloads, key)
}

// readFile is File, reading a file encrypted under key (see Options.Key).
func readFile(ctx context.Context, f io.Reader, payloads bool, key *archive.Key) (*archive.Header, archive.Trailer, error) {
	rd := archive.NewReader(f, archive.WithKey(key))
	h, err := rd.Header()
	if err == nil && payloads {
		// An encrypted file's payloads are authenticated, and its digests
		// with them: recomputing the digests would check its writer, not
		// the store (archive.ScanOptions.SkipSealedDigests). A file in the
		// clear has every digest checked.
		err = archive.Scan(ctx, rd, archive.ScanOptions{SkipSealedDigests: true}, func(*archive.Record, []byte) error { return nil })
	}
	for err == nil && !payloads {
		_, err = rd.Next()
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return h, archive.Trailer{}, err
	}
	return h, rd.Trailer(), nil
}

// Stored reads a store's delta file to its verified END record,
// decompressing every record and checking every digest.
func Stored(ctx context.Context, s catalog.Repository, file string) (*archive.Header, archive.Trailer, error) {
	h, tr, _, err := stored(ctx, s, file, nil, false, noProgress{}.Add)
	return h, tr, err
}

// stored is Stored, reading a file encrypted under key. With keyless and
// no key, an encrypted file has only its structure checked
// (archive.CheckStructure), and unchecked is true: its trailer holds
// only the file digest.
func stored(ctx context.Context, s catalog.Repository, file string, key *archive.Key, keyless bool, read func(int64)) (h *archive.Header, tr archive.Trailer, unchecked bool, err error) {
	r, err := s.OpenStream(file)
	if err != nil {
		return nil, archive.Trailer{}, false, err
	}
	var counted io.Reader = countingReader{r, read}
	if f, ok := r.(seekerAt); ok {
		// Keep what makes archive's reader read payloads in parallel at
		// their offsets (and name them so in its errors).
		counted = countingFile{countingReader{r, read}, f}
	}
	h, tr, err = readFile(ctx, counted, true, key)
	r.Close()
	if !keyless || key != nil || !errors.Is(err, archive.ErrKeyRequired) {
		return h, tr, false, err
	}
	if r, err = s.OpenStream(file); err != nil {
		return nil, archive.Trailer{}, false, err
	}
	defer r.Close()
	st, err := archive.CheckStructure(r)
	if err != nil {
		return h, archive.Trailer{}, true, err
	}
	return st.Header, archive.Trailer{Digest: st.Digest}, true, nil
}

// countingReader tells read how many bytes each Read returned.
type countingReader struct {
	r    io.Reader
	read func(int64)
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.read(int64(n))
	return n, err
}

// seekerAt is a file read at offsets as well as in order (a local
// store's delta file).
type seekerAt interface {
	io.Seeker
	io.ReaderAt
}

// countingFile is countingReader over a seekerAt, counting the bytes of
// ReadAt too.
type countingFile struct {
	countingReader
	f seekerAt
}

func (c countingFile) Seek(offset int64, whence int) (int64, error) { return c.f.Seek(offset, whence) }

func (c countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.f.ReadAt(p, off)
	c.read(int64(n))
	return n, err
}

// FileResult is the verdict on one recorded delta file.
type FileResult struct {
	Snapshot catalog.Snapshot
	Took     time.Duration // reading it
	Err      error         // nil: the file is sound and is the one its record describes
	// Unchecked: the file is encrypted and Options.Keyless checked it
	// without its key: its structure, its digest and its header against
	// its record, not its contents.
	Unchecked bool
}

// Result is what Store found besides the verdicts on files.
type Result struct {
	Files   int // recorded files read and checked
	Damaged int // of them, the ones with a problem (each reported through Options.File)
	// Unchecked counts the files whose contents were not checked: files
	// of an encrypted store checked without its key (Options.Keyless).
	Unchecked int

	// Problems are the inconsistencies of the records and files other
	// than a file's own (a broken chain, a missing file, an unknown
	// volume...), catalog.CheckErrors mostly, in the order
	// Repository.Check found them. Those that match catalog.ErrOrphan
	// are files no record references: what a run killed between writing
	// and recording a file leaves, harmless, and not counted by Bad;
	// their CheckError's Detail says what a store on object storage
	// knows of one.
	Problems []error
}

// Bad is the number of problems found: damaged files and the problems
// other than orphans.
func (r *Result) Bad() int {
	n := r.Damaged
	for _, p := range r.Problems {
		if !IsOrphan(p) {
			n++
		}
	}
	return n
}

// IsOrphan reports whether a problem is a file no record references.
func IsOrphan(p error) bool {
	var ce *catalog.CheckError
	return errors.As(p, &ce) && errors.Is(ce.Problem, catalog.ErrOrphan)
}

// Options tune Store.
type Options struct {
	// Volume limits the check to one volume's records and files; it
	// must be recorded (catalog.ErrNotFound).
	Volume string

	// File is told the verdict on each recorded file as soon as it is
	// known, in the order of the records, by one goroutine at a time.
	File func(FileResult)

	// Key reads files encrypted under it, each payload authenticated and
	// decrypted and each keyed digest checked. Without it an encrypted
	// file's verdict is archive.ErrKeyRequired; with it, a file that is
	// not encrypted is refused (archive.ErrAuth), as every reader given a
	// key refuses one.
	Key *archive.Key

	// Keyless, without a Key, checks an encrypted file as far as that
	// can be done without its key instead of reporting ErrKeyRequired:
	// its structure and file digest (archive.CheckStructure), its
	// header against its record, and the store's checks of the records
	// and files (present, sizes, chains). FileResult.Unchecked and
	// Result.Unchecked say its contents were not checked. Files that are
	// not encrypted are read in full as always.
	Keyless bool

	// Progress, if set, is called with the bytes of the files to read;
	// the Progress it returns is told of the bytes read (from two
	// goroutines at once), and Done when the reading ends.
	Progress func(total int64) Progress
}

// Store checks the store s: each recorded delta file (of o.Volume, or
// all) is read to its END record with every digest checked, and its
// header and digest compared with its record (record.Check), and an
// incremental's parent size with its parent's volume size; then the
// records and files are checked against each other (Repository.Check).
// Files are read two at a time, each on all cores: the end of one file's
// pipeline and the cold start of the next then overlap. err is set only
// when the check could not run, or ctx ended.
func Store(ctx context.Context, s catalog.Repository, o Options) (*Result, error) {
	volume := o.Volume
	if volume != "" {
		if err := s.View(func(tx *catalog.Tx) error { _, err := tx.Volume(volume); return err }); err != nil {
			return nil, err
		}
	}
	var snaps []catalog.Snapshot
	vols := map[string]catalog.Volume{}
	if err := s.View(func(tx *catalog.Tx) error {
		vs, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vs {
			vols[v.Name] = v
		}
		all, err := tx.AllSnapshots()
		for _, sn := range all {
			if volume == "" || sn.Volume == volume {
				snaps = append(snaps, sn)
			}
		}
		return err
	}); err != nil {
		return nil, err
	}
	type read struct {
		h         *archive.Header
		tr        archive.Trailer
		unchecked bool
		err       error
		took      time.Duration
		done      chan struct{}
	}
	var prog Progress = noProgress{}
	if o.Progress != nil {
		var total int64
		for _, sn := range snaps {
			total += sn.FileSize
		}
		prog = o.Progress(total)
	}
	defer prog.Done()
	reads := make(map[string]*read, len(snaps)) // by file: a prune may repoint a snapshot meanwhile
	byID := make(map[string]catalog.Snapshot, len(snaps))
	for _, sn := range snaps {
		reads[sn.File] = &read{done: make(chan struct{})}
		byID[sn.ID] = sn
	}
	next := make(chan catalog.Snapshot)
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sn := range next {
				r := reads[sn.File]
				start := time.Now()
				r.h, r.tr, r.unchecked, r.err = stored(ctx, s, sn.File, o.Key, o.Keyless, prog.Add)
				r.took = time.Since(start)
				close(r.done)
			}
		}()
	}
	go func() {
		defer close(next)
		for _, sn := range snaps {
			select {
			case next <- sn:
			case <-ctx.Done():
				return
			}
		}
	}()
	defer wg.Wait() // never leave readers behind
	res := &Result{}
	problems, err := s.Check(catalog.CheckOptions{Verify: func(snap catalog.Snapshot, _ string) error {
		if volume != "" && snap.Volume != volume {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.Files++
		r := reads[snap.File]
		if r == nil { // recorded meanwhile
			r = &read{}
			start := time.Now()
			r.h, r.tr, r.unchecked, r.err = stored(ctx, s, snap.File, o.Key, o.Keyless, prog.Add)
			r.took = time.Since(start)
		} else {
			select {
			case <-r.done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		h, tr, err := r.h, r.tr, r.err
		if err == nil {
			// Every field of the record against the file's header and
			// digest, as every command that opens the file checks them.
			err = record.Check(snap.File, snap, vols[snap.Volume], h, fmt.Sprintf("%x", tr.Digest))
			if err == nil && snap.FileDigest == "" {
				err = fmt.Errorf("the catalog recorded no digest of the file, whose digest is %x", tr.Digest)
			}
		}
		if err == nil {
			// The file is what a restore reads: its parent size must be
			// its parent's volume size, whatever an older record says.
			if p, ok := byID[snap.Parent]; ok && !h.IsFull() && h.ParentSize != p.VolumeSize {
				err = fmt.Errorf("the file is an incremental made from a volume of %d bytes, but its parent %s (#%d) is %d bytes: %w; "+
					"restoring it would leave stale data", h.ParentSize, p.ID, p.Seq, p.VolumeSize, catalog.ErrParentSize)
			}
		}
		if r.unchecked {
			res.Unchecked++
		}
		if o.File != nil {
			o.File(FileResult{Snapshot: snap, Took: r.took, Err: err, Unchecked: r.unchecked})
		}
		return err
	}})
	if err != nil {
		return nil, err
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	for _, p := range problems {
		var ce *catalog.CheckError
		if errors.As(p, &ce) {
			if volume != "" && ce.Volume != "" && ce.Volume != volume {
				continue
			}
			if errors.Is(ce.Problem, catalog.ErrFileDigest) {
				res.Damaged++ // already reported with its file
				continue
			}
		}
		res.Problems = append(res.Problems, p)
	}
	return res, nil
}
