package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestWorstExit(t *testing.T) {
	for _, c := range []struct {
		codes []int
		want  int
	}{
		{nil, 0},
		{[]int{0, 0, 0}, 0},
		{[]int{0, 7, 0}, 7},
		{[]int{9, 7, 1}, 9},
		{[]int{15, 130, 2}, 130},
		{[]int{130, 0}, 130},
		{[]int{0, 1}, 1},
	} {
		if got := worstExit(c.codes); got != c.want {
			t.Errorf("worstExit(%v) = %d, want %d", c.codes, got, c.want)
		}
	}
}

// A multiError exits with its code, and Main does not print it again
// (each failure was printed): it is a reportedError, wrapped or not.
func TestMultiErrorExit(t *testing.T) {
	for _, err := range []error{
		multiError{code: 7, failed: 1, total: 3},
		fmt.Errorf("run: %w", multiError{code: 7, failed: 1, total: 3}),
	} {
		if c := exitCode(err); c != 7 {
			t.Errorf("exitCode(%v) = %d, want 7", err, c)
		}
		if !errors.As(err, new(reportedError)) {
			t.Errorf("%v is not a reportedError", err)
		}
	}
	if c := exitCode(multiError{code: exitInterrupted, failed: 2, total: 2}); c != exitInterrupted {
		t.Errorf("interrupted: exit %d", c)
	}
}

func TestBackupSeveralUsage(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--volume", "x", "vg0/a", "vg0/b"}, "--volume"},
		{[]string{"--volume", "x", "--all", "vg0"}, "--volume"},
		{[]string{"--exclude", "a", "vg0/a", "vg0/b"}, "--exclude is for --all"},
		{[]string{"--all", "vg0", "--exclude", "[a"}, `--exclude "[a"`},
		{[]string{"--all", "vg0", "--exclude", "vg0/a"}, `--exclude "vg0/a"`},
		{[]string{"--all", "vg0", "vg0/a"}, "--all VG or VG/LV"},
		{[]string{"--all", "vg0", "--file", "x.img"}, "--all VG or VG/LV"},
		{[]string{"vg0/a", "vg0/b", "vg0/a"}, "vg0/a is given twice"},
		{[]string{"vg0/a", "nonsense"}, "nonsense"},
		{[]string{"--file", "x.img", "vg0/a", "vg0/b"}, "not both"},
	} {
		r := thinback(t, dir, "", append([]string{"backup", "--store", store}, c.args...)...)
		r.want(t, exitUsage, strings.Join(c.args, " "))
		if !strings.Contains(r.stderr, c.msg) {
			t.Errorf("backup %s: %q does not say %q", strings.Join(c.args, " "), r.stderr, c.msg)
		}
	}
	if _, err := os.Stat(store); err == nil {
		t.Error("a refused command line made the store")
	}
}

// readMetrics parses a metrics file with Prometheus' text parser and
// returns the values by metric name and volume label.
func readMetrics(t *testing.T, path string) map[string]map[string]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("expfmt: %v", err)
	}
	out := map[string]map[string]float64{}
	for name, fam := range fams {
		out[name] = map[string]float64{}
		for _, m := range fam.Metric {
			out[name][label(m, "volume")] = m.GetGauge().GetValue()
		}
	}
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// --metrics-file after a backup that worked and after one that failed:
// the failure keeps the last success time and records its exit code.
func TestBackupMetricsFile(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("thinback"), 128<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	prom := filepath.Join(dir, "thinback.prom")
	thinback(t, dir, "", "backup", "--file", img, "--store", store, "--metrics-file", prom).want(t, 0, "first backup")
	thinback(t, dir, "", "backup", "--file", img, "--store", store, "--metrics-file", prom).want(t, 0, "second backup")
	m := readMetrics(t, prom)
	const vol = "disk.img"
	success := m["thinback_last_success_timestamp_seconds"][vol]
	if success == 0 || m["thinback_last_run_timestamp_seconds"][vol] != success {
		t.Errorf("after success: last success %v, last run %v", success, m["thinback_last_run_timestamp_seconds"][vol])
	}
	for name, want := range map[string]float64{
		"thinback_last_run_exit_code":     0,
		"thinback_chain_length":           2,
		"thinback_last_run_read_bytes":    1 << 20,
		"thinback_last_run_changed_bytes": 0,
	} {
		if got, ok := m[name][vol]; !ok || got != want {
			t.Errorf("after success: %s = %v (%v), want %v", name, got, ok, want)
		}
	}
	if m["thinback_store_bytes"][vol] <= 0 {
		t.Errorf("store bytes %v", m["thinback_store_bytes"][vol])
	}

	// A failed run (its --pre hook fails), with the file given by the
	// environment.
	cmd := thinbackCmd(t, dir, "backup", "--file", img, "--store", store, "--pre", "exit 3")
	cmd.Env = append(cmd.Env, "THINBACK_METRICS_FILE="+prom)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("backup with a failing --pre worked:\n%s", out)
	}
	m = readMetrics(t, prom)
	if got := m["thinback_last_success_timestamp_seconds"][vol]; got != success {
		t.Errorf("after failure: last success %v, want %v as before", got, success)
	}
	if got := m["thinback_last_run_exit_code"][vol]; got != exitError {
		t.Errorf("after failure: exit code %v, want %d", got, exitError)
	}
	if got := m["thinback_last_run_timestamp_seconds"][vol]; got < success {
		t.Errorf("after failure: last run %v before the last success %v", got, success)
	}
	if got := m["thinback_chain_length"][vol]; got != 2 {
		t.Errorf("after failure: chain length %v, want 2 as before", got)
	}

	// A metrics file that cannot be written fails a backup that worked.
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store, "--metrics-file", filepath.Join(dir, "none", "m.prom"))
	r.want(t, exitError, "backup with an unwritable metrics file")
	if !strings.Contains(r.stderr, filepath.Join(dir, "none", "m.prom")) {
		t.Errorf("the error does not name the metrics file: %s", r.stderr)
	}
}

// Several volumes that all fail (no such volume group): each error on
// its own line naming the volume and as a JSON object, a last line
// naming them, the worst exit code, and the metrics of each. Whether LVM
// is installed decides the code, not the shape. The guest's
// multi-volume.txtar backs up real LVs.
func TestBackupSeveralFailing(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	prom := filepath.Join(dir, "m.prom")
	r := thinback(t, dir, "", "backup", "--json", "--store", store, "--metrics-file", prom, "vgmvnone/a", "vgmvnone/b")
	if r.code == 0 {
		t.Fatal("backup of volumes that do not exist worked")
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d JSON lines, want 2:\n%s", len(lines), r.stdout)
	}
	for i, l := range lines {
		var f volumeFailure
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("line %d: %v: %s", i, err, l)
		}
		want := []string{"vgmvnone/a", "vgmvnone/b"}[i]
		if f.Volume != want || f.Error == "" || f.ExitCode != r.code {
			t.Errorf("line %d: %+v, want volume %s, an error, exit %d", i, f, want, r.code)
		}
		if !strings.Contains(r.stderr, "thinback: "+want+": ") {
			t.Errorf("no error line naming %s:\n%s", want, r.stderr)
		}
	}
	last := fmt.Sprintf("backup: 2 of 2 volumes failed: vgmvnone/a (exit %d), vgmvnone/b (exit %d)\n", r.code, r.code)
	if !strings.HasSuffix(r.stderr, last) {
		t.Errorf("stderr does not end with %q:\n%s", last, r.stderr)
	}
	m := readMetrics(t, prom)
	for _, v := range []string{"vgmvnone/a", "vgmvnone/b"} {
		if got, ok := m["thinback_last_run_exit_code"][v]; !ok || got != float64(r.code) {
			t.Errorf("%s: exit code in the metrics %v (%v), want %d", v, got, ok, r.code)
		}
	}
	if _, ok := m["thinback_last_success_timestamp_seconds"]; ok {
		t.Error("a last success time for volumes that never succeeded")
	}
}
