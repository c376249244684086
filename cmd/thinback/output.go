package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/term"
)

// output is where a delta file goes: standard output, or a file written
// under a temporary name and renamed when complete, so that an interrupted
// send never leaves a file that looks whole.
type output struct {
	w     io.Writer
	f     *os.File
	final string
	done  bool
}

func createOutput(e *env, path string) (*output, error) {
	if path == "" {
		return nil, usageError{"no output: give -o FILE, or -o - for standard output"}
	}
	if path == "-" {
		if f, ok := e.stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			return nil, usageError{"refusing to write a delta file to a terminal: redirect standard output or give -o FILE"}
		}
		return &output{w: e.stdout}, nil
	}
	if _, err := os.Stat(path); err == nil {
		return nil, fmt.Errorf("output %s already exists: remove it or choose another name", path)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp := filepath.Join(dir, "."+base+".tmp-"+strconv.Itoa(os.Getpid()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("output: %w", err)
	}
	return &output{w: f, f: f, final: path}, nil
}

// commit makes the file durable under its final name.
func (o *output) commit() error {
	o.done = true
	if o.f == nil {
		if f, ok := o.w.(*os.File); ok {
			if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) && !isNotSyncable(err) {
				return fmt.Errorf("standard output: %w", err)
			}
		}
		return nil
	}
	tmp := o.f.Name()
	if err := o.f.Sync(); err != nil {
		o.f.Close()
		os.Remove(tmp)
		return fmt.Errorf("output %s: %w", o.final, err)
	}
	if err := o.f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("output %s: %w", o.final, err)
	}
	// link + remove, not rename: never replace a file that appeared meanwhile.
	if err := os.Link(tmp, o.final); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("output %s: %w", o.final, err)
	}
	os.Remove(tmp)
	return syncDir(filepath.Dir(o.final))
}

// abort removes an unfinished file.
func (o *output) abort() {
	if o.done || o.f == nil {
		return
	}
	o.f.Close()
	os.Remove(o.f.Name())
}

func isNotSyncable(err error) bool {
	// Pipes and terminals cannot be fsynced; that is fine.
	var pe *os.PathError
	return errors.As(err, &pe)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
