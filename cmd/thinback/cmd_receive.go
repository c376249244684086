package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
)

func receiveCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "receive",
		Usage: "read a delta file from standard input into a store, or onto a file or device",
		Description: "The other end of 'thinback send ... -o - | ssh host thinback receive ...'.\n" +
			"With --store, the stream is verified completely while it is written to a temporary\n" +
			"file; only a complete, verified file whose parent is in the store is recorded, so an\n" +
			"interrupted stream leaves nothing behind. With --to, it is applied as by\n" +
			"'thinback apply - --to TARGET'.\n\n" +
			"Into an encrypted store, the stream must be encrypted under the store's key (sent with\n" +
			"send --store and a store of the same key): it is kept as it is, every record\n" +
			"authenticated while it is written, and an incremental must be bound to its parent's\n" +
			"file in the store. A stream in the clear, or under another key, is refused and nothing\n" +
			"is recorded. With --to, an encrypted stream is decrypted with --key-file (the key file\n" +
			"send was given); without the right key nothing is written (exit 14).\n\n" +
			"With --to and --resumable, the target is fsynced and the progress recorded in the\n" +
			"state file every --checkpoint-mib MiB written; a stream cut after that (a dropped\n" +
			"connection, a killed sender) fails as without it, and its error ends with the line\n" +
			"to continue it, 'thinback send ... --resume TOKEN': send then writes only what the\n" +
			"target does not hold yet, which receive --to TARGET (--resumable again, if it may be\n" +
			"cut once more) applies. After a crash or kill -9 of receive itself, --resume-token\n" +
			"prints the token of TARGET's interrupted transfer from the state file.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.StringFlag{Name: "to", TakesFile: true, Usage: "apply the stream to this file or block device instead"},
			&cli.StringFlag{Name: "snapback", Usage: "with --to: save the data the apply overwrites in this new delta file"},
			&cli.BoolFlag{Name: "force", Usage: "with --to: apply even if the target is not known to hold the base snapshot"},
			&cli.BoolFlag{Name: "resumable", Usage: "with --to: record the progress as it goes, so that a cut stream is resumed from there (send --resume)"},
			&cli.Int64Flag{Name: "checkpoint-mib", Value: restore.DefaultCheckpointBytes >> 20, Usage: "with --resumable: fsync the target and record the progress every this many MiB written"},
			&cli.BoolFlag{Name: "resume-token", Usage: "with --to: print the token of the target's interrupted transfer (for send --resume), read nothing"},
			stateFlag, quietFlag, jsonFlag,
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "takes no arguments: the delta file comes on standard input"); err != nil {
				return err
			}
			to, store := c.String("to"), c.String("store")
			switch {
			case (c.Bool("resumable") || c.Bool("resume-token")) && to == "":
				return usageError{msg: "receive: --resumable and --resume-token go with --to TARGET"}
			case c.Bool("resume-token"):
				return runResumeToken(e, to, stateFilePath(c.String("state")))
			case c.Int64("checkpoint-mib") <= 0 || c.Int64("checkpoint-mib") > 1<<30:
				return usageError{msg: fmt.Sprintf("receive: --checkpoint-mib %d is not a number of MiB between 1 and %d", c.Int64("checkpoint-mib"), 1<<30)}
			case to != "" && c.IsSet("store"):
				return usageError{msg: "receive: give --store DIR or --to TARGET, not both"}
			case to != "":
				// Before the target is opened: without the right key
				// nothing is written.
				key, err := fileKey(c.Context, e, c)
				if err != nil {
					return fmt.Errorf("receive: %w", err)
				}
				o := applyOptions{files: []string{"-"}, target: to, snapback: c.String("snapback"),
					force: c.Bool("force"), state: stateFilePath(c.String("state")), quiet: c.Bool("quiet"), json: c.Bool("json"), key: key}
				if c.Bool("resumable") {
					o.checkpoint = c.Int64("checkpoint-mib") << 20
				}
				return runApply(c.Context, e, o)
			case store == "":
				return usageError{msg: "receive: give --store DIR or --to TARGET"}
			}
			return runReceive(c.Context, e, store, c.Bool("quiet"), c.Bool("json"), unlocker(e, c))
		},
	}
}

// runResumeToken prints the token of the interrupted transfer to target
// that its state records.
func runResumeToken(e *env, target, state string) error {
	t, err := restore.OpenTarget(target, restore.TargetOptions{NoCreate: true})
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	defer t.Close()
	id, err := t.Identity()
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	st, err := (&stateFile{path: state, id: id}).load()
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	tok, ok := tokenOf(st)
	if !ok {
		why := "no transfer to it was interrupted"
		if st.InProgress != nil {
			why = "the interrupted apply recorded no progress (it was not received with --resumable, or was cut before its first checkpoint): send it whole again"
		}
		return fmt.Errorf("receive: %s holds no transfer to resume: %s: %w", target, why, restore.ErrResume)
	}
	_, err = fmt.Fprintln(e.stdout, tok)
	return err
}

// laterWriter holds what is written to it until it learns where it goes:
// the stream's header must be read before the temporary file can be named.
type laterWriter struct {
	buf bytes.Buffer
	w   io.Writer
}

func (l *laterWriter) Write(p []byte) (int, error) {
	if l.w == nil {
		return l.buf.Write(p)
	}
	return l.w.Write(p)
}

func (l *laterWriter) setTarget(w io.Writer) error {
	l.w = w
	_, err := w.Write(l.buf.Bytes())
	l.buf = bytes.Buffer{}
	return err
}

// runReceive records the stream on standard input in the store dir;
// unlock returns the store's key (storeKey), nil when it is in the clear.
func runReceive(ctx context.Context, e *env, dir string, quiet, asJSON bool, unlock func(context.Context, catalog.Repository) (*archive.Key, error)) error {
	s, err := openStore(ctx, e, dir, true)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	key, err := unlock(ctx, s)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	sink := &laterWriter{}
	// Under the store's key, a stream in the clear or under another key
	// fails here, naming both.
	rd := archive.NewReader(io.TeeReader(e.stdin, sink), archive.WithKey(key))
	h, err := rd.Header()
	if err != nil && key != nil && (errors.Is(err, archive.ErrAuth) || errors.Is(err, archive.ErrWrongKey)) {
		return fmt.Errorf("receive: standard input: %w\nstore %s is encrypted under key %s and takes only streams under it: "+
			"send with --store naming this store, or a store of the same key", err, dir, key.ID())
	}
	if err != nil {
		return fmt.Errorf("receive: standard input: %w", err)
	}
	if h.IsResumed() {
		return fmt.Errorf("receive: standard input is the rest of an interrupted transfer of %s, from byte %d, not a snapshot: %w; a store keeps whole files: send it again without --resume",
			h.Snapshot.Describe(), h.ResumeFrom, archive.ErrNotChain)
	}
	if err := catalog.ValidVolumeName(h.VolumeName); err != nil {
		return fmt.Errorf("receive: the stream names its volume %+q, which thinback does not record as a volume name (%v): send it again with --volume NAME", h.VolumeName, err)
	}
	unlockVolume, err := s.LockVolume(h.VolumeName)
	if err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	defer unlockWarn(e, unlockVolume, h.VolumeName)
	// Refuse before reading the stream what could not be recorded: a
	// snapshot already there, another volume under the same name, an
	// incremental whose parent is not in the store, belongs to another
	// volume or had another size than the stream says it was made from
	// (its restore would leave stale data). Commit checks the same again.
	err = s.View(func(tx *catalog.Tx) error {
		if v, err := tx.Volume(h.VolumeName); err == nil && v.UUID != "" && h.VolumeUUID != "" && v.UUID != h.VolumeUUID {
			return fmt.Errorf("the store's volume %s has uuid %s, the stream's %s: a different volume under the same name: %w",
				h.VolumeName, printable.String(v.UUID), printable.String(h.VolumeUUID), restore.ErrVolumeMismatch)
		}
		err := tx.CheckNew(record.OfFile(h, archive.Trailer{}))
		if errors.Is(err, catalog.ErrParentVolume) {
			if p, perr := tx.Snapshot(record.ID(h.Parent.ID)); perr == nil {
				return fmt.Errorf("the stream's parent %s belongs to volume %s, the stream to %s: %w", p.ID, p.Volume, h.VolumeName, catalog.ErrParentVolume)
			}
		}
		return err
	})
	if err == nil && key != nil && !h.IsFull() {
		err = backup.CheckParent(s, key, h)
	}
	if err != nil {
		return fmt.Errorf("receive: %w", receiveAdvice(h, err))
	}
	prog := newProgress(e.stderr, quiet || asJSON, "received", h.VolumeSize)
	// A new volume is recorded with its first snapshot, so a stream that
	// fails, or a commit that does, leaves no volume behind.
	snap, err := s.WriteVolumeDelta(record.VolumeOf(h), record.ID(h.Snapshot.ID), func(w io.Writer) (catalog.Snapshot, error) {
		if err := sink.setTarget(w); err != nil {
			return catalog.Snapshot{}, err
		}
		err := archive.Scan(ctx, rd, archive.ScanOptions{}, func(rec *archive.Record, _ []byte) error {
			prog.Add(rec.Length)
			return nil
		})
		if err != nil {
			return catalog.Snapshot{}, fmt.Errorf("standard input: %w", err)
		}
		return record.OfFile(h, rd.Trailer()), nil
	})
	prog.Done()
	if err != nil {
		return fmt.Errorf("receive: %w\nnothing was recorded in the store", backup.StoreWriteError(dir, err))
	}
	if asJSON {
		return printJSON(e, snap) // the record, as list --json shows records
	}
	if !quiet {
		kind := "full"
		if !h.IsFull() {
			kind = "incremental"
		}
		printable.Sayf(e.stderr, "received %s #%d %s (%s, %s): %s data, %s zero, %s stored", h.VolumeName, snap.Seq, snap.ID,
			h.Snapshot.Name, kind, bytesHuman(snap.DataBytes), bytesHuman(snap.ZeroBytes), bytesHuman(snap.FileSize))
	}
	return nil
}

// receiveAdvice says what to do when the store cannot take a stream.
func receiveAdvice(h *archive.Header, err error) error {
	switch {
	case errors.Is(err, catalog.ErrExist):
		return fmt.Errorf("snapshot %s (%s) of %s is already in the store: %w", h.Snapshot.ID, printable.String(h.Snapshot.Name), h.VolumeName, err)
	case errors.Is(err, catalog.ErrMissingParent):
		return fmt.Errorf("the stream is an incremental from %s (%s), which is not in the store: receive its full and the incrementals up to it first: %w", h.Parent.ID, printable.String(h.Parent.Name), err)
	case errors.Is(err, catalog.ErrParentSize):
		return fmt.Errorf("%w; the stream is not recorded (is the file damaged or crafted? send it again)", err)
	}
	return err
}
