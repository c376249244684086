package catalog

import (
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the DST case must not depend on the machine's zoneinfo
)

// snapsAt makes snapshots at RFC 3339 times, oldest first.
func snapsAt(t *testing.T, times ...string) []Snapshot {
	t.Helper()
	snaps := make([]Snapshot, len(times))
	for i, s := range times {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		snaps[i] = Snapshot{ID: newID(), Volume: "v", Seq: uint64(i + 1), Time: tm}
	}
	return snaps
}

// timesOf returns the snapshots' times in UTC, oldest first.
func timesOf(snaps []Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.Time.UTC().Format(time.RFC3339)
	}
	sort.Strings(out)
	return out
}

// The cases of proxmox-backup's tests/prune.rs (run there with UTC as the
// local zone), plus its documentation's weekly/monthly example.
func TestRetentionPBS(t *testing.T) {
	hourly := []string{
		"2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z",
		"2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z",
	}
	simple2 := []string{
		"2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z", "2019-11-21T11:59:15Z",
		"2019-11-22T11:59:15Z", "2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z",
		"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z",
	}
	simple := []string{
		"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z", "2019-12-04T12:59:15Z",
	}
	// Daily backups over an ISO week that starts in January and ends in
	// February: keep-weekly keeps its newest and marks the rest removed,
	// so keep-monthly does not pick January 31 but January 28, the newest
	// January backup outside that week.
	var docs []string
	for d := time.Date(2024, 1, 25, 12, 0, 0, 0, time.UTC); !d.After(time.Date(2024, 2, 4, 12, 0, 0, 0, time.UTC)); d = d.AddDate(0, 0, 1) {
		docs = append(docs, d.Format(time.RFC3339))
	}
	for _, tc := range []struct {
		name   string
		times  []string
		r      Retention
		keep   []string // exactly one of keep and remove is given
		remove []string
	}{
		{"hourly 3", hourly, Retention{KeepHourly: 3}, nil,
			[]string{"2019-11-15T10:49:15Z", "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z"}},
		{"hourly 2", hourly, Retention{KeepHourly: 2},
			[]string{"2019-11-15T10:59:15Z", "2019-11-15T11:59:15Z"}, nil},
		{"daily 1", simple2, Retention{KeepDaily: 1}, []string{"2019-12-04T11:59:15Z"}, nil},
		{"last 1 daily 1", simple2, Retention{KeepLast: 1, KeepDaily: 1},
			[]string{"2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}, nil},
		{"daily 1 weekly 1", simple2, Retention{KeepDaily: 1, KeepWeekly: 1},
			[]string{"2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"}, nil},
		{"daily 1 weekly 1 monthly 1", simple2, Retention{KeepDaily: 1, KeepWeekly: 1, KeepMonthly: 1},
			[]string{"2019-11-22T11:59:15Z", "2019-12-01T11:59:15Z", "2019-12-04T11:59:15Z"}, nil},
		{"monthly 1 yearly 1", simple2, Retention{KeepMonthly: 1, KeepYearly: 1},
			[]string{"2018-11-15T11:59:15Z", "2019-12-04T11:59:15Z"}, nil},
		{"last 4", simple, Retention{KeepLast: 4}, simple, nil},
		{"last 3", simple, Retention{KeepLast: 3}, nil, []string{"2019-12-02T11:59:15Z"}},
		{"last 2", simple, Retention{KeepLast: 2}, nil, []string{"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z"}},
		{"last 1", simple, Retention{KeepLast: 1}, nil,
			[]string{"2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"}},
		// PBS's compute_prune_info removes everything here, but its prune
		// command keeps everything when no option is set, as Select does.
		{"no option", simple, Retention{KeepLast: 0}, simple, nil},
		{"last 2 daily 2", simple, Retention{KeepLast: 2, KeepDaily: 2}, simple, nil},
		{"daily 3", simple, Retention{KeepDaily: 3}, nil, []string{"2019-12-04T11:59:15Z"}},
		{"daily 2", simple, Retention{KeepDaily: 2}, nil, []string{"2019-12-02T11:59:15Z", "2019-12-04T11:59:15Z"}},
		{"weekly 5", simple, Retention{KeepWeekly: 5}, []string{"2019-12-04T12:59:15Z"}, nil},
		{"daily 1 weekly 5", simple, Retention{KeepDaily: 1, KeepWeekly: 5}, []string{"2019-12-04T12:59:15Z"}, nil},
		{"monthly 6", simple, Retention{KeepMonthly: 6}, []string{"2019-12-04T12:59:15Z"}, nil},
		{"yearly 7", simple, Retention{KeepYearly: 7}, []string{"2019-12-04T12:59:15Z"}, nil},
		{"weekly 5 monthly 6 yearly 7", simple, Retention{KeepWeekly: 5, KeepMonthly: 6, KeepYearly: 7},
			[]string{"2019-12-04T12:59:15Z"}, nil},
		{"docs: weekly then monthly", docs, Retention{KeepWeekly: 1, KeepMonthly: 1},
			[]string{"2024-01-28T12:00:00Z", "2024-02-04T12:00:00Z"}, nil},
		// ISO weeks belong to ISO years (2021-01-01 is in 2020-W53), years
		// to calendar years.
		{"iso week year", []string{"2020-12-31T12:00:00Z", "2021-01-01T12:00:00Z", "2021-01-04T12:00:00Z"},
			Retention{KeepWeekly: 3}, []string{"2021-01-01T12:00:00Z", "2021-01-04T12:00:00Z"}, nil},
		{"calendar year", []string{"2020-12-31T12:00:00Z", "2021-01-01T12:00:00Z", "2021-01-04T12:00:00Z"},
			Retention{KeepYearly: 2}, []string{"2020-12-31T12:00:00Z", "2021-01-04T12:00:00Z"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			snaps := snapsAt(t, tc.times...)
			keep, remove := tc.r.Select(snaps, time.UTC)
			if tc.remove != nil {
				if got := timesOf(remove); strings.Join(got, " ") != strings.Join(tc.remove, " ") {
					t.Errorf("removed %v, want %v", got, tc.remove)
				}
			} else if got := timesOf(keep); strings.Join(got, " ") != strings.Join(tc.keep, " ") {
				t.Errorf("kept %v, want %v", got, tc.keep)
			}
			if len(keep)+len(remove) != len(snaps) {
				t.Errorf("%d kept + %d removed of %d", len(keep), len(remove), len(snaps))
			}
		})
	}
}

// Periods are wall-clock fields in the given location.
func TestRetentionLocation(t *testing.T) {
	snaps := snapsAt(t, "2024-03-01T13:30:00Z", "2024-03-01T15:00:00Z")
	r := Retention{KeepDaily: 2}
	if keep, _ := r.Select(snaps, time.UTC); len(keep) != 1 {
		t.Errorf("UTC: kept %v, want one (same day)", timesOf(keep))
	}
	if keep, _ := r.Select(snaps, time.FixedZone("UTC+10", 10*3600)); len(keep) != 2 {
		t.Errorf("UTC+10: kept %v, want both (23:30 and 01:00 next day)", timesOf(keep))
	}

	// When clocks go back, 02:30 CEST and 02:30 CET are one hourly period,
	// as with PBS's strftime("%Y/%m/%d/%H").
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	dst := snapsAt(t, "2024-10-26T23:30:00Z", "2024-10-27T00:30:00Z", "2024-10-27T01:30:00Z")
	keep, remove := Retention{KeepHourly: 2}.Select(dst, berlin)
	if got := timesOf(remove); len(got) != 1 || got[0] != "2024-10-27T00:30:00Z" {
		t.Errorf("DST: kept %v removed %v, want 00:30Z removed", timesOf(keep), got)
	}
}

func TestRetentionString(t *testing.T) {
	if s := (Retention{}).String(); s != "" {
		t.Errorf("zero: %q", s)
	}
	r := Retention{KeepLast: 3, KeepDaily: 7, KeepYearly: 1}
	if s := r.String(); s != "--keep-last 3 --keep-daily 7 --keep-yearly 1" {
		t.Errorf("String = %q", s)
	}
	if r.IsZero() || !(Retention{}).IsZero() {
		t.Error("IsZero")
	}
}

// oneOption is an independent model of a policy with a single option: the
// newest snapshot of each of the n newest periods.
func oneOption(snaps []Snapshot, n int, period func(int, *Snapshot) string) map[string]bool {
	newest := make(map[string]*Snapshot)
	for i := range snaps {
		s := &snaps[i]
		p := period(i, s)
		if cur, ok := newest[p]; !ok || newerThan(s, cur) {
			newest[p] = s
		}
	}
	var best []*Snapshot
	for _, s := range newest {
		best = append(best, s)
	}
	sort.Slice(best, func(i, j int) bool { return newerThan(best[i], best[j]) })
	kept := make(map[string]bool)
	for i := 0; i < n && i < len(best); i++ {
		kept[best[i].ID] = true
	}
	return kept
}

func newerThan(a, b *Snapshot) bool {
	if !a.Time.Equal(b.Time) {
		return a.Time.After(b.Time)
	}
	if a.Seq != b.Seq {
		return a.Seq > b.Seq
	}
	return a.ID > b.ID
}

func idSet(snaps []Snapshot) map[string]bool {
	m := make(map[string]bool, len(snaps))
	for _, s := range snaps {
		m[s.ID] = true
	}
	return m
}

func TestRetentionProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(testSeed(t)))
	loc := time.FixedZone("X", 3600*(rng.Intn(25)-12))
	start := time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)
	for iter := range 600 {
		n := rng.Intn(60)
		snaps := make([]Snapshot, n)
		for i := range snaps {
			// Spread over three years, with clusters so that periods
			// often hold several snapshots, and occasional equal times.
			var tm time.Time
			if i > 0 && rng.Intn(8) == 0 {
				tm = snaps[rng.Intn(i)].Time
			} else {
				tm = start.Add(time.Duration(rng.Int63n(int64(3 * 365 * 24 * time.Hour))))
				if rng.Intn(2) == 0 {
					tm = tm.Truncate(24 * time.Hour)
				}
			}
			snaps[i] = Snapshot{ID: newID(), Seq: uint64(i + 1), Time: tm}
		}
		count := func() int {
			if rng.Intn(3) == 0 {
				return 0
			}
			return rng.Intn(6)
		}
		r := Retention{count(), count(), count(), count(), count(), count()}
		what := fmt.Sprintf("iteration %d, %d snapshots, %s", iter, n, r)

		keep, remove := r.Select(snaps, loc)
		kept := idSet(keep)
		if len(keep)+len(remove) != n || len(kept) != len(keep) {
			t.Fatalf("%s: %d kept + %d removed", what, len(keep), len(remove))
		}
		for _, s := range remove {
			if kept[s.ID] {
				t.Fatalf("%s: %s both kept and removed", what, s.ID)
			}
		}
		if r.IsZero() && len(remove) != 0 {
			t.Fatalf("%s: zero policy removed %d", what, len(remove))
		}
		// The newest snapshot is kept whenever anything is.
		if n > 0 && !r.IsZero() {
			newest := &snaps[0]
			for i := range snaps {
				if newerThan(&snaps[i], newest) {
					newest = &snaps[i]
				}
			}
			if !kept[newest.ID] {
				t.Fatalf("%s: newest snapshot %s removed", what, newest.ID)
			}
		}
		// keep-last runs first, so its choice survives the other options.
		if r.KeepLast > 0 {
			lastOnly, _ := Retention{KeepLast: r.KeepLast}.Select(snaps, loc)
			for _, s := range lastOnly {
				if !kept[s.ID] {
					t.Fatalf("%s: %s kept by keep-last alone but not with the other options", what, s.ID)
				}
			}
		}
		// No option keeps more than its count.
		if total := r.KeepLast + r.KeepHourly + r.KeepDaily + r.KeepWeekly + r.KeepMonthly + r.KeepYearly; !r.IsZero() && len(keep) > total {
			t.Fatalf("%s: kept %d, more than %d", what, len(keep), total)
		}
		// Deterministic, whatever the input order; keep is in input order.
		shuffled := append([]Snapshot(nil), snaps...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		keep2, _ := r.Select(shuffled, loc)
		if fmt.Sprint(idSet(keep2)) != fmt.Sprint(kept) {
			t.Fatalf("%s: result depends on input order", what)
		}
		for i := 1; i < len(keep); i++ {
			if keep[i-1].Seq >= keep[i].Seq {
				t.Fatalf("%s: keep is not in input order", what)
			}
		}
		// A single option agrees with the independent model.
		opts := r.options()
		o := opts[rng.Intn(len(opts))]
		if o.n > 0 {
			single := Retention{}
			switch o.flag {
			case "keep-last":
				single.KeepLast = o.n
			case "keep-hourly":
				single.KeepHourly = o.n
			case "keep-daily":
				single.KeepDaily = o.n
			case "keep-weekly":
				single.KeepWeekly = o.n
			case "keep-monthly":
				single.KeepMonthly = o.n
			case "keep-yearly":
				single.KeepYearly = o.n
			}
			got, _ := single.Select(snaps, loc)
			want := oneOption(snaps, o.n, func(i int, s *Snapshot) string { return o.period(i, s, loc) })
			if fmt.Sprint(idSet(got)) != fmt.Sprint(want) {
				t.Fatalf("%s: %s %d kept %v, model %v", what, o.flag, o.n, idSet(got), want)
			}
		}
	}
}

// Select does not rely on IDs or distinct times: keep-last counts
// snapshots, whatever they carry.
func TestRetentionIdenticalSnapshots(t *testing.T) {
	snaps := make([]Snapshot, 5)
	for i := range snaps {
		snaps[i].Time = baseTime
	}
	keep, remove := Retention{KeepLast: 2}.Select(snaps, time.UTC)
	if len(keep) != 2 || len(remove) != 3 {
		t.Errorf("kept %d, removed %d, want 2 and 3", len(keep), len(remove))
	}
}
