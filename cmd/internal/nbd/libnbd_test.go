package nbd_test

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

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

// TestLibnbd: libnbd's own client lists the exports with their sizes,
// read-only (nbdinfo), and copies each byte for byte over several
// connections at once (nbdcopy); an unknown export is refused with its
// name.
func TestLibnbd(t *testing.T) {
	nbdtest.NeedLibnbd(t)
	exports := libnbdExports(t)
	sock, _, _ := listenTest(t, exports, nbd.Options{})
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	sizes := nbdtest.NbdinfoList(t, uri(""))
	want := map[string]int64{"vg0/a": int64(len(exports["vg0/a"])), "vg0/a@1": int64(len(exports["vg0/a@1"]))}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --list: %v, want %v", sizes, want)
	}
	for name, b := range exports {
		nbdtest.Nbdcopy(t, uri(name), b)
	}
	out, err := exec.Command("nbdinfo", uri("vg0/b")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "vg0/b") {
		t.Fatalf("nbdinfo of an export that does not exist: %v\n%s", err, out)
	}
}

// TestLibnbdTLS: over TLS with client certificates (nbds+unix:// and
// libnbd's tls-certificates directory), nbdinfo gives an export's size
// and nbdcopy copies it byte for byte; without TLS, libnbd gets no
// answer.
func TestLibnbdTLS(t *testing.T) {
	nbdtest.NeedLibnbd(t)
	exports := libnbdExports(t)
	pki := t.TempDir()
	ca := nbdtest.PKI(t, pki)
	sock, _, _ := listenTest(t, exports, nbd.Options{TLS: serverTLS(t, pki, ca)})
	uri := "nbds+unix:///vg0/a?socket=" + sock + "&tls-certificates=" + pki
	out, err := exec.Command("nbdinfo", "--size", uri).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != strconv.Itoa(len(exports["vg0/a"])) {
		t.Fatalf("nbdinfo over TLS: %v\n%s", err, out)
	}
	nbdtest.Nbdcopy(t, uri, exports["vg0/a"])
	out, err = exec.Command("nbdinfo", "--size", "nbd+unix:///vg0/a?socket="+sock).CombinedOutput()
	if err == nil {
		t.Fatalf("nbdinfo without TLS got an answer: %s", out)
	}
}
