package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func applyCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "apply",
		Usage:     "write delta files onto a file or block device",
		ArgsUsage: "FILE... | -",
		Description: "Applies a full and/or incrementals, in chain order, to TARGET. Several files are merged\n" +
			"first, so each block is written once. Every record is verified before it is written;\n" +
			"files are checked to their end before TARGET is touched (a stream as it is read).\n\n" +
			"TARGET is overwritten: a block device must be at least the volume's size and is\n" +
			"opened exclusively (a mounted device is refused); a regular file is created or\n" +
			"resized to the volume's size. An incremental is refused unless the state file says\n" +
			"TARGET holds its base snapshot (--force skips that check). An interrupted apply is\n" +
			"finished by running it again; --snapback FILE saves what is overwritten, and\n" +
			"applying FILE undoes the apply. Run again with the same --snapback FILE, an\n" +
			"interrupted apply continues that file, which then undoes both runs. A FILE that\n" +
			"a power cut left ending inside a record still does both, read up to its last\n" +
			"record that verifies, on a TARGET whose state file says that apply was interrupted.\n\n" +
			"Encrypted files are read with the key of the store named by --store (unlocked as\n" +
			"restore does) or of the key file given with --key-file (as send -o wrote them); an\n" +
			"encrypted file without its key is refused with exit code 14, naming its key id, and\n" +
			"nothing is written. A --snapback file is encrypted under the same key.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "to", TakesFile: true, Usage: "the file or block device to write (required)"},
			&cli.StringFlag{Name: "snapback", Usage: "save the data the apply overwrites in this new delta file (or, running an interrupted apply again, in its snapback file)"},
			&cli.BoolFlag{Name: "force", Usage: "apply even if TARGET is not known to hold the base snapshot"},
			&cli.StringFlag{Name: "state", TakesFile: true, Usage: "state file recording what each target holds (default $THINBACK_STATE or " + defaultStateFile + ")"},
			quietFlag, jsonFlag,
			storeFlag, // its key reads encrypted files
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			files, err := args(c, 1, -1, "give the delta files to apply, or - for standard input")
			if err != nil {
				return err
			}
			if c.String("to") == "" {
				return usageError{msg: "apply: give the target with --to FILE|DEVICE"}
			}
			return runApply(c.Context, e, applyOptions{
				files: files, target: c.String("to"), snapback: c.String("snapback"),
				force: c.Bool("force"), state: stateFilePath(c.String("state")), quiet: c.Bool("quiet"),
				json: c.Bool("json"), unlock: fileUnlocker(e, c),
			})
		},
	}
}

type applyOptions struct {
	files    []string
	target   string
	snapback string
	force    bool
	state    string
	quiet    bool
	json     bool // print the result as a JSON object (applyJSON)
	// key reads encrypted files and encrypts the snapback file.
	key *archive.Key
	// checkpoint, if not 0, records the apply's progress every so many
	// bytes (receive --resumable): a cut stream says how to resume it.
	checkpoint int64
	// unlock returns the key of apply's files (fileKey); it is called
	// only when one of them is encrypted.
	unlock func(context.Context) (*archive.Key, error)
}

func runApply(ctx context.Context, e *env, o applyOptions) (err error) {
	var inputs []restore.Input
	guards := o.guards()
	encrypted := false
	for _, name := range o.files {
		if name == "-" {
			if len(o.files) > 1 {
				return usageError{msg: "apply: - (standard input) must be the only file"}
			}
			in, enc, err := peekEncrypted(e.stdin)
			if err != nil {
				return fmt.Errorf("apply: standard input: %w", err)
			}
			encrypted = enc
			inputs = append(inputs, restore.Input{Name: "standard input", R: in})
			if f, ok := e.stdin.(*os.File); ok {
				// A regular file redirected to standard input.
				guards = append(guards, restore.Guard{What: "standard input", Path: "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))})
			}
			continue
		}
		guards = append(guards, restore.Guard{What: "delta file", Path: name})
		f, err := archive.OpenFile(name)
		if err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		defer f.Close()
		if _, enc, err := peekEncrypted(f); err != nil {
			return fmt.Errorf("apply: %s: %w", name, err)
		} else if enc {
			encrypted = true
		}
		inputs = append(inputs, restore.Input{Name: name, R: f})
	}
	// Plain files need no key: none is asked for. Without one, an
	// encrypted file is refused by restore.Apply with its key id.
	if encrypted && o.unlock != nil {
		if o.key, err = o.unlock(ctx); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	t, err := openTarget(ctx, o.target, guards)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	defer t.Close()
	defer func() {
		if err != nil {
			t.RemoveCreated() // a target this run created, if the apply never ran
		}
	}()
	res, err := applyTo(ctx, e, t, inputs, o)
	if err != nil {
		return err
	}
	if o.json {
		return printJSON(e, newApplyJSON(o, res, o.files))
	}
	if !o.quiet {
		msg := fmt.Sprintf("applied %s to %s: it holds %s now (%s written, %s zeroed", strings.Join(o.files, " "), o.target,
			res.Snapshot.Name, bytesHuman(res.DataBytes), bytesHuman(res.ZeroBytes))
		if res.Skipped > 0 {
			msg += fmt.Sprintf(", %s superseded", bytesHuman(res.Skipped))
		}
		msg += fmt.Sprintf(", in %s)", res.Duration.Round(1e6))
		if res.Snapback != nil {
			msg += fmt.Sprintf("; undo with: thinback apply %s --to %s", o.snapback, o.target)
		}
		printable.Sayf(e.stderr, "%s", msg)
	}
	return nil
}

// applyJSON is the result of apply --json and restore --json.
type applyJSON struct {
	Target string `json:"target"`
	Volume string `json:"volume"`
	// Snapshot is the id of the snapshot the target holds now; Seq its
	// number in the store (restore).
	Snapshot     string `json:"snapshot"`
	SnapshotName string `json:"snapshot_name,omitempty"`
	Seq          uint64 `json:"seq,omitempty"`
	// Files are the delta files applied (restore: their snapshots' ids).
	Files           []string `json:"files"`
	DataBytes       int64    `json:"data_bytes"`
	ZeroBytes       int64    `json:"zero_bytes"`
	SupersededBytes int64    `json:"superseded_bytes"`
	Seconds         float64  `json:"seconds"`
	// Snapback is the file that undoes the apply (thinback apply FILE).
	Snapback string `json:"snapback,omitempty"`
	// NothingToDo: the target held the snapshot already (restore).
	NothingToDo bool `json:"nothing_to_do,omitempty"`
}

func newApplyJSON(o applyOptions, res *restore.Result, files []string) applyJSON {
	j := applyJSON{Target: o.target, Volume: res.VolumeName, Snapshot: res.Snapshot.ID.String(), SnapshotName: res.Snapshot.Name,
		Files: files, DataBytes: res.DataBytes, ZeroBytes: res.ZeroBytes, SupersededBytes: res.Skipped, Seconds: res.Duration.Seconds()}
	if res.Snapback != nil {
		j.Snapback = o.snapback
	}
	return j
}

// printJSON prints v on standard output as indented JSON, as list, prune
// and the other --json outputs are.
func printJSON(e *env, v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// headerPeek is how much of a stream apply looks at to see whether it is
// encrypted: more than any header thinback writes.
const headerPeek = 64 << 10

// peekEncrypted reports whether r begins with the header of an encrypted
// delta file, and returns what reads r from where it was: r itself put
// back at its place when it can seek (a file, which restore.Apply then
// checks to its end before writing), else a buffer over it. A header it
// cannot read (damaged, or longer than headerPeek) says false: the apply
// then reads it and fails as the file deserves, with the key id when it
// is encrypted.
func peekEncrypted(r io.Reader) (io.Reader, bool, error) {
	if s, ok := r.(io.ReadSeeker); ok {
		if at, err := s.Seek(0, io.SeekCurrent); err == nil {
			h, herr := archive.NewReader(s).Header()
			if _, err := s.Seek(at, io.SeekStart); err != nil {
				return nil, false, err
			}
			return r, herr == nil && h.IsEncrypted(), nil
		}
	}
	in := bufio.NewReaderSize(r, headerPeek)
	b, _ := in.Peek(headerPeek)
	h, err := archive.NewReader(bytes.NewReader(b)).Header()
	return in, err == nil && h.IsEncrypted(), nil
}

// guards are the files of an apply besides its delta files that the target
// must not be or hold: the state file and the snapback file.
func (o applyOptions) guards() []restore.Guard {
	g := []restore.Guard{{What: "state file", Path: o.state}}
	if o.snapback != "" {
		g = append(g, restore.Guard{What: "snapback file", Path: o.snapback})
	}
	return g
}

// openTarget opens a file or block device to apply to, refusing one that
// is, lies in or holds one of guards. On a thin LV, ZERO ranges are
// discarded, which unmaps them.
func openTarget(ctx context.Context, path string, guards []restore.Guard) (*restore.Target, error) {
	opts := restore.TargetOptions{Guards: guards}
	if fi, err := os.Stat(path); err == nil && fi.Mode()&os.ModeDevice != 0 {
		opts.DiscardZeroes = discardZeroes(ctx, path)
	}
	return restore.OpenTarget(path, opts)
}

// applyTo applies inputs to an open target, keeping its state in the state
// file. It is shared by apply, receive and restore.
func applyTo(ctx context.Context, e *env, t *restore.Target, inputs []restore.Input, o applyOptions) (*restore.Result, error) {
	id, err := t.Identity()
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	sf := &stateFile{path: o.state, id: id}
	st, err := sf.load()
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	var undo *os.File
	resume := false
	if o.snapback != "" {
		if undo, resume, err = openSnapback(o.snapback, st); err != nil {
			return nil, fmt.Errorf("apply: %w", err)
		}
	}
	// began: the apply wrote, or may have written, to the target, so the
	// snapback file covers something and is kept. A snapback file being
	// continued was there before: it is always kept.
	began := resume
	prog := newProgress(e.stderr, o.quiet || o.json, "applied", 0)
	opts := restore.Options{
		Force: o.force,
		Key:   o.key,
		State: st,
		Begin: func(s restore.State) error {
			began = true
			return sf.save(o.target, s)
		},
		Finish:  func(s restore.State) error { return sf.save(o.target, s) },
		Stopped: func(s restore.State) error { return sf.save(o.target, s) },
		Revert: func() error {
			began = false // nothing of the apply stays: neither does its undo file
			return sf.revert()
		},
		Position: prog.At,
	}
	if undo != nil {
		opts.Snapback, opts.ResumeSnapback = typedFile{undo}, resume
	}
	if o.checkpoint > 0 {
		opts.Checkpoint = func(s restore.State) error { return sf.save(o.target, s) }
		opts.CheckpointBytes = o.checkpoint
	}
	res, err := restore.Apply(ctx, t, inputs, opts)
	prog.Done()
	if undo != nil {
		err = closeSnapback(undo, began, err)
	}
	if err != nil && o.checkpoint > 0 {
		if st, lerr := sf.load(); lerr == nil {
			if tok, ok := tokenOf(st); ok {
				err = fmt.Errorf("%w\n%s holds the snapshot up to byte %d; to send only the rest: thinback send ... -o - --resume %s", err, o.target, tok.From, tok)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	return res, nil
}

// openSnapback creates a snapback file: never over an existing file, and
// with its name durable before anything is saved in it. When the target
// holds an interrupted apply that kept a snapback file, an existing file
// is opened instead (resume is true): if it is that apply's snapback file
// and this apply runs it again, restore.Apply continues it; it refuses
// any other before writing to it.
func openSnapback(path string, st restore.State) (f *os.File, resume bool, err error) {
	if st.InProgress == nil || st.InProgress.Undo.IsZero() {
		f, err = createSnapback(path)
		return f, false, err
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		f, err = createSnapback(path)
		return f, false, err
	}
	if f, err = os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0); err != nil {
		return nil, false, fmt.Errorf("snapback file %s: %w", path, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, false, fmt.Errorf("snapback file %s already exists and is not a regular file: choose another name", path)
	}
	return f, true, nil
}

// createSnapback creates a new snapback file.
func createSnapback(path string) (*os.File, error) {
	f, err := catalog.CreateExclusive(path)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("snapback file %s already exists: choose another name (it would be overwritten)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("snapback file: %w", err)
	}
	return f, nil
}

// closeSnapback closes the snapback file after an apply that ended with
// err. An apply that failed before it began writing the target overwrote
// nothing, so its snapback file is removed; once it began, the file
// covers what was overwritten and is always kept.
func closeSnapback(f *os.File, began bool, err error) error {
	cerr := f.Close()
	switch {
	case err != nil && !began:
		if rerr := os.Remove(f.Name()); rerr != nil {
			return fmt.Errorf("%w (and removing the unused snapback file %s failed: %v)", err, f.Name(), rerr)
		}
		return err
	case err != nil && cerr != nil:
		return fmt.Errorf("%w (and closing the snapback file %s failed: %v)", err, f.Name(), cerr)
	case cerr != nil:
		return fmt.Errorf("snapback file %s: %w", f.Name(), catalog.WriteError(f.Name(), cerr))
	}
	return err
}

// typedFile gives the write errors of a snapback file their type (a full
// disk, FAT's 4 GiB limit; see catalog.WriteError).
type typedFile struct{ *os.File }

func (f typedFile) Write(p []byte) (int, error) {
	n, err := f.File.Write(p)
	return n, catalog.WriteError(f.Name(), err)
}

func (f typedFile) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	return n, catalog.WriteError(f.Name(), err)
}

func (f typedFile) Sync() error { return catalog.WriteError(f.Name(), f.File.Sync()) }
