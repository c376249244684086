package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// output is where a delta file goes: standard output, or a file written
// under a temporary name and published when complete (catalog.Publish), so
// that an interrupted send never leaves a file that looks whole.
type output struct {
	w       io.Writer
	pending *catalog.Pending // nil for standard output
	name    string           // for messages
}

// createOutput opens path for a delta file; standard output ("-") is
// refused when it is one of guards, the files the command reads, or holds
// one (see checkStdout).
func createOutput(e *env, path string, guards []restore.Guard) (*output, error) {
	if path == "" {
		return nil, usageError{msg: "no output: give -o FILE, or -o - for standard output"}
	}
	if path == "-" {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, usageError{msg: "refusing to write a delta file to a terminal: redirect standard output or give -o FILE"}
		}
		if err := checkStdout(e, guards); err != nil {
			return nil, err
		}
		return &output{w: e.stdout, name: "standard output"}, nil
	}
	p, err := catalog.CreatePending(path)
	if errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("output %s already exists: remove it or choose another name", path)
	}
	if err != nil {
		return nil, fmt.Errorf("output %s: %w", path, err)
	}
	return &output{w: &typedWriter{w: p, path: path}, pending: p, name: path}, nil
}

// checkStdout refuses a standard output that a shell opened on one of
// guards (1<> on a delta file being read), inside one (a store's
// directory), or on the block device that holds one's filesystem (>
// /dev/loop0 under the store): the checks restore --to makes of its
// target, made before anything is written.
func checkStdout(e *env, guards []restore.Guard) error {
	f, ok := e.stdout.(*os.File)
	if !ok {
		return nil
	}
	return restore.CheckOutput(f, "standard output", guards)
}

// commit makes the file durable under its final name, or standard output
// durable when it is a file.
func (o *output) commit() error {
	if o.pending == nil {
		if f, ok := o.w.(*os.File); ok {
			if err := syncStdout(f); err != nil {
				return fmt.Errorf("standard output: %w", err)
			}
		}
		return nil
	}
	err := o.pending.Publish()
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("output %s appeared while it was written; it was left alone and nothing was kept: %w", o.name, err)
	}
	if err != nil {
		return fmt.Errorf("output %s: %w", o.name, err)
	}
	return nil
}

// abort removes an unfinished file; after commit it does nothing.
func (o *output) abort() error {
	if o.pending == nil {
		return nil
	}
	return o.pending.Discard()
}

// syncStdout fsyncs standard output when it is a file (`send -o - >
// file`). Pipes, terminals, sockets and character devices cannot be
// fsynced, and say so with EINVAL (or ENOTSUP); only that is ignored, and
// only for them: every failure to sync a regular file or a block device is
// reported, since the data may not be on disk.
func syncStdout(f *os.File) error {
	err := f.Sync()
	if err == nil {
		return nil
	}
	var st unix.Stat_t
	if serr := unix.Fstat(int(f.Fd()), &st); serr == nil {
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG, unix.S_IFBLK:
			return err
		}
	}
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTSUP) {
		return nil
	}
	return err
}

// typedWriter gives write errors of an output file their type (a full
// disk, FAT's 4 GiB limit; see catalog.WriteError).
type typedWriter struct {
	w    io.Writer
	path string
}

func (t *typedWriter) Write(p []byte) (int, error) {
	n, err := t.w.Write(p)
	return n, catalog.WriteError(t.path, err)
}
