package metrics

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// parse reads the file with Prometheus' own text parser, as the textfile
// collector does, and returns every sample by metric name and volume.
func parse(t *testing.T, path string) map[string]map[string]*dto.Metric {
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
	out := map[string]map[string]*dto.Metric{}
	for name, fam := range fams {
		if fam.GetType() != dto.MetricType_GAUGE {
			t.Errorf("%s: type %v, want gauge", name, fam.GetType())
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s: no HELP", name)
		}
		out[name] = map[string]*dto.Metric{}
		for _, m := range fam.Metric {
			labels := map[string]string{}
			for _, l := range m.Label {
				labels[l.GetName()] = l.GetValue()
			}
			id := labels["command"] + " " + labels["job"] + " " + labels["store"] + " " + labels["volume"]
			out[name][id] = m
		}
	}
	return out
}

func value(t *testing.T, got map[string]map[string]*dto.Metric, name, id string) float64 {
	t.Helper()
	m, ok := got[name][id]
	if !ok {
		t.Fatalf("no %s{%s}", name, id)
	}
	return m.GetGauge().GetValue()
}

func TestUpdateSuccessThenFailure(t *testing.T) {
	path := filepath.Join(t.TempDir(), "thinback.prom")
	t0 := time.Date(2026, 12, 1, 2, 0, 0, 0, time.UTC)
	ok := Outcome{Volume: "vg0/vm1", Store: "/srv/backup", Command: "backup",
		Start: t0, End: t0.Add(90 * time.Second), BytesRead: 1 << 20, BytesChanged: 3 << 20, BytesStored: 4096,
		LVMSeconds: 1.25, ChainLength: 3, StoreBytes: 123456}
	other := Outcome{Job: "nightly", Volume: `vg0/odd"name\`, Store: "s3://b/p", Command: "backup",
		Start: t0, End: t0.Add(time.Second), ExitCode: 0, ChainLength: 1, StoreBytes: 10}
	if err := Update(path, []Outcome{ok, other}); err != nil {
		t.Fatal(err)
	}
	const id = "backup  /srv/backup vg0/vm1"
	got := parse(t, path)
	for name, want := range map[string]float64{
		"thinback_last_success_timestamp_seconds": float64(t0.Unix() + 90),
		"thinback_last_run_timestamp_seconds":     float64(t0.Unix() + 90),
		"thinback_last_run_exit_code":             0,
		"thinback_last_run_duration_seconds":      90,
		"thinback_last_run_read_bytes":            1 << 20,
		"thinback_last_run_changed_bytes":         3 << 20,
		"thinback_last_run_stored_bytes":          4096,
		"thinback_last_run_lvm_seconds":           1.25,
		"thinback_chain_length":                   3,
		"thinback_store_bytes":                    123456,
	} {
		if v := value(t, got, name, id); v != want {
			t.Errorf("after success: %s = %v, want %v", name, v, want)
		}
	}
	// Plain numbers, as grep in a shell script and a person read them.
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`volume="vg0/vm1"} 1048576` + "\n", `volume="vg0/vm1"} ` + strconv.FormatInt(t0.Unix()+90, 10) + "\n"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("the file holds no %q:\n%s", want, raw)
		}
	}
	if v := value(t, got, "thinback_chain_length", `backup nightly s3://b/p vg0/odd"name\`); v != 1 {
		t.Errorf("the other volume's chain length %v, want 1", v)
	}

	// A failed run of vg0/vm1: its last success stays, the rest is the
	// failed run's; the other volume is kept as it was.
	t1 := t0.Add(24 * time.Hour)
	failed := Outcome{Volume: "vg0/vm1", Store: "/srv/backup", Command: "backup",
		Start: t1, End: t1.Add(2 * time.Second), ExitCode: 7}
	if err := Update(path, []Outcome{failed}); err != nil {
		t.Fatal(err)
	}
	got = parse(t, path)
	for name, want := range map[string]float64{
		"thinback_last_success_timestamp_seconds": float64(t0.Unix() + 90),
		"thinback_last_run_timestamp_seconds":     float64(t1.Unix() + 2),
		"thinback_last_run_exit_code":             7,
		"thinback_last_run_duration_seconds":      2,
		"thinback_last_run_read_bytes":            0,
		"thinback_last_run_stored_bytes":          0,
		"thinback_chain_length":                   3, // unknown to the failed run
		"thinback_store_bytes":                    123456,
	} {
		if v := value(t, got, name, id); v != want {
			t.Errorf("after failure: %s = %v, want %v", name, v, want)
		}
	}
	if v := value(t, got, "thinback_last_success_timestamp_seconds", `backup nightly s3://b/p vg0/odd"name\`); v != float64(t0.Unix()+1) {
		t.Errorf("the other volume's last success %v, want %v", v, t0.Unix()+1)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("the directory holds %d files, want the metrics file alone", len(entries))
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v (%v), want 0644", st.Mode(), err)
	}
}

// A volume that never succeeded has no last success time, not a zero.
func TestUpdateFailureFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.prom")
	now := time.Now()
	if err := Update(path, []Outcome{{Volume: "vg0/new", Store: "st", Command: "backup", Start: now, End: now, ExitCode: 9}}); err != nil {
		t.Fatal(err)
	}
	got := parse(t, path)
	if _, ok := got["thinback_last_success_timestamp_seconds"]; ok {
		t.Error("a last success time for a volume that never succeeded")
	}
	if v := value(t, got, "thinback_last_run_exit_code", "backup  st vg0/new"); v != 9 {
		t.Errorf("exit code %v, want 9", v)
	}
}

func TestUpdateReplacesForeignFile(t *testing.T) {
	for name, content := range map[string]string{
		"foreign": "# HELP node_x something\n# TYPE node_x gauge\nnode_x 1\n",
		"damaged": "thinback_last_run_exit_code{command=\"backup\",job=\"\",store=\"s\",volume=\"v\"} 0\nthinback_last_run_exit_code{command=\"backup\",job=\"\",sto",
		"binary":  "\x00\x01\x02",
		"NaN":     "thinback_last_run_exit_code{command=\"backup\",job=\"\",store=\"s\",volume=\"v\"} NaN\n",
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "m.prom")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			err := Update(path, []Outcome{{Volume: "vg0/a", Store: "st", Command: "backup", Start: now, End: now}})
			if !errors.Is(err, ErrReplaced) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Update: %v, want ErrReplaced naming the file", err)
			}
			got := parse(t, path)
			if len(got["thinback_last_run_exit_code"]) != 1 {
				t.Errorf("series %v, want vg0/a's alone", got["thinback_last_run_exit_code"])
			}
			// The next update reads what the replacement wrote.
			if err := Update(path, []Outcome{{Volume: "vg0/b", Store: "st", Command: "backup", Start: now, End: now}}); err != nil {
				t.Fatal(err)
			}
			if n := len(parse(t, path)["thinback_last_run_exit_code"]); n != 2 {
				t.Errorf("%d series, want 2", n)
			}
		})
	}
}

// What format writes, read parses back to the same series, whatever the
// label values hold.
func TestRoundTrip(t *testing.T) {
	series := map[key]values{
		{"backup", "", "/srv/b", "vg0/vm1"}:          {"thinback_last_run_exit_code": 0, "thinback_last_run_lvm_seconds": 0.125},
		{"copy", "j\n2", `s3://x/"y"\`, "vg/ü"}:      {"thinback_store_bytes": 1e15, "thinback_last_run_timestamp_seconds": 1765159200.123},
		{"backup", "a,b", "c} d", "v=\"1\",w=\"2\""}: {"thinback_chain_length": math.MaxInt32},
	}
	path := filepath.Join(t.TempDir(), "m.prom")
	if err := write(path, format(series)); err != nil {
		t.Fatal(err)
	}
	back, err := read(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(series) {
		t.Fatalf("%d series back, want %d", len(back), len(series))
	}
	for k, v := range series {
		for name, x := range v {
			if back[k][name] != x {
				t.Errorf("%v %s: %v back, want %v", k, name, back[k][name], x)
			}
		}
	}
	parse(t, path) // and Prometheus reads it
}

func TestUpdateUnwritableDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "m.prom")
	now := time.Now()
	err := Update(path, []Outcome{{Volume: "v", Command: "backup", Start: now, End: now}})
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Update into a missing directory: %v, want an error naming %s", err, path)
	}
}
