package main

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
)

// TestExitCodes pins the documented exit codes: scripts depend on them.
func TestExitCodes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("apply: x.tbk: %w", err) }
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("anything"), 1},
		{usageError{msg: "bad flag"}, 2},
		{wrap(&archive.FormatError{Err: archive.ErrChecksum}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrTruncated}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrHeader}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrTrailingData}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrVersion}), 4},
		{wrap(restore.ErrMismatch), 5},
		{wrap(restore.ErrNotChain), 5},
		{wrap(restore.ErrVolumeMismatch), 5},
		{wrap(restore.ErrInterrupted), 5},
		{wrap(restore.ErrModified), 5},
		{wrap(restore.ErrTargetIsInput), 6},
		{wrap(archive.ErrFileKind), 6},
		{wrap(catalog.ErrParentSize), 5},
		{wrap(restore.ErrTargetTooSmall), 6},
		{wrap(restore.ErrTargetReadOnly), 6},
		{wrap(restore.ErrTargetBusy), 6},
		{wrap(restore.ErrBlockSize), 5},
		{wrap(catalog.ErrTooLarge), 11},
		{wrap(lvmthin.ErrNotFound), 7},
		{wrap(lvmthin.ErrNotThin), 7},
		{wrap(lvmthin.ErrPoolFailed), 7},
		{wrap(lvmthin.ErrStaleMetadataSnap), 8},
		{wrap(lvmthin.ErrMetadataSnapBusy), 8},
		{wrap(catalog.ErrLocked), 9},
		{wrap(catalog.ErrBusy), 9},
		{wrap(lvmthin.ErrLocked), 9},
		{wrap(errVerify), 10},
		{wrap(syscall.ENOSPC), 11},
		{wrap(&archive.ReadError{What: "the source", Err: &os.PathError{Op: "read", Path: "/dev/sdz", Err: syscall.EIO}}), 1},
		{wrap(&restore.WriteError{Target: "/dev/sdz", Err: syscall.EIO}), 1},
		{wrap(&restore.WriteError{Target: "/dev/sdz", Err: syscall.ENOSPC}), 11},
		{wrap(&archive.ReadError{What: "record 2", Err: context.Canceled}), 130},
		{wrap(catalog.ErrNoSpace), 11},
		{wrap(context.Canceled), 130},
		{wrap(&s3.Error{Kind: s3.ErrQuota}), 11},
		{wrap(&s3.Error{Kind: s3.ErrCredentials}), 12},
		{wrap(&s3.Error{Kind: s3.ErrClockSkew}), 12},
		{wrap(&s3.Error{Kind: s3.ErrNoBucket}), 12},
		{wrap(&s3.Error{Kind: s3.ErrNoConditional}), 12},
		{wrap(&s3.Error{Kind: s3.ErrUnavailable}), 13},
		{wrap(&s3store.LockedError{Stale: true}), 9},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}

// TestExitCodeTable: every exported sentinel error (a package-level Err*
// variable) of every package of thinback has an entry in exitCodes, and
// each entry's error, wrapped, gets its code (no earlier entry shadows
// it). The packages are parsed, so a new sentinel without a code fails
// here.
func TestExitCodeTable(t *testing.T) {
	declared := map[string]bool{}
	// Every package of the module but commands and test helpers (below a
	// folder whose name ends in "test": lvmtest, s3test, nbdtest).
	out, err := exec.Command("go", "list", "-f", "{{.Name}} {{.ImportPath}} {{.Dir}}", "../../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var pkgs []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		helper := false
		for _, el := range strings.Split(f[1], "/") {
			helper = helper || strings.HasSuffix(el, "test")
		}
		// A package internal to another tree (lvmthin/internal/...) is
		// out of cmd's reach: its parent re-exports what reaches cmd.
		if f[0] == "main" || helper || (strings.Contains(f[1], "/internal/") && !strings.Contains(f[1], "/cmd/internal/")) {
			continue
		}
		pkgs = append(pkgs, f[2])
	}
	if len(pkgs) < 15 {
		t.Fatalf("go list gave only %d packages: %q", len(pkgs), out)
	}
	for _, pkg := range pkgs {
		files, err := filepath.Glob(filepath.Join(pkg, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no Go files in %s: %v", pkg, err)
		}
		for _, file := range files {
			if strings.HasSuffix(file, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range f.Decls {
				gd, ok := d.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					for _, name := range spec.(*ast.ValueSpec).Names {
						if strings.HasPrefix(name.Name, "Err") && name.IsExported() {
							declared[filepath.Base(pkg)+"."+name.Name] = true
						}
					}
				}
			}
		}
	}
	if len(declared) < 40 {
		t.Fatalf("found only %d sentinels: is the parse looking at the packages?", len(declared))
	}
	// The names the table lists, from exit.go's own source.
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "exit.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "exitCodes" {
			return true
		}
		ast.Inspect(vs, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok {
					listed[x.Name+"."+sel.Sel.Name] = true
				}
			}
			return true
		})
		return false
	})
	for name := range declared {
		if !listed[name] {
			t.Errorf("%s has no exit code: add it to exitCodes in exit.go", name)
		}
	}
	for _, c := range exitCodes {
		if got := exitCode(fmt.Errorf("some command: %w", c.err)); got != c.code {
			t.Errorf("exitCode(%v) = %d, but its entry says %d (an earlier entry matches it)", c.err, got, c.code)
		}
	}
}
