// Package metrics writes what thinback's runs did into a file of
// node_exporter's textfile collector: one series per volume, store, job
// and command, which a site's Prometheus alerts on ("no successful backup
// of vg0/vm1 for 26 hours").
//
// The file is read back and merged on every update, so one file can serve
// every volume and every job of a host: a run replaces the series of the
// volumes it ran and keeps the others, and a failed run keeps its volume's
// last success time. The file is replaced atomically (a temporary file in
// the same directory, fsync, rename, fsync of the directory), so the
// collector never reads half of it, and updates by several thinback runs
// at once are serialized by a lock on the directory.
package metrics

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/catalog"
	"golang.org/x/sys/unix"
)

// Outcome is what one run of a command did to one volume.
type Outcome struct {
	Job, Volume, Store                   string // Job "" outside a config job
	Command                              string // "backup", "copy"
	Start, End                           time.Time
	ExitCode                             int // 0 = success
	BytesRead, BytesChanged, BytesStored int64
	LVMSeconds                           float64
	ChainLength                          int   // snapshots in the volume's chain in the store after the run (0 unknown)
	StoreBytes                           int64 // bytes of the volume's files in the store (0 unknown)
}

// ErrReplaced is wrapped by the error Update returns when it wrote the
// file but could not keep what the file held before: it was not one this
// package writes (damaged, or another program's). The caller warns; the
// new file is in place.
var ErrReplaced = errors.New("the file held no thinback metrics and was replaced")

// metric is one metric family of the file.
type metric struct {
	name, help string
	typ        string
	// value of an outcome; ok false leaves the series without it (or
	// with its earlier value, if keep).
	value func(o *Outcome) (v float64, ok bool)
	// keep: a run that does not know the value keeps the earlier one.
	keep bool
}

var metricList = []metric{
	{name: "thinback_last_success_timestamp_seconds", typ: "gauge",
		help:  "When the volume's last successful run ended, in seconds since the epoch (kept across failed runs).",
		value: func(o *Outcome) (float64, bool) { return unixSeconds(o.End), o.ExitCode == 0 }, keep: true},
	{name: "thinback_last_run_timestamp_seconds", typ: "gauge",
		help:  "When the volume's last run ended, in seconds since the epoch.",
		value: func(o *Outcome) (float64, bool) { return unixSeconds(o.End), true }},
	{name: "thinback_last_run_exit_code", typ: "gauge",
		help:  "The exit code of the volume's last run: 0 success, else thinback's exit code (see thinback --help).",
		value: func(o *Outcome) (float64, bool) { return float64(o.ExitCode), true }},
	{name: "thinback_last_run_duration_seconds", typ: "gauge",
		help:  "How long the volume's last run took.",
		value: func(o *Outcome) (float64, bool) { return o.End.Sub(o.Start).Seconds(), true }},
	{name: "thinback_last_run_read_bytes", typ: "gauge",
		help:  "Bytes the volume's last run read from the volume or the source store.",
		value: func(o *Outcome) (float64, bool) { return float64(o.BytesRead), true }},
	{name: "thinback_last_run_changed_bytes", typ: "gauge",
		help:  "Bytes of the volume that changed since its previous snapshot, as the last run found.",
		value: func(o *Outcome) (float64, bool) { return float64(o.BytesChanged), true }},
	{name: "thinback_last_run_stored_bytes", typ: "gauge",
		help:  "Bytes the volume's last run wrote into the store.",
		value: func(o *Outcome) (float64, bool) { return float64(o.BytesStored), true }},
	{name: "thinback_last_run_lvm_seconds", typ: "gauge",
		help:  "Time the volume's last run spent in LVM and dmsetup commands.",
		value: func(o *Outcome) (float64, bool) { return o.LVMSeconds, true }},
	{name: "thinback_chain_length", typ: "gauge",
		help:  "Snapshots in the volume's chain in the store (from its full to its newest), as the last run that knew it left it.",
		value: func(o *Outcome) (float64, bool) { return float64(o.ChainLength), o.ChainLength > 0 }, keep: true},
	{name: "thinback_store_bytes", typ: "gauge",
		help:  "Bytes of the volume's delta files in the store, as the last run that knew it left them.",
		value: func(o *Outcome) (float64, bool) { return float64(o.StoreBytes), o.StoreBytes > 0 }, keep: true},
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1000 }

// labelNames are the labels of every series, in the order written.
var labelNames = [...]string{"command", "job", "store", "volume"}

// key identifies a series: the values of labelNames.
type key [len(labelNames)]string

func keyOf(o *Outcome) key { return key{o.Command, o.Job, o.Store, o.Volume} }

// values are a series' values by metric name.
type values map[string]float64

// Update merges outcomes into the textfile at path (node_exporter's
// textfile collector format), keeping earlier series of other volumes
// and each volume's last success time across failed runs, and writes it
// atomically (temp file in the same directory, fsync, rename).
//
// A file that does not parse as one Update wrote is replaced: the new
// file is written, and the error returned wraps ErrReplaced.
func Update(path string, outcomes []Outcome) error {
	dir := filepath.Dir(path)
	unlock, err := lockDir(dir)
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	defer unlock()
	series, readErr := read(path)
	if readErr != nil && !errors.Is(readErr, ErrReplaced) {
		return readErr
	}
	for i := range outcomes {
		o := &outcomes[i]
		k := keyOf(o)
		old := series[k]
		v := values{}
		for _, m := range metricList {
			if x, ok := m.value(o); ok {
				v[m.name] = x
			} else if prev, had := old[m.name]; had && m.keep {
				v[m.name] = prev
			}
		}
		series[k] = v
	}
	if err := write(path, format(series)); err != nil {
		return err
	}
	return readErr
}

// lockDir takes an exclusive flock on the directory, so that two runs
// updating files in it read and write one after the other. It leaves no
// file behind (the collector reads every *.prom file of the directory).
func lockDir(dir string) (func(), error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(d.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		_ = d.Close()
		return nil, fmt.Errorf("lock directory %s: %w", dir, err)
	}
	return func() { _ = d.Close() }, nil
}

// known maps the names of metricList to their entries.
var known = func() map[string]bool {
	m := map[string]bool{}
	for _, x := range metricList {
		m[x.name] = true
	}
	return m
}()

// read parses the file at path as format writes it. A missing file is an
// empty one; one that is not what format writes gives the series parsed
// so far dropped and an error wrapping ErrReplaced.
func read(path string) (map[key]values, error) {
	series := map[key]values{}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return series, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics file %s: %w", path, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, k, v, err := parseLine(text)
		if err != nil {
			return map[key]values{}, fmt.Errorf("metrics file %s: line %d: %v: %w", path, line, err, ErrReplaced)
		}
		if series[k] == nil {
			series[k] = values{}
		}
		series[k][name] = v
	}
	if err := sc.Err(); err != nil {
		return map[key]values{}, fmt.Errorf("metrics file %s: %v: %w", path, err, ErrReplaced)
	}
	return series, nil
}

// parseLine parses one sample line as format writes it:
// name{command="...",job="...",store="...",volume="..."} value.
func parseLine(s string) (name string, k key, v float64, err error) {
	name, rest, ok := strings.Cut(s, "{")
	if !ok || !known[name] {
		return "", k, 0, fmt.Errorf("not a thinback metric: %q", s)
	}
	for i, l := range labelNames {
		rest, ok = strings.CutPrefix(rest, l+"=")
		if !ok {
			return "", k, 0, fmt.Errorf("label %s missing: %q", l, s)
		}
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			return "", k, 0, fmt.Errorf("label %s: %v: %q", l, err, s)
		}
		if k[i], err = strconv.Unquote(q); err != nil {
			return "", k, 0, fmt.Errorf("label %s: %v: %q", l, err, s)
		}
		rest = rest[len(q):]
		sep := ","
		if i == len(labelNames)-1 {
			sep = "} "
		}
		if rest, ok = strings.CutPrefix(rest, sep); !ok {
			return "", k, 0, fmt.Errorf("labels not as thinback writes them: %q", s)
		}
	}
	if v, err = strconv.ParseFloat(rest, 64); err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return "", k, 0, fmt.Errorf("value: %q", s)
	}
	return name, k, v, nil
}

// format writes the series as the textfile collector reads them: each
// metric's HELP and TYPE, then its samples, sorted by labels.
func format(series map[key]values) []byte {
	keys := make([]key, 0, len(series))
	for k := range series {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		for n := range keys[i] {
			if keys[i][n] != keys[j][n] {
				return keys[i][n] < keys[j][n]
			}
		}
		return false
	})
	var b bytes.Buffer
	for _, m := range metricList {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, m.typ)
		for _, k := range keys {
			v, ok := series[k][m.name]
			if !ok {
				continue
			}
			b.WriteString(m.name)
			for i, l := range labelNames {
				sep := ","
				if i == 0 {
					sep = "{"
				}
				b.WriteString(sep + l + "=" + quote(k[i]))
			}
			b.WriteString("} " + strconv.FormatFloat(v, 'f', -1, 64) + "\n")
		}
	}
	return b.Bytes()
}

// quote escapes a label value as the text format wants: backslash, double
// quote and line feed escaped, everything else (UTF-8) as it is.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)
	return `"` + r.Replace(s) + `"`
}

// write replaces the file at path with data atomically.
func write(path string, data []byte) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// A name the collector skips (it reads *.prom only) until renamed.
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("metrics file %s: %w", path, catalog.WriteError(path, err))
	}
	tmp := f.Name()
	fail := func(err error) error {
		_ = f.Close()
		_ = os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, catalog.WriteError(tmp, err))
	}
	// The collector runs as another user: the file is readable by all,
	// as files written with the usual umask are.
	if err := f.Chmod(0o644); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, catalog.WriteError(tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	if err := catalog.SyncDir(dir); err != nil {
		return fmt.Errorf("metrics file %s: %w", path, err)
	}
	return nil
}
