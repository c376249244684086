package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestDiscoveryFlag: send and backup refuse an unknown --discovery as a
// usage error (exit 2), before touching LVM.
func TestDiscoveryFlag(t *testing.T) {
	for _, args := range [][]string{
		{"thinback", "send", "--discovery", "fast", "vg0/snap", "-o", "x.tbk"},
		{"thinback", "backup", "--discovery", "", "vg0/vm", "--store", t.TempDir()},
	} {
		var stdout, stderr bytes.Buffer
		app := newApp(strings.NewReader(""), &stdout, &stderr)
		err := app.RunContext(context.Background(), interspersed(app, args))
		if code := exitCode(err); code != 2 || !strings.Contains(err.Error(), "--discovery") {
			t.Errorf("%v: exit %d, %v; want 2 and a message about --discovery", args[1:], code, err)
		}
	}
}
