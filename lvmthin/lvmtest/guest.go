// Package lvmtest runs a package's tests inside a User-Mode Linux guest,
// where device-mapper, thin pools and loop devices are real (see
// scripts/uml/README.md). It is for tests only.
package lvmtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
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
	// MaySkip names the guest tests (as go test -json names them,
	// "TestX/sub") allowed to skip there, each with the reason why the
	// guest itself may lack what they need. Any other skip in the guest
	// fails the run: the guest is where those tests must run, so a skip
	// there means a test that silently tested nothing.
	MaySkip map[string]string
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
	// -test.v=test2json frames every line with the event it belongs to;
	// go tool test2json turns that into go test -json's events, which
	// tell a skipped test from a passed one.
	args := append(env, "--workdir", work, "--mem", mem, "--timeout", strconv.Itoa(int(timeout.Seconds())+60), "--",
		bin, "-test.run", pattern, "-test.count", "1", "-test.timeout", strconv.Itoa(int(timeout.Seconds()))+"s",
		"-test.v=test2json")
	cmd := exec.Command(runScript, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start = time.Now()
	err = cmd.Run()
	conv := exec.Command(goBin, "tool", "test2json", "-t")
	conv.Stdin = bytes.NewReader(stdout.Bytes())
	events, cerr := conv.Output()
	if cerr != nil {
		t.Fatalf("go tool test2json: %v; the guest's output:\n%s%s", cerr, stdout.String(), stderr.String())
	}
	res, perr := ParseTestEvents(bytes.NewReader(events))
	t.Logf("guest ran for %v; its output:\n%s%s", time.Since(start).Round(time.Millisecond), res.Output, stderr.String())
	if perr != nil {
		t.Fatalf("reading the guest's test events: %v", perr)
	}
	if err != nil {
		t.Fatalf("guest tests failed: %v", err)
	}
	if msg := res.Check(opts.MaySkip); msg != "" {
		t.Fatal(msg)
	}
	if testing.Verbose() {
		t.Logf("in the guest: %d tests passed, %d skipped as allowed (%s)", len(res.Passed), len(res.Skipped), strings.Join(res.Skipped, ", "))
	}
}

// TestEvents is what a guest run's go test -json events say.
type TestEvents struct {
	Passed  []string // tests and subtests that passed
	Skipped []string // tests and subtests that skipped
	Failed  []string
	Output  string // every line the tests printed, in order
	// PackagePassed: the run as a whole ended with ok.
	PackagePassed bool
}

// ParseTestEvents reads go test -json events (test2json's output).
func ParseTestEvents(r io.Reader) (TestEvents, error) {
	var res TestEvents
	var out strings.Builder
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var ev struct {
			Action, Test, Output string
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return res, fmt.Errorf("event %q: %w", sc.Text(), err)
		}
		switch ev.Action {
		case "output":
			out.WriteString(ev.Output)
		case "pass":
			if ev.Test == "" {
				res.PackagePassed = true
			} else {
				res.Passed = append(res.Passed, ev.Test)
			}
		case "skip":
			if ev.Test != "" {
				res.Skipped = append(res.Skipped, ev.Test)
			}
		case "fail":
			res.Failed = append(res.Failed, ev.Test)
		}
	}
	res.Output = out.String()
	return res, sc.Err()
}

// Check returns why a guest run whose events are res must fail, or "": a
// test failed, none passed, or one skipped that may not (maySkip names
// those that may, with the reason).
func (res TestEvents) Check(maySkip map[string]string) string {
	if len(res.Failed) > 0 {
		return fmt.Sprintf("guest tests failed: %s", strings.Join(res.Failed, ", "))
	}
	if !res.PackagePassed || len(res.Passed) == 0 {
		// A pattern that matched nothing would pass silently.
		return "the guest ran no test"
	}
	var bad []string
	for _, name := range res.Skipped {
		if _, ok := maySkip[name]; !ok {
			bad = append(bad, name)
		}
	}
	if len(bad) > 0 {
		return fmt.Sprintf("in the guest, where everything they need is present, these tests skipped instead of running: %s "+
			"(see their skip messages above; a test that may skip there is named in lvmtest.Options.MaySkip with the reason)",
			strings.Join(bad, ", "))
	}
	return ""
}
