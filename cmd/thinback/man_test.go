package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const manDir = "../../docs/man"

// TestManPages: the pages shipped in docs/man are exactly what the command
// definitions generate, so a flag added without regenerating them fails
// here; and each renders without a warning from groff.
func TestManPages(t *testing.T) {
	pages, err := manPages(newApp(nil, &bytes.Buffer{}, &bytes.Buffer{}))
	if err != nil {
		t.Fatal(err)
	}
	const fix = "regenerate them: go generate ./cmd/thinback"
	for name, want := range pages {
		got, err := os.ReadFile(filepath.Join(manDir, name))
		if err != nil {
			t.Errorf("man page %s: %v; %s", name, err, fix)
			continue
		}
		if string(got) != want {
			t.Errorf("docs/man/%s differs from what the commands generate; %s", name, fix)
		}
	}
	shipped, err := filepath.Glob(filepath.Join(manDir, "thinback*.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range shipped {
		if _, ok := pages[filepath.Base(p)]; !ok {
			t.Errorf("docs/man/%s is of no command; %s", filepath.Base(p), fix)
		}
	}
	if len(pages) < 2 || !strings.Contains(pages["thinback-backup.1"], "--keep-daily") {
		t.Fatalf("the pages lack the commands' options: %d pages", len(pages))
	}

	groff := needTool(t, "groff")
	for _, p := range shipped {
		// -k: through preconv, as man renders a page; -ww: every warning.
		cmd := exec.Command(groff, "-k", "-man", "-Tutf8", "-ww", "-z", p)
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("groff %s: %v\n%s", p, err, out)
		}
	}
}

// TestManGenerate: thinback help --man DIR writes the pages, and removes a
// page of a command that no longer exists.
func TestManGenerate(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "thinback-frobnicate.1")
	if err := os.WriteFile(stale, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := newApp(nil, &out, &errb).Run([]string{"thinback", "help", "--man", dir}); err != nil {
		t.Fatalf("help --man: %v\n%s", err, errb.String())
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("the page of a command that is gone was kept: %v", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "thinback.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(".SH COMMANDS")) || !bytes.Contains(b, []byte("backup")) {
		t.Errorf("thinback.1 has no commands:\n%s", b)
	}
	if err := newApp(nil, &out, &errb).Run([]string{"thinback", "help", "--man"}); exitCode(err) != 2 {
		t.Errorf("help --man without a directory: %v (exit %d), want a usage error", err, exitCode(err))
	}
}

// needTool returns the path of a program the test runs; without it the
// test is skipped, except under CI (CI=true), where scripts/test installs
// it and its absence is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (scripts/test installs it): %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}
