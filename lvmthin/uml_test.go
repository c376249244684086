package lvmthin

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// inGuest reports whether the tests run inside a scripts/uml/run guest,
// where the TestKernel* tests have root, device-mapper and loop devices.
func inGuest() bool { return os.Getenv("THINBACK_GUEST") == "1" }

// TestGuest runs this package's TestKernel* tests against a real kernel:
// it compiles the test binary, boots a User-Mode Linux guest with
// scripts/uml/run and runs the binary there. It skips without root or
// linux.uml, unless THINBACK_REQUIRE_VM=1 (CI), which makes it fail.
//
// THINBACK_GUEST_RUN narrows the guest tests (a -test.run pattern);
// THINBACK_SEED is passed on to replay random choices.
func TestGuest(t *testing.T) {
	if inGuest() {
		t.Skip("already inside the guest")
	}
	unavailable := func(why string) {
		t.Helper()
		if requireVM() {
			t.Fatalf("cannot run the real-kernel tests: %s (THINBACK_REQUIRE_VM=1)", why)
		}
		t.Skipf("real-kernel tests skipped: %s (set THINBACK_REQUIRE_VM=1 to fail instead)", why)
	}
	if testing.Short() && !requireVM() {
		t.Skip("real-kernel tests skipped in -short mode")
	}
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		unavailable("User-Mode Linux needs linux/amd64")
	}
	if os.Geteuid() != 0 {
		unavailable("not root")
	}
	if _, err := exec.LookPath("linux.uml"); err != nil {
		unavailable("linux.uml not found (apt-get install user-mode-linux)")
	}
	runScript, err := filepath.Abs(filepath.Join("..", "scripts", "uml", "run"))
	if err != nil {
		t.Fatal(err)
	}

	work := t.TempDir()
	bin := filepath.Join(work, "lvmthin.test")
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		goBin = "go"
	}
	start := time.Now()
	if out, err := exec.Command(goBin, "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	t.Logf("test binary built in %v", time.Since(start).Round(time.Millisecond))

	pattern := "^TestKernel"
	if p := os.Getenv("THINBACK_GUEST_RUN"); p != "" {
		pattern = p
	}
	args := []string{"--workdir", work, "--timeout", "400", "--",
		bin, "-test.run", pattern, "-test.count", "1", "-test.timeout", "360s"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(runScript, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start = time.Now()
	err = cmd.Run()
	t.Logf("guest ran for %v; its output:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("guest tests failed: %v", err)
	}
	// A pattern that matched nothing would pass silently.
	if !strings.Contains(out.String(), "PASS") || strings.Contains(out.String(), "no tests to run") {
		t.Fatalf("the guest ran no test")
	}
}
