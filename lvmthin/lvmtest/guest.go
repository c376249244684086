// Package lvmtest runs a package's tests inside a User-Mode Linux guest,
// where device-mapper, thin pools and loop devices are real (see
// scripts/uml/README.md). It is for tests only.
package lvmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// InGuest reports whether the tests run inside a scripts/uml/run guest.
func InGuest() bool { return os.Getenv("THINBACK_GUEST") == "1" }

// RequireVM reports whether the guest tests must run (THINBACK_REQUIRE_VM=1,
// as CI sets it): then an unavailable guest fails the test instead of
// skipping it.
func RequireVM() bool { return os.Getenv("THINBACK_REQUIRE_VM") == "1" }

// Options tune RunGuest.
type Options struct {
	// Pattern selects the guest tests (-test.run); THINBACK_GUEST_RUN
	// overrides it.
	Pattern string
	// Timeout for the whole guest run.
	Timeout time.Duration
	// Mem is the guest's memory ("1G" when empty).
	Mem string
	// TestData is a directory (relative to the package) the guest tests
	// read. It is copied into the work dir, which the guest always sees
	// (the repository may not be visible: the guest has its own /tmp),
	// and its path there is passed as THINBACK_GUEST_TESTDATA.
	TestData string
}

// TestDataDir returns where the guest tests find the directory passed as
// Options.TestData, or def outside a guest run.
func TestDataDir(def string) string {
	if d := os.Getenv("THINBACK_GUEST_TESTDATA"); d != "" {
		return d
	}
	return def
}

// RunGuest compiles the test binary of the package in the current
// directory, boots a guest with scripts/uml/run (found from root, the
// repository root) and runs the binary there with opts.Pattern. The host
// side skips without root or linux.uml, unless RequireVM.
func RunGuest(t *testing.T, root string, opts Options) {
	t.Helper()
	if InGuest() {
		t.Skip("already inside the guest")
	}
	unavailable := func(why string) {
		t.Helper()
		if RequireVM() {
			t.Fatalf("cannot run the real-kernel tests: %s (THINBACK_REQUIRE_VM=1)", why)
		}
		t.Skipf("real-kernel tests skipped: %s (set THINBACK_REQUIRE_VM=1 to fail instead)", why)
	}
	if testing.Short() && !RequireVM() {
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
	runScript, err := filepath.Abs(filepath.Join(root, "scripts", "uml", "run"))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "guest.test")
	// go test puts its own GOROOT/bin first on the PATH of test binaries,
	// so this is the go command that runs the test.
	goBin, err := exec.LookPath("go")
	if err != nil {
		unavailable("the go command is not on PATH")
	}
	start := time.Now()
	if out, err := exec.Command(goBin, "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	t.Logf("test binary built in %v", time.Since(start).Round(time.Millisecond))

	pattern := opts.Pattern
	if p := os.Getenv("THINBACK_GUEST_RUN"); p != "" {
		pattern = p
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 10 * time.Minute
	}
	mem := opts.Mem
	if mem == "" {
		mem = "1G"
	}
	var env []string
	if opts.TestData != "" {
		dst := filepath.Join(work, "testdata")
		if out, err := exec.Command("cp", "-r", opts.TestData, dst).CombinedOutput(); err != nil {
			t.Fatalf("copying %s for the guest: %v\n%s", opts.TestData, err, out)
		}
		env = append(env, "--env", "THINBACK_GUEST_TESTDATA="+dst)
	}
	args := append(env, "--workdir", work, "--mem", mem, "--timeout", strconv.Itoa(int(timeout.Seconds())+60), "--",
		bin, "-test.run", pattern, "-test.count", "1", "-test.timeout", strconv.Itoa(int(timeout.Seconds()))+"s")
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
