// Package storecopy brings one store (catalog.Repository) up to date
// with another, as `thinback copy` does: per volume, the snapshots the
// destination lacks, oldest first, each file read once from the source,
// verified as it is read and written to the destination through its
// DeltaWriter, so each file is its own commit and a copy stopped at any
// point leaves the destination valid for the next to carry on.
//
// A file is copied as it is (the stores share the key, or neither is
// encrypted), or rewritten under the destination's key (Options.Rewrite),
// through restore's merge of a chain of one file, the machinery prune
// re-encrypts with.
package storecopy

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/verify"
	"github.com/thinback/thinback/restore"
)

// Options tune Copy.
type Options struct {
	// Volumes to copy; none means every volume of the source.
	Volumes []string
	// Key is the source's key (nil for a source in the clear, or to copy
	// an encrypted source as it is without it: then each file has its
	// structure and digest checked, not its contents, and
	// Result.Unchecked says so).
	Key *archive.Key
	// Rewrite: each file is read with Key and written again, encrypted
	// under DestKey (nil: in the clear), with a salt of its own; else
	// files are copied byte for byte.
	Rewrite bool
	DestKey *archive.Key
	// Level and Tool are the compression and the tool named in rewritten
	// files' headers (records used whole keep their payloads as they are).
	Level archive.Level
	Tool  string
	// DryRun: only say what would be copied.
	DryRun bool
	// Warn is told of what did not fail the copy (a source file that
	// changed while it was read: that snapshot is left for the next run).
	Warn func(msg string)
	// Progress, if set, is called with the file bytes read as they are.
	Progress func(n int64)
	// After, if set, runs when a volume's copy ends without an error,
	// with the destination volume's lock still held: retention applied
	// to the destination (a prune needs the lock). Not in a dry run.
	After func(ctx context.Context, volume string) error
}

// Result says what Copy did to one volume (or would do).
type Result struct {
	Volume string             `json:"volume"`
	Copied []catalog.Snapshot `json:"copied"` // the destination's records of the files copied
	// Bytes is the size of the files read from the source.
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
	// Unchecked: files of an encrypted source were copied without its
	// key: their structure, size and file digest were checked, and their
	// headers against their records, not what their records hold.
	Unchecked bool `json:"unchecked,omitempty"`
	Rewritten bool `json:"rewritten,omitempty"` // files were re-encrypted (Options.Rewrite)
	// Left are the snapshots left for the next run: their source file
	// changed or went away while this one read it (a prune of the source).
	Left   []string `json:"left,omitempty"`
	DryRun bool     `json:"dry_run,omitempty"`
}

// ErrDiverged is the error of a destination whose volume does not
// descend from the source's: another volume of the same name, or
// snapshots whose parents the destination lacks.
var ErrDiverged = errors.New("the destination's volume is not a copy of the source's")

// VolumeNames lists the names of the volumes src records, which a copy
// with no volumes named copies.
func VolumeNames(src catalog.Repository) ([]string, error) {
	var names []string
	err := src.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		for _, v := range vols {
			names = append(names, v.Name)
		}
		return err
	})
	return names, err
}

// Copy copies every volume of o.Volumes (all of src's when empty) from
// src into dst, one after the other. It stops at the first error; the
// results of the volumes done (and of the failing one, as far as it got)
// are returned with it.
func Copy(ctx context.Context, src, dst catalog.Repository, o Options) ([]*Result, error) {
	names := o.Volumes
	if len(names) == 0 {
		var err error
		if names, err = VolumeNames(src); err != nil {
			return nil, err
		}
	}
	var results []*Result
	for _, name := range names {
		res, err := Volume(ctx, src, dst, name, o)
		if res != nil {
			results = append(results, res)
		}
		if err != nil {
			return results, err
		}
	}
	return results, nil
}

// Volume copies one volume. It takes the destination volume's lock for
// the whole copy (catalog.ErrLocked when another process holds it).
//
// A snapshot is copied when the destination lacks its id and it is not
// older than the destination's newest snapshot of the volume: older ones
// are those the destination's own retention removed, not copied again.
// Snapshots are copied oldest first, so each one's parent is in the
// destination before it. A parent that a prune of the source merged away
// since the last copy needs nothing special: the source's record of the
// child names the grandparent, whose file the source now holds merged,
// and the destination, which still holds the pruned parent, gets the
// child as a second branch from the grandparent (the catalog takes any
// older parent) until its own retention removes the parent.
func Volume(ctx context.Context, src, dst catalog.Repository, name string, o Options) (*Result, error) {
	start := time.Now()
	res := &Result{Volume: name, DryRun: o.DryRun, Rewritten: o.Rewrite}
	var vol catalog.Volume
	var snaps []catalog.Snapshot
	if err := src.View(func(tx *catalog.Tx) error {
		var err error
		if vol, err = tx.Volume(name); err != nil {
			return err
		}
		snaps, err = tx.Snapshots(name)
		return err
	}); err != nil {
		return nil, fmt.Errorf("copy %s: %s: %w", name, src, err)
	}
	// The destination's records are read under its lock: a writer holds
	// it from before it reads them until after its last commit.
	unlock, err := dst.LockVolume(name)
	if err != nil {
		return nil, fmt.Errorf("copy %s: %s: %w", name, dst, err)
	}
	defer unlock()
	have := map[string]catalog.Snapshot{}
	var newest time.Time
	if err := dst.View(func(tx *catalog.Tx) error {
		dv, err := tx.Volume(name)
		if errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if dv.UUID != vol.UUID || dv.BlockSize != vol.BlockSize {
			return fmt.Errorf("%w: volume %s of %s has uuid %q and blocks of %d bytes, the source's %q and %d",
				ErrDiverged, name, dst, dv.UUID, dv.BlockSize, vol.UUID, vol.BlockSize)
		}
		ds, err := tx.Snapshots(name)
		for _, sn := range ds {
			have[sn.ID] = sn
			if sn.Time.After(newest) {
				newest = sn.Time
			}
		}
		return err
	}); err != nil {
		return nil, fmt.Errorf("copy %s: %s: %w", name, dst, err)
	}

	sort.Slice(snaps, func(i, j int) bool { return snaps[i].Seq < snaps[j].Seq })
	var todo []catalog.Snapshot
	for _, sn := range snaps {
		if _, ok := have[sn.ID]; !ok && !sn.Time.Before(newest) {
			todo = append(todo, sn)
		}
	}
	if o.DryRun {
		res.Copied = todo
		for _, sn := range todo {
			res.Bytes += sn.FileSize
		}
		res.Seconds = time.Since(start).Seconds()
		return res, nil
	}
	for _, sn := range todo {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		if _, ok := have[sn.Parent]; sn.Parent != "" && !ok {
			return res, fmt.Errorf("copy %s: snapshot #%d %s: %w: its parent %s is in neither %s nor what this copy took from %s",
				name, sn.Seq, sn.ID, ErrDiverged, sn.Parent, dst, src)
		}
		rec, unchecked, err := copyFile(ctx, src, dst, vol, sn, o)
		if err != nil {
			if gone, why := changed(src, sn); gone {
				// A prune of the source replaced or removed the file
				// being read: what follows may depend on it, so the
				// rest waits for the next run, which sees the new chain.
				msg := fmt.Sprintf("copy %s: snapshot #%d %s %s while it was copied (a prune of %s?); it and the %d snapshot(s) after it are left for the next copy",
					name, sn.Seq, sn.ID, why, src, len(todo)-len(res.Copied)-1)
				if o.Warn != nil {
					o.Warn(msg)
				}
				for _, l := range todo[len(res.Copied):] {
					res.Left = append(res.Left, l.ID)
				}
				break
			}
			return res, fmt.Errorf("copy %s: snapshot #%d %s from %s: %w", name, sn.Seq, sn.ID, src, err)
		}
		have[rec.ID] = rec
		res.Copied = append(res.Copied, rec)
		res.Bytes += sn.FileSize
		res.Unchecked = res.Unchecked || unchecked
	}
	res.Seconds = time.Since(start).Seconds()
	if o.After != nil {
		if err := o.After(ctx, name); err != nil {
			return res, fmt.Errorf("copy %s: %s: %w", name, dst, err)
		}
	}
	return res, nil
}

// changed says whether the source's record of sn is gone or names
// another file now, and how.
func changed(src catalog.Repository, sn catalog.Snapshot) (bool, string) {
	var now catalog.Snapshot
	err := src.View(func(tx *catalog.Tx) error {
		var err error
		now, err = tx.Snapshot(sn.ID)
		return err
	})
	switch {
	case errors.Is(err, catalog.ErrNotFound):
		return true, "was pruned from the source"
	case err != nil:
		return false, ""
	case now.File != sn.File || now.FileDigest != sn.FileDigest:
		return true, "had its file rewritten in the source"
	}
	return false, ""
}

// copyFile copies sn's file into dst, verified as it is read, and
// returns the destination's record of it.
func copyFile(ctx context.Context, src, dst catalog.Repository, vol catalog.Volume, sn catalog.Snapshot, o Options) (rec catalog.Snapshot, unchecked bool, err error) {
	want := sn
	want.Seq, want.File, want.FileSize, want.Created = 0, "", 0, time.Time{}
	if o.Rewrite {
		rec, err = rewrite(ctx, src, dst, vol, sn, want, o)
		return rec, false, err
	}
	r, err := src.OpenStream(sn.File)
	if err != nil {
		return rec, false, err
	}
	defer r.Close()
	rec, err = dst.WriteVolumeDelta(vol, sn.ID, func(w io.Writer) (catalog.Snapshot, error) {
		cr := &countReader{r: r, progress: o.Progress}
		tee := io.TeeReader(cr, w)
		h, digest, un, err := check(ctx, tee, o.Key)
		if err != nil {
			return catalog.Snapshot{}, fmt.Errorf("%s: %w", sn.File, err)
		}
		// Whatever follows END is not part of the file its record
		// describes: the size below refuses it.
		if _, err := io.Copy(w, cr); err != nil {
			return catalog.Snapshot{}, err
		}
		if cr.n != sn.FileSize {
			return catalog.Snapshot{}, fmt.Errorf("%s holds %d bytes, its record says %d (run thinback verify --store %s)", sn.File, cr.n, sn.FileSize, src)
		}
		if err := record.Check(sn.File, sn, vol, h, digest); err != nil {
			return catalog.Snapshot{}, err
		}
		unchecked = un
		return want, nil
	})
	return rec, unchecked, err
}

// check reads a delta file from r to its verified END record: with key
// (or for a file in the clear) every record decoded and checked, else
// (an encrypted file without its key) its structure and file digest only,
// and unchecked is true. It returns the header and the file digest.
func check(ctx context.Context, r io.Reader, key *archive.Key) (*archive.Header, string, bool, error) {
	if key != nil {
		h, tr, err := verify.FileKey(ctx, r, true, key)
		return h, hex.EncodeToString(tr.Digest[:]), false, err
	}
	// The file is read once, as a stream: verify.File would refuse an
	// encrypted file (ErrKeyRequired) after consuming bytes that cannot
	// be read again, so its header says first which check it gets, and
	// the bytes read for it are given again to that check.
	pr := &peekReader{r: r}
	hb, err := pr.peekHeader()
	if err != nil {
		return nil, "", false, err
	}
	if !hb.IsEncrypted() {
		h, tr, err := verify.File(ctx, pr, true)
		return h, hex.EncodeToString(tr.Digest[:]), false, err
	}
	st, err := archive.CheckStructure(pr)
	if err != nil {
		return nil, "", true, err
	}
	return st.Header, hex.EncodeToString(st.Digest[:]), true, nil
}

// peekReader reads a delta file's header ahead and then gives every
// byte, the header's included, to the next reader.
type peekReader struct {
	r   io.Reader
	buf []byte
}

// peekHeader reads enough of the file to parse its header, keeping the
// bytes for Read.
func (p *peekReader) peekHeader() (*archive.Header, error) {
	rec := &recordingReader{r: p.r}
	h, err := archive.NewReader(rec).Header()
	p.buf = rec.buf
	return h, err
}

func (p *peekReader) Read(b []byte) (int, error) {
	if len(p.buf) > 0 {
		n := copy(b, p.buf)
		p.buf = p.buf[n:]
		return n, nil
	}
	return p.r.Read(b)
}

type recordingReader struct {
	r   io.Reader
	buf []byte
}

func (r *recordingReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.buf = append(r.buf, b[:n]...)
	return n, err
}

// countReader counts the bytes read through it.
type countReader struct {
	r        io.Reader
	n        int64
	progress func(int64)
}

func (c *countReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.progress != nil && n > 0 {
		c.progress(int64(n))
	}
	return n, err
}

// rewrite writes sn's file into dst under o.DestKey, as a merge of a
// chain of one file (restore.Merge): every record is read and checked
// under o.Key, whole records keep their compressed payloads, and the
// file is sealed again with a salt of its own.
func rewrite(ctx context.Context, src, dst catalog.Repository, vol catalog.Volume, sn, want catalog.Snapshot, o Options) (catalog.Snapshot, error) {
	files, err := record.OpenChain(src.OpenDelta, src.String(), vol, []catalog.Snapshot{sn})
	if err != nil {
		return catalog.Snapshot{}, err
	}
	defer record.CloseAll(files)
	f := files[0]
	in := []restore.Input{{Name: f.Name(), R: f}}
	return dst.WriteVolumeDelta(vol, sn.ID, func(w io.Writer) (catalog.Snapshot, error) {
		h, tr, err := restore.Merge(ctx, w, in, restore.MergeOptions{Tool: o.Tool, Workers: 2, Level: o.Level, Key: o.Key, Rekey: true, WriteKey: o.DestKey})
		if err != nil {
			return catalog.Snapshot{}, err
		}
		if o.Progress != nil {
			o.Progress(sn.FileSize)
		}
		rec := record.Merged(want, h, tr)
		return rec, nil
	})
}
