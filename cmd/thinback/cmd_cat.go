package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func catCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "cat",
		Usage:     "write a volume's state at a point in time as a raw image, to standard output or a file",
		ArgsUsage: "VOLUME",
		Description: "Reads the chain full → … → the chosen snapshot from the store and writes the volume as it\n" +
			"was then, byte for byte, in order: for | ssh, | dd, | gzip. Every block is verified\n" +
			"against its digest before it is written; a damaged file stops the output with an\n" +
			"error (exit 3). Without --at or --snapshot, the newest snapshot.\n\n" +
			"-o FILE writes a new sparse file (ranges that read as zeroes are holes) under a\n" +
			"temporary name and gives it its name when complete; an existing FILE is refused.\n" +
			"qemu-img convert cannot read a raw image from a pipe: give it -o FILE's file, or\n" +
			"let it read thinback serve's export (nbd+unix:///VOLUME@SEQ?socket=PATH).\n\n" +
			"Standard output (-o -, the default) must not be a terminal, nor one of the files read,\n" +
			"the catalog, a file inside the store, or the device holding the store (exit 6, as\n" +
			"restore --to). The store is only read. An encrypted store is unlocked as restore\n" +
			"unlocks it (exit 14 for a wrong or missing key), and every record is authenticated.",
		Flags: append([]cli.Flag{
			storeFlag,
			&cli.StringFlag{Name: "at", Usage: `the newest snapshot at or before this time ("2026-11-20 03:00", local time, or RFC 3339)`},
			&cli.StringFlag{Name: "snapshot", Usage: "the snapshot id (or a unique prefix, or its sequence number)"},
			&cli.StringFlag{Name: "output", TakesFile: true, Aliases: []string{"o"}, Value: "-", Usage: "write the image to this new file (- for standard output)"},
			quietFlag,
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give the volume to write out")
			if err != nil {
				return err
			}
			if c.String("at") != "" && c.String("snapshot") != "" {
				return usageError{msg: "cat: give --at or --snapshot, not both"}
			}
			return runCat(c.Context, e, catOptions{store: c.String("store"), volume: a[0], at: c.String("at"),
				snapshot: c.String("snapshot"), out: c.String("output"), quiet: c.Bool("quiet"), unlock: unlocker(e, c)})
		},
	}
}

type catOptions struct {
	store, volume, at, snapshot string
	out                         string
	quiet                       bool
	unlock                      func(context.Context, catalog.Repository) (*archive.Key, error) // the store's key (storeKey)
}

// imageOutput is where cat writes: standard output in order (zeroes
// written out), or a new file written at offsets (zeroes left as holes)
// and published when complete.
type imageOutput struct {
	*output
	file *catalog.Pending // nil for standard output
}

func createImageOutput(e *env, path string, guards []restore.Guard) (*imageOutput, error) {
	if path == "" {
		return nil, usageError{msg: "cat: give -o FILE, or -o - for standard output"}
	}
	if path == "-" {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, usageError{msg: "refusing to write a disk image to a terminal: redirect standard output or give -o FILE"}
		}
		if err := checkStdout(e, guards); err != nil {
			return nil, fmt.Errorf("cat: %w", err)
		}
		return &imageOutput{output: &output{w: e.stdout, name: "standard output"}}, nil
	}
	p, err := catalog.CreatePending(path)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("output %s already exists: remove it or choose another name", path)
	}
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", path, err)
	}
	return &imageOutput{output: &output{w: &typedWriter{w: p, path: path}, pending: p, name: path}, file: p}, nil
}

// zeroChunk is written for ZERO ranges on standard output.
var zeroChunk = make([]byte, 1<<20)

// write puts a segment of the image out.
func (o *imageOutput) write(seg archive.Segment, data []byte) error {
	if o.file != nil {
		if seg.Kind == archive.KindZero {
			return nil // a hole: the file is new, so it reads as zeroes
		}
		_, err := o.file.WriteAt(data, seg.Offset)
		return catalog.WriteError(o.name, err)
	}
	if seg.Kind == archive.KindData {
		_, err := o.w.Write(data)
		return err
	}
	for n := seg.Length; n > 0; {
		k := min(n, int64(len(zeroChunk)))
		if _, err := o.w.Write(zeroChunk[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// finish gives a file its size (a trailing hole is not written) and
// makes the output durable under its name.
func (o *imageOutput) finish(size int64) error {
	if o.file != nil {
		if err := o.file.Truncate(size); err != nil {
			return catalog.WriteError(o.name, fmt.Errorf("output %s: %w", o.name, err))
		}
	}
	return o.commit()
}

func runCat(ctx context.Context, e *env, o catOptions) error {
	start := time.Now()
	s, err := openReadStore(ctx, e, o.store, o.unlock)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	pit, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) {
		return selectSnapshot(tx, o.volume, o.at, o.snapshot)
	})
	if err != nil {
		return fmt.Errorf("cat: %w", err)
	}
	defer pit.Close()
	pit.ReadAhead() // one pass through every file, most of each payload read
	c, err := archive.OpenChain(pit.Inputs, archive.WithKey(s.Key))
	if err != nil {
		return fmt.Errorf("cat: %w", err)
	}
	if first := c.Files()[0]; !first.Header.IsFull() {
		return fmt.Errorf("cat: %s is not a full: %w; run thinback verify", first.Name, archive.ErrNotChain)
	}
	size := c.Header().VolumeSize
	// What standard output must not be: the store, its catalog, the
	// files being read, or what holds them.
	out, err := createImageOutput(e, o.out, storeGuards(s, pit.Chain))
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			if err := out.abort(); err != nil {
				warn(e, "removing the unfinished %s: %v", out.name, err)
			}
		}
	}()
	prog := newProgress(e.stderr, o.quiet, "cat", size)
	defer prog.Done()
	var pos, data int64
	err = c.Scan(ctx, archive.ScanOptions{}, func(seg archive.Segment, b []byte) error {
		if seg.Offset != pos {
			return fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", pos, seg.Offset, archive.ErrNotChain)
		}
		if err := out.write(seg, b); err != nil {
			return err
		}
		pos = seg.End()
		if seg.Kind == archive.KindData {
			data += seg.Length
		}
		prog.Add(seg.Length)
		return nil
	})
	if err == nil && pos != size {
		err = fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", pos, size, archive.ErrNotChain)
	}
	if err != nil {
		return fmt.Errorf("cat %s to %s: %w", pit.Describe(), out.name, s.Damaged(err))
	}
	if err := out.finish(size); err != nil {
		return fmt.Errorf("cat: %w", err)
	}
	committed = true
	prog.Done()
	if !o.quiet {
		fmt.Fprintf(e.stderr, "cat %s to %s: %s (%s of data, %s of zeroes) from %d file(s), every block verified, in %s\n",
			pit.Describe(), out.name, bytesHuman(size), bytesHuman(data), bytesHuman(size-data), len(pit.Files), time.Since(start).Round(time.Millisecond))
	}
	return nil
}
