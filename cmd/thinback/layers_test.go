package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestLayers holds the layering of the design: archive and catalog import
// nothing of ours; lvmthin and restore import only archive; only the
// command wires packages together. A package's own subpackages count as
// the package. It reads the real import graph (go list, with every
// dependency, not only direct imports), without tests.
func TestLayers(t *testing.T) {
	const module = "github.com/thinback/thinback/"
	allowed := map[string][]string{ // a top-level package -> what of ours it may use
		"archive": nil,
		"catalog": nil,
		"lvmthin": {"archive"},
		"restore": {"archive"},
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, "../../...").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("go list: %v\n%s", err, stderr)
	}
	top := func(path string) string {
		rest, ok := strings.CutPrefix(path, module)
		if !ok {
			return ""
		}
		return strings.SplitN(rest, "/", 2)[0]
	}
	seen := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		pkg := fields[0]
		layer := top(pkg)
		seen[layer] = true
		may, ruled := allowed[layer]
		if !ruled {
			continue // cmd: wires everything together
		}
		for _, dep := range fields[1:] {
			d := top(dep)
			if d == "" || d == layer {
				continue
			}
			ok := false
			for _, m := range may {
				ok = ok || d == m
			}
			if !ok {
				t.Errorf("%s imports %s: %s may use %v of thinback's packages, nothing else", pkg, dep, layer, may)
			}
		}
	}
	for layer := range allowed {
		if !seen[layer] {
			t.Errorf("go list did not list package %s: is the test looking at the module?", layer)
		}
	}
}
