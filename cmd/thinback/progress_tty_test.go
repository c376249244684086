package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProgressLine: done of total, the rate and the time left.
func TestProgressLine(t *testing.T) {
	got := progressLine("restored", 1<<30, 4<<30, 0, 10*time.Second)
	for _, want := range []string{"restored 1.0 GiB of 4.0 GiB (25%)", "102.4 MiB/s", "30s left"} {
		if !strings.Contains(got, want) {
			t.Errorf("%q lacks %q", got, want)
		}
	}
	// An apply resumed at 3 GiB that wrote 512 MiB more in 4s.
	if got := progressLine("applied", 3<<30+512<<20, 4<<30, 3<<30, 4*time.Second); !strings.Contains(got, "128.0 MiB/s, 4s left") {
		t.Errorf("resumed: %q", got)
	}
	if got := progressLine("cat", 1<<20, 0, 0, time.Second); strings.Contains(got, "left") || strings.Contains(got, "%") {
		t.Errorf("without a total: %q", got)
	}
	if got := progressLine("cat", 0, 1<<20, 0, 0); got != "cat 0 B of 1.0 MiB (0%)" {
		t.Errorf("at the start: %q", got)
	}
}

// TestProgressAt: a total learnt late (an apply's volume size) is drawn.
func TestProgressAt(t *testing.T) {
	var buf bytes.Buffer
	p := &ttyProgress{w: &buf, verb: "applied", start: time.Now().Add(-time.Second), stop: make(chan struct{})}
	p.At(256<<20, 1<<30) // where it starts: the rate counts from here
	p.At(512<<20, 0)
	p.draw()
	if !strings.Contains(buf.String(), "applied 512.0 MiB of 1.0 GiB (50%)") || !strings.Contains(buf.String(), "left") {
		t.Errorf("drew %q", buf.String())
	}
}

// TestProgressOnTerminal: each command that moves data runs a progress
// line on a terminal (ended by erasing it), and writes no escape to a
// stderr that is no terminal, nor to a terminal with --quiet or --json.
func TestProgressOnTerminal(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("a disk image, shown in progress\n"), 100000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	run(t, work, "send", "--file", "disk.img", "-o", "full.tbk")
	delta := storeFiles(t, filepath.Join(work, "store"))[0]
	n := 0
	out := func() string { n++; return filepath.Join(work, "out", strings.Repeat("x", n)) }
	if err := os.Mkdir(filepath.Join(work, "out"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"restore", "disk.img", "--store", "store", "--to", "OUT"},
		{"apply", "full.tbk", "--to", "OUT"},
		{"cat", "disk.img", "--store", "store", "-o", "OUT"},
		{"verify", "--store", "store"},
		{"verify", delta},
		{"send", "--file", "disk.img", "-o", "OUT"},
	} {
		name := strings.Join(args[:2], " ")
		with := func(extra ...string) []string {
			a := append([]string(nil), args...)
			for i := range a {
				if a[i] == "OUT" {
					a[i] = out()
				}
			}
			return append(a, extra...)
		}
		// The erase is written when the line ends, whether or not a redraw
		// came first (the command may end within one).
		if got := onTerminal(t, work, with()...); !strings.Contains(got, "\r\033[K") {
			t.Errorf("%s on a terminal: %q, want a progress line, erased", name, got)
		}
		if got := onTerminal(t, work, with("--quiet")...); strings.Contains(got, "\033[") {
			t.Errorf("%s --quiet on a terminal: %q", name, got)
		}
		if args[0] != "cat" { // cat's output is the image

			if got := onTerminal(t, work, with("--json")...); strings.Contains(got, "\033[") {
				t.Errorf("%s --json on a terminal: %q", name, got)
			}
		}
		var stderr bytes.Buffer
		cmd := thinbackCmd(t, work, with()...)
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		if err := cmd.Run(); err != nil || strings.Contains(stderr.String(), "\033[") || strings.Contains(stderr.String(), "\r") {
			t.Errorf("%s, stderr not a terminal: %v, %q", name, err, stderr.String())
		}
	}
}

// onTerminal runs thinback with stderr on a new pseudo-terminal and
// returns what reached it.
func onTerminal(t *testing.T, dir string, args ...string) string {
	t.Helper()
	master, tty := openPty(t)
	cmd := thinbackCmd(t, dir, args...)
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	reached := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(master); reached <- b }()
	err := cmd.Wait()
	got := <-reached
	if err != nil {
		t.Fatalf("thinback %s: %v\n%s%s", strings.Join(args, " "), err, stdout.String(), got)
	}
	return string(got)
}

// storeFiles lists the delta files of a local store.
func storeFiles(t *testing.T, store string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(store, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".tbk") {
			files = append(files, p)
		}
		return err
	})
	if err != nil || len(files) == 0 {
		t.Fatalf("no delta files in %s: %v", store, err)
	}
	return files
}

// TestVerifyJSON: verify --json prints one object a program can read, for
// a sound store, for files, and for a damaged file (exit 10).
func TestVerifyJSON(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("verified as JSON\n"), 50000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	delta := storeFiles(t, filepath.Join(work, "store"))[0]

	decode := func(args ...string) (verifyJSON, int) {
		t.Helper()
		var stdout, stderr bytes.Buffer
		cmd := thinbackCmd(t, work, append(args, "--json")...)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var v verifyJSON
		dec := json.NewDecoder(&stdout)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("verify %q --json: %v\n%s%s", args, err, stdout.String(), stderr.String())
		}
		return v, code
	}
	v, code := decode("verify", "--store", "store")
	if code != 0 || !v.OK || len(v.Files) != 1 || !v.Files[0].OK || v.Files[0].Volume != "disk.img" || v.Files[0].Seq != 1 || v.Files[0].Size == 0 {
		t.Errorf("sound store: exit %d, %+v", code, v)
	}
	v, code = decode("verify", delta)
	if code != 0 || !v.OK || len(v.Files) != 1 || v.Files[0].File != delta {
		t.Errorf("a file: exit %d, %+v", code, v)
	}

	b, err := os.ReadFile(delta)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	if err := os.WriteFile(delta, b, 0o600); err != nil {
		t.Fatal(err)
	}
	v, code = decode("verify", "--store", "store")
	if code != 10 || v.OK || len(v.Files) != 1 || v.Files[0].OK || v.Files[0].Error == "" {
		t.Errorf("damaged store: exit %d, %+v", code, v)
	}
	v, code = decode("verify", delta)
	if code != 10 || v.OK || v.Files[0].OK || v.Files[0].Error == "" {
		t.Errorf("a damaged file: exit %d, %+v", code, v)
	}
}

// TestPruneProgressOnTerminal: a prune that merges draws its line on a
// terminal, and not with --json.
func TestPruneProgressOnTerminal(t *testing.T) {
	for _, extra := range [][]string{nil, {"--json"}} {
		work := t.TempDir()
		img := bytes.Repeat([]byte("pruned under a progress line\n"), 100000)
		for i := 0; i < 3; i++ {
			copy(img[i*100000:], bytes.Repeat([]byte{byte('A' + i)}, 5000))
			if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, work, "backup", "--file", "disk.img", "--store", "store")
		}
		got := onTerminal(t, work, append([]string{"prune", "--store", "store", "--keep-last", "1"}, extra...)...)
		if extra == nil && !strings.Contains(got, "\r\033[K") {
			t.Errorf("prune on a terminal: %q, want a progress line, erased", got)
		}
		if extra != nil && strings.Contains(got, "\033[") {
			t.Errorf("prune --json on a terminal: %q", got)
		}
		run(t, work, "verify", "--store", "store")
		r := run(t, work, "list", "--store", "store")
		if strings.Count(r, "disk.img") < 1 {
			t.Errorf("list after prune: %s", r)
		}
	}
}
