package catalog

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Retention is a prune policy with Proxmox Backup Server's semantics. Each
// field is a count; zero (or negative, which validation rejects) means the
// option is not used.
type Retention struct {
	KeepLast    int `json:"keep_last,omitempty"`
	KeepHourly  int `json:"keep_hourly,omitempty"`
	KeepDaily   int `json:"keep_daily,omitempty"`
	KeepWeekly  int `json:"keep_weekly,omitempty"`
	KeepMonthly int `json:"keep_monthly,omitempty"`
	KeepYearly  int `json:"keep_yearly,omitempty"`
}

// IsZero reports whether no option is set. A zero Retention keeps
// everything.
func (r Retention) IsZero() bool {
	return r.KeepLast <= 0 && r.KeepHourly <= 0 && r.KeepDaily <= 0 &&
		r.KeepWeekly <= 0 && r.KeepMonthly <= 0 && r.KeepYearly <= 0
}

func (r Retention) validate() error {
	for _, o := range r.options() {
		if o.n < 0 {
			return fmt.Errorf("retention %s is negative (%d)", o.flag, o.n)
		}
	}
	return nil
}

// String returns the policy as command-line flags, e.g.
// "--keep-last 3 --keep-daily 7", or "" for the zero policy.
func (r Retention) String() string {
	var parts []string
	for _, o := range r.options() {
		if o.n > 0 {
			parts = append(parts, fmt.Sprintf("--%s %d", o.flag, o.n))
		}
	}
	return strings.Join(parts, " ")
}

// option is one keep-* setting and how it groups snapshots into periods.
type option struct {
	flag string
	n    int
	// period names the period snapshot i falls in; keep-last gives each
	// snapshot its own.
	period func(i int, s *Snapshot, loc *time.Location) string
}

// options lists the settings in the order they are applied, which is
// part of the semantics: each one only considers what earlier ones left.
func (r Retention) options() []option {
	return []option{
		// PBS keys keep-last by the backup's time string, which is unique
		// per backup there; here times may repeat, so each snapshot is its
		// own period.
		{"keep-last", r.KeepLast, func(i int, _ *Snapshot, _ *time.Location) string { return strconv.Itoa(i) }},
		// The periods are wall-clock fields in loc, as PBS's
		// strftime_local: two backups in the repeated hour of a DST
		// change share one hourly period.
		{"keep-hourly", r.KeepHourly, func(_ int, s *Snapshot, loc *time.Location) string {
			return s.Time.In(loc).Format("2006/01/02/15")
		}},
		{"keep-daily", r.KeepDaily, func(_ int, s *Snapshot, loc *time.Location) string {
			return s.Time.In(loc).Format("2006/01/02")
		}},
		{"keep-weekly", r.KeepWeekly, func(_ int, s *Snapshot, loc *time.Location) string {
			// ISO week and its year, which differs from the calendar
			// year around New Year.
			y, w := s.Time.In(loc).ISOWeek()
			return fmt.Sprintf("%d/%02d", y, w)
		}},
		{"keep-monthly", r.KeepMonthly, func(_ int, s *Snapshot, loc *time.Location) string {
			return s.Time.In(loc).Format("2006/01")
		}},
		{"keep-yearly", r.KeepYearly, func(_ int, s *Snapshot, loc *time.Location) string {
			return s.Time.In(loc).Format("2006")
		}},
	}
}

type mark int

const (
	unmarked mark = iota
	markKeep
	markRemove
)

// Select splits snaps into the ones the policy keeps and the ones it
// removes, exactly as Proxmox Backup Server's prune does
// (pbs-datastore compute_prune_info / mark_selections):
//
//   - Snapshots are considered newest first (by Time, then Seq, then ID).
//   - The options are applied in order: last, hourly, daily, weekly (ISO
//     weeks, Monday to Sunday), monthly, yearly. Periods are calendar
//     fields in loc (time.Local if nil).
//   - Within one option, the newest snapshot of each period is kept until
//     N periods have been kept; the older snapshots of a period kept by
//     this option are marked for removal, and later options do not look at
//     them again.
//   - A period that already holds a snapshot kept by an earlier option is
//     skipped without counting towards N.
//   - Whatever no option keeps is removed.
//
// Like PBS's prune command, a zero Retention keeps everything. keep and
// remove preserve the order of snaps; every snapshot is in exactly one.
//
// Select looks only at times: it does not know about chains. Removing a
// snapshot that another depends on means merging it (see Store.Replace).
func (r Retention) Select(snaps []Snapshot, loc *time.Location) (keep, remove []Snapshot) {
	if r.IsZero() {
		return append([]Snapshot(nil), snaps...), nil
	}
	if loc == nil {
		loc = time.Local
	}
	order := make([]int, len(snaps))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		x, y := &snaps[order[a]], &snaps[order[b]]
		if !x.Time.Equal(y.Time) {
			return x.Time.After(y.Time)
		}
		if x.Seq != y.Seq {
			return x.Seq > y.Seq
		}
		return x.ID > y.ID
	})
	marks := make([]mark, len(snaps))
	for _, o := range r.options() {
		if o.n > 0 {
			markSelections(snaps, order, marks, o.n, loc, o.period)
		}
	}
	for i := range snaps {
		if marks[i] == markKeep {
			keep = append(keep, snaps[i])
		} else {
			remove = append(remove, snaps[i])
		}
	}
	return keep, remove
}

// markSelections is one option's pass over the snapshots, newest first.
func markSelections(snaps []Snapshot, order []int, marks []mark, n int, loc *time.Location,
	period func(int, *Snapshot, *time.Location) string) {
	covered := make(map[string]bool) // periods holding a snapshot kept earlier
	for _, i := range order {
		if marks[i] == markKeep {
			covered[period(i, &snaps[i], loc)] = true
		}
	}
	kept := make(map[string]bool) // periods kept by this pass
	for _, i := range order {
		if marks[i] != unmarked {
			continue
		}
		p := period(i, &snaps[i], loc)
		if covered[p] {
			continue
		}
		if kept[p] {
			marks[i] = markRemove
			continue
		}
		if len(kept) >= n {
			break
		}
		kept[p] = true
		marks[i] = markKeep
	}
}
