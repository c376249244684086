package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/printable"
)

// Crafted delta files: every digest valid (BLAKE3 is unkeyed, so anyone
// can write one with archive's own Writer), only the meaning wrong. They
// test the semantic checks around the parser, not the checksums.

// memSource is a Source over a byte slice: DATA where the bytes are not
// zero, as the send pipeline splits it.
type memSource struct {
	data []byte
	ext  []archive.Extent
}

func (m *memSource) Next() (archive.Extent, error) {
	if len(m.ext) == 0 {
		return archive.Extent{}, io.EOF
	}
	e := m.ext[0]
	m.ext = m.ext[1:]
	return e, nil
}

func (m *memSource) ReadAt(p []byte, off int64) (int, error) {
	n := copy(p, m.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// craft writes a delta file with header h whose records cover the given
// ranges of data (all of it when none are given).
func craft(t *testing.T, path string, h *archive.Header, data []byte, ranges ...archive.Extent) {
	t.Helper()
	if h.Codec == 0 {
		h.Codec, h.Hash = archive.CodecZstd, archive.HashBLAKE3
	}
	if h.BlockSize == 0 {
		h.BlockSize = archive.DefaultBlockSize
	}
	if h.Tool == "" {
		h.Tool = "crafted"
	}
	h.VolumeSize = int64(len(data))
	if len(ranges) == 0 {
		ranges = []archive.Extent{{Offset: 0, Length: int64(len(data)), Kind: archive.KindData}}
	}
	var b bytes.Buffer
	w := archive.NewWriter(&b)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &memSource{data: data, ext: ranges}, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// result is what one run of thinback did.
type result struct {
	stdout, stderr string
	code           int
}

// thinback runs the test binary as thinback in dir, with stdin from a
// file if given.
func thinback(t *testing.T, dir, stdin string, args ...string) result {
	t.Helper()
	cmd := thinbackCmd(t, dir, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		f, err := os.Open(filepath.Join(dir, stdin))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	// Escaped, so that the test's own log never carries what the
	// crafted names hold to a terminal (--json output keeps them raw).
	t.Logf("thinback %s: exit %d\n%s", printable.String(strings.Join(args, " ")), r.code, printable.Message(r.stdout+r.stderr))
	return r
}

func (r result) want(t *testing.T, code int, what string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("%s: exit %d, want %d\n%s", what, r.code, code, printable.Message(r.stdout+r.stderr))
	}
}

// noRawControls fails if out holds a rune that a terminal acts on.
func noRawControls(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		if r != '\n' && r != '\t' && printable.Escaped(r) {
			t.Errorf("%s: raw %U at byte %d reaches the terminal: %q", what, r, i, out)
			return
		}
	}
}

// runNoTTY runs thinback in dir in a session of its own, with no
// controlling terminal to ask a passphrase at, with env added and
// standard input from the file stdin (relative to dir) if given.
func runNoTTY(t *testing.T, dir, stdin string, env []string, args ...string) result {
	t.Helper()
	cmd := thinbackCmd(t, dir, args...)
	cmd.Env = append(cmd.Env, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		if !filepath.IsAbs(stdin) {
			stdin = filepath.Join(dir, stdin)
		}
		f, err := os.Open(stdin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmd.Stdin = f
	}
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatal(err)
	}
	t.Logf("thinback %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stdout+r.stderr)
	return r
}
