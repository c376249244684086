package nbdtest

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NeedLibnbd skips the test when libnbd's tools are not installed
// (Debian's libnbd-bin), unless THINBACK_REQUIRE_VM=1 asks for them.
func NeedLibnbd(t testing.TB) {
	t.Helper()
	for _, p := range []string{"nbdinfo", "nbdcopy"} {
		if _, err := exec.LookPath(p); err != nil {
			if os.Getenv("THINBACK_REQUIRE_VM") == "1" {
				t.Fatalf("%s not found (apt-get install libnbd-bin): THINBACK_REQUIRE_VM=1 needs it", p)
			}
			t.Skipf("%s not found (apt-get install libnbd-bin)", p)
		}
	}
}

// NbdinfoList lists the exports of the server at uri with nbdinfo and
// returns their sizes by name; an export not flagged read-only fails
// the test.
func NbdinfoList(t testing.TB, uri string) map[string]int64 {
	t.Helper()
	out, err := exec.Command("nbdinfo", "--list", "--json", uri).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdinfo --list: %v\n%s", err, out)
	}
	var list struct {
		Exports []struct {
			Name     string `json:"export-name"`
			Size     int64  `json:"export-size"`
			ReadOnly bool   `json:"is_read_only"`
		} `json:"exports"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("nbdinfo --list --json: %v\n%s", err, out)
	}
	sizes := map[string]int64{}
	for _, e := range list.Exports {
		if !e.ReadOnly {
			t.Fatalf("export %s is not read-only", e.Name)
		}
		sizes[e.Name] = e.Size
	}
	return sizes
}

// Nbdcopy copies the export at uri to a new file with nbdcopy over four
// connections and checks that the file holds want.
func Nbdcopy(t testing.TB, uri string, want []byte) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy.img")
	if out, err := exec.Command("nbdcopy", "--connections=4", uri, dst).CombinedOutput(); err != nil {
		t.Fatalf("nbdcopy %s: %v\n%s", uri, err, out)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("nbdcopy %s: %d bytes (%v), not the export's %d", uri, len(got), err, len(want))
	}
}
