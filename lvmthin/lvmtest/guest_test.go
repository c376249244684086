package lvmtest

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSkipHelper is run by TestCheckEvents as a child: its subtests pass
// or skip as LVMTEST_HELPER says.
func TestSkipHelper(t *testing.T) {
	mode := os.Getenv("LVMTEST_HELPER")
	if mode == "" {
		t.Skip("helper of TestCheckEvents")
	}
	t.Run("runs", func(t *testing.T) {})
	t.Run("needs", func(t *testing.T) {
		if mode == "skip" {
			t.Skip("nbd-client not found")
		}
	})
}

// events runs TestSkipHelper as a guest run runs its tests
// (-test.v=test2json, then go tool test2json) and parses the events.
func events(t *testing.T, mode string) TestEvents {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestSkipHelper$", "-test.v=test2json")
	cmd.Env = append(os.Environ(), "LVMTEST_HELPER="+mode)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	conv := exec.Command("go", "tool", "test2json", "-t")
	conv.Stdin = bytes.NewReader(out)
	ev, err := conv.Output()
	if err != nil {
		t.Fatalf("go tool test2json: %v", err)
	}
	res, err := ParseTestEvents(bytes.NewReader(ev))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCheckEvents: a guest run whose tests pass is accepted; one where a
// test skipped (and go test still says ok) is refused, naming the test,
// unless Options.MaySkip allows that test's skip; a run of no test is
// refused.
func TestCheckEvents(t *testing.T) {
	if msg := events(t, "pass").Check(nil); msg != "" {
		t.Fatalf("a run that passed: %s", msg)
	}
	skipped := events(t, "skip")
	if !skipped.PackagePassed || len(skipped.Failed) > 0 {
		t.Fatalf("the helper with a skip did not end ok: %+v", skipped)
	}
	msg := skipped.Check(nil)
	if !strings.Contains(msg, "TestSkipHelper/needs") || strings.Contains(msg, "TestSkipHelper/runs") {
		t.Fatalf("a run with a skipped test: %q, want the skipped test named", msg)
	}
	if !strings.Contains(skipped.Output, "nbd-client not found") {
		t.Fatalf("the skip message is not in the output:\n%s", skipped.Output)
	}
	if msg := skipped.Check(map[string]string{"TestSkipHelper/needs": "may lack it"}); msg != "" {
		t.Fatalf("an allowed skip: %s", msg)
	}
	none, err := ParseTestEvents(strings.NewReader(`{"Action":"output","Output":"testing: warning: no tests to run\n"}` + "\n" + `{"Action":"pass"}` + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if msg := none.Check(nil); !strings.Contains(msg, "no test") {
		t.Fatalf("a run of no test: %q", msg)
	}
}
