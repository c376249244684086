package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/metrics"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/lvmthin"
)

// A command that runs on several volumes (backup VG/LV VG/LV..., backup
// --all VG) or several jobs (run --all) runs each as it would run alone,
// prints each one's result or error on its own line, goes on after a
// failure, and exits with the worst of their codes.

// worstExit is the exit code of several outcomes: 0 if all are 0;
// otherwise 130 if any is 130 (an interrupted run says so, whatever
// failed before); otherwise the highest code.
func worstExit(codes []int) int {
	worst := exitOK
	for _, c := range codes {
		if c == exitInterrupted {
			return exitInterrupted
		}
		worst = max(worst, c)
	}
	return worst
}

// multiError is the error of a run of several volumes or jobs of which
// some failed. Each failure has been printed on its own line already, so
// Main prints nothing more (it is a reportedError, see As), and the
// command exits with code (worstExit of the outcomes; see exitCode).
type multiError struct {
	code          int
	failed, total int
}

func (e multiError) Error() string {
	return fmt.Sprintf("%d of %d failed (exit %d)", e.failed, e.total, e.code)
}

// As makes a multiError a reportedError for errors.As: already printed.
func (e multiError) As(target any) bool {
	if r, ok := target.(*reportedError); ok {
		*r = reportedError{err: e}
		return true
	}
	return false
}

// errorLine is how Main prints a command's error, without "thinback: ":
// an error of an interrupted run says so.
func errorLine(ctx context.Context, err error) string {
	if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
		// The signal arrived while the error was being made.
		err = fmt.Errorf("%w (interrupted: %w)", err, context.Canceled)
	}
	msg := err.Error()
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		msg = "interrupted: " + strings.TrimSuffix(msg, ": context canceled")
	}
	// Messages quote names from files, streams and catalogs.
	return printable.Message(msg)
}

// allVolumes lists the LVs of the volume group vg that backup --all backs
// up, sorted by name: thin volumes and ordinary LVs, as backup of one
// takes them. Never pools or their hidden sub-LVs, thin or classic
// snapshots (backup refuses them), thinback's own snapshots
// (LV.thinback.<time>), replica snapshots (tagged) or the replica targets
// replicate writes to (backing them up is the source host's job; name one
// to back it up anyway); nor those matching an exclude pattern (an LV
// name or a shell glob, path.Match). The lvs it runs is counted in the
// returned stats.
func allVolumes(ctx context.Context, vg string, exclude []string) ([]lvmthin.Name, lvmthin.CommandStats, error) {
	ctx, commands := lvmthin.CountCommands(ctx)
	r, err := lvmthin.ListVG(ctx, vg)
	if err != nil {
		return nil, commands(), fmt.Errorf("backup --all %s: %w", vg, err)
	}
	var names []lvmthin.Name
	for _, lv := range r.LVs {
		switch lv.Kind() {
		case lvmthin.KindThin, lvmthin.KindThick:
		default:
			continue
		}
		if strings.Contains(lv.Name, ".thinback.") || lvmthin.HasReplicaTag(lv) {
			continue
		}
		if lv.IsThin() {
			if snaps, err := r.ReplicaSnapshots(lv.FullName()); err == nil && len(snaps) > 0 {
				continue
			}
		}
		if excluded(lv.Name, exclude) {
			continue
		}
		names = append(names, lv.FullName())
	}
	sort.Slice(names, func(i, j int) bool { return names[i].LV < names[j].LV })
	if len(names) == 0 {
		what := "no thin or ordinary LV that thinback backs up"
		if len(exclude) > 0 {
			what += " but those --exclude names"
		}
		return nil, commands(), fmt.Errorf("backup --all %s: volume group %s has %s (lvs %s lists them): %w", vg, vg, what, vg, lvmthin.ErrNotFound)
	}
	return names, commands(), nil
}

// excluded reports whether the LV name matches one of the patterns
// (checked by checkExcludes).
func excluded(name string, patterns []string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// checkExcludes refuses a pattern that is not a shell glob of LV names.
func checkExcludes(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil || p == "" || strings.Contains(p, "/") {
			return usageError{msg: fmt.Sprintf("backup: --exclude %q is not an LV name or a shell glob of LV names (e.g. --exclude 'test-*')", p)}
		}
	}
	return nil
}

// volumeFailure is what --json prints for a volume whose backup failed.
type volumeFailure struct {
	Volume   string `json:"volume"`
	Error    string `json:"error"`
	ExitCode int    `json:"exit_code"`
}

// runBackups backs up the LVs one after the other, as runBackup backs up
// one, into the same store with the same options. A failure is printed
// on its own line naming the volume (and as a JSON object with --json),
// and the next volume is backed up; a signal stops the run once the
// volume being backed up has cleaned up. Then a line names the volumes
// that failed, the metrics file is updated, and the error is a
// multiError with the worst exit code.
func runBackups(ctx context.Context, e *env, o backupOptions, lvs []lvmthin.Name, listed lvmthin.CommandStats) error {
	var codes []int
	var failed []string
	var outcomes []metrics.Outcome
	for i, lv := range lvs {
		if ctx.Err() != nil {
			for _, rest := range lvs[i:] {
				failed = append(failed, rest.String()+" (not started)")
				codes = append(codes, exitInterrupted)
			}
			break
		}
		vo := o
		vo.lv = lv.String()
		vo.several = true
		if i == 0 {
			vo.lvmBefore = listed
		}
		done, err := runBackup(ctx, e, vo)
		code := exitCode(err)
		if err != nil && ctx.Err() != nil {
			code = exitInterrupted // as Main says of an error made while a signal arrived
		}
		codes = append(codes, code)
		if o.metricsFile != "" {
			outcomes = append(outcomes, done.outcome(vo, code))
		}
		if err == nil {
			continue
		}
		failed = append(failed, fmt.Sprintf("%s (exit %d)", lv, code))
		msg := errorLine(ctx, err)
		printable.Sayf(e.stderr, "thinback: %s: %s", lv, msg)
		if o.json {
			if jerr := json.NewEncoder(e.stdout).Encode(volumeFailure{Volume: lv.String(), Error: msg, ExitCode: code}); jerr != nil {
				return fmt.Errorf("backup: %w", jerr)
			}
		}
	}
	if ctx.Err() != nil {
		// Interrupted, even if while the last volume's error was made.
		codes = append(codes, exitInterrupted)
	}
	if len(failed) > 0 {
		printable.Sayf(e.stderr, "backup: %d of %d volumes failed: %s", len(failed), len(lvs), strings.Join(failed, ", "))
	}
	if err := writeMetrics(e, o.metricsFile, outcomes); err != nil {
		printable.Sayf(e.stderr, "thinback: %s", errorLine(ctx, err))
		codes = append(codes, exitCode(err))
	}
	if code := worstExit(codes); code != exitOK {
		return multiError{code: code, failed: len(failed), total: len(lvs)}
	}
	return nil
}

// writeMetrics merges outcomes into the metrics file (none: nothing to
// do). A file of something else that was replaced is a warning.
func writeMetrics(e *env, file string, outcomes []metrics.Outcome) error {
	if file == "" || len(outcomes) == 0 {
		return nil
	}
	err := metrics.Update(file, outcomes)
	if errors.Is(err, metrics.ErrReplaced) {
		warn(e, "%s", printable.Message(err.Error()))
		return nil
	}
	return err
}

// backupDone is what runBackup tells of a volume's run besides its error,
// for the metrics file: the volume's name in the store as far as it got,
// its result if one was stored, and what the store then held of it.
type backupDone struct {
	start      time.Time
	volume     string
	res        *backup.Result
	chain      int
	storeBytes int64
	lvmSeconds float64 // its LVM and dmsetup commands' time, failed or not
}

// outcome is the volume's line of the metrics file.
func (d backupDone) outcome(o backupOptions, code int) metrics.Outcome {
	out := metrics.Outcome{Job: o.metricsJob, Volume: d.volume, Store: o.store, Command: "backup",
		Start: d.start, End: time.Now(), ExitCode: code, ChainLength: d.chain, StoreBytes: d.storeBytes}
	switch {
	case out.Volume != "":
	case o.volume != "":
		out.Volume = o.volume
	case o.file != "":
		out.Volume = filepath.Base(o.file) // as backup names an image's volume
	default:
		out.Volume = o.lv
	}
	if d.res != nil {
		out.BytesRead, out.BytesChanged, out.BytesStored = d.res.BytesRead, d.res.DataBytes+d.res.ZeroBytes, d.res.StoredBytes
	}
	out.LVMSeconds = d.lvmSeconds
	return out
}

// plusStats adds the commands of b to those of a: a volume's own and
// those run for it before (backup --all's lvs of the volume group).
func plusStats(a, b lvmthin.CommandStats) lvmthin.CommandStats {
	s := lvmthin.CommandStats{LVM: a.LVM + b.LVM, DMSetup: a.DMSetup + b.DMSetup, DMIoctls: a.DMIoctls + b.DMIoctls, Tools: a.Tools + b.Tools,
		LVMTime: a.LVMTime + b.LVMTime, ToolsTime: a.ToolsTime + b.ToolsTime, ByProgram: map[string]int{}}
	for _, m := range []map[string]int{a.ByProgram, b.ByProgram} {
		for k, v := range m {
			s.ByProgram[k] += v
		}
	}
	return s
}
