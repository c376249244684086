package nbd_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// needLibnbd skips the test when libnbd's tools are not installed
// (Debian's libnbd-bin), unless THINBACK_REQUIRE_VM=1 asks for them.
func needLibnbd(t *testing.T) {
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

// libnbdExports are two exports of random bytes, of sizes that are not
// a multiple of a block.
func libnbdExports(t *testing.T) memExports {
	t.Helper()
	r := testRand(t)
	a, b := make([]byte, 5<<20+123), make([]byte, 777)
	r.Read(a)
	r.Read(b)
	return memExports{"vg0/a": a, "vg0/a@1": b}
}

// nbdcopy copies the export at uri to a file and checks it holds want.
func nbdcopy(t *testing.T, uri string, want []byte) {
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

// TestLibnbd: libnbd's own client lists the exports with their sizes,
// read-only (nbdinfo), and copies each byte for byte over several
// connections at once (nbdcopy); an unknown export is refused with its
// name.
func TestLibnbd(t *testing.T) {
	needLibnbd(t)
	exports := libnbdExports(t)
	sock, _, _ := listenTest(t, exports, nbd.Options{})
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	out, err := exec.Command("nbdinfo", "--list", "--json", uri("")).CombinedOutput()
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
	sizes := map[string]int{}
	for _, e := range list.Exports {
		if !e.ReadOnly {
			t.Fatalf("export %s is not read-only", e.Name)
		}
		sizes[e.Name] = int(e.Size)
	}
	want := map[string]int{"vg0/a": len(exports["vg0/a"]), "vg0/a@1": len(exports["vg0/a@1"])}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --list: %v, want %v", sizes, want)
	}
	for name, b := range exports {
		nbdcopy(t, uri(name), b)
	}
	out, err = exec.Command("nbdinfo", uri("vg0/b")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "vg0/b") {
		t.Fatalf("nbdinfo of an export that does not exist: %v\n%s", err, out)
	}
}

// TestLibnbdTLS: over TLS with client certificates (nbds+unix:// and
// libnbd's tls-certificates directory), nbdinfo gives an export's size
// and nbdcopy copies it byte for byte; without TLS, libnbd gets no
// answer.
func TestLibnbdTLS(t *testing.T) {
	needLibnbd(t)
	exports := libnbdExports(t)
	pki := t.TempDir()
	ca := nbdtest.PKI(t, pki)
	sock, _, _ := listenTest(t, exports, nbd.Options{TLS: serverTLS(t, pki, ca)})
	uri := "nbds+unix:///vg0/a?socket=" + sock + "&tls-certificates=" + pki
	out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(len(exports["vg0/a"])) {
		t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
	}
	nbdcopy(t, uri, exports["vg0/a"])
	out, err = exec.Command("nbdinfo", "--size", "nbd+unix:///vg0/a?socket="+sock).CombinedOutput()
	if err == nil {
		t.Fatalf("nbdinfo without TLS got an answer: %s", out)
	}
}
