package catalog

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestRetentionPlan: which kept snapshot absorbs which removed ones, and
// which removed ones are dropped, for the shapes chains take.
func TestRetentionPlan(t *testing.T) {
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	// snap makes a snapshot "id<parent@hour"; hours count from day.
	snaps := func(specs ...string) []Snapshot {
		var out []Snapshot
		for i, s := range specs {
			id, rest, _ := strings.Cut(s, "@")
			parent := ""
			if j := strings.Index(id, "<"); j >= 0 {
				id, parent = id[:j], id[j+1:]
			}
			h, err := time.ParseDuration(rest + "h")
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, Snapshot{ID: id, Parent: parent, Volume: "v", Seq: uint64(i + 1), Time: day.Add(h)})
		}
		return out
	}
	ids := func(ss []Snapshot) []string {
		var out []string
		for _, s := range ss {
			out = append(out, s.ID)
		}
		return out
	}
	for _, c := range []struct {
		name   string
		snaps  []Snapshot
		policy Retention
		keep   []string
		merges []string // "kept:run,run"
		drop   []string
	}{
		{"a chain, keep the last two", snaps("a@1", "b<a@2", "c<b@3", "d<c@4", "e<d@5"), Retention{KeepLast: 2},
			[]string{"d", "e"}, []string{"d:a,b,c"}, nil},
		{"gaps: the newest of each day", snaps("a@1", "b<a@2", "c<b@25", "d<c@26", "e<d@49"), Retention{KeepDaily: 3},
			[]string{"b", "d", "e"}, []string{"b:a", "d:c"}, nil},
		{"a dead branch is dropped newest first", snaps("a@1", "b<a@2", "c<b@3", "x<a@4"), Retention{KeepLast: 1},
			[]string{"x"}, []string{"x:a"}, []string{"c", "b"}},
		{"two fulls", snaps("a@1", "b<a@2", "c@3", "d<c@4"), Retention{KeepLast: 1},
			[]string{"d"}, []string{"d:c"}, []string{"b", "a"}},
		{"only the newest removed", snaps("a@1", "b<a@2", "c<b@3"), Retention{KeepLast: 1, KeepDaily: 0},
			[]string{"c"}, []string{"c:a,b"}, nil},
		{"nothing to remove", snaps("a@1", "b<a@2"), Retention{KeepLast: 5},
			[]string{"a", "b"}, nil, nil},
		{"no policy keeps everything", snaps("a@1", "b<a@2"), Retention{},
			[]string{"a", "b"}, nil, nil},
		{"no snapshots", nil, Retention{KeepLast: 1}, nil, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := c.policy.Plan(c.snaps, time.UTC)
			var merges []string
			for _, m := range p.Merges {
				merges = append(merges, m.Kept.ID+":"+strings.Join(ids(m.Run), ","))
			}
			if !reflect.DeepEqual(ids(p.Keep), c.keep) || !reflect.DeepEqual(merges, c.merges) || !reflect.DeepEqual(ids(p.Drop), c.drop) {
				t.Errorf("keep %v, merges %v, drop %v; want %v, %v, %v", ids(p.Keep), merges, ids(p.Drop), c.keep, c.merges, c.drop)
			}
			// Every removed snapshot is merged or dropped, exactly once.
			seen := map[string]int{}
			for _, m := range p.Merges {
				for _, s := range m.Run {
					seen[s.ID]++
				}
			}
			for _, s := range p.Drop {
				seen[s.ID]++
			}
			for _, s := range p.Remove {
				if seen[s.ID] != 1 {
					t.Errorf("removed %s is handled %d times", s.ID, seen[s.ID])
				}
			}
			if len(seen) != len(p.Remove) {
				t.Errorf("%d snapshots handled, %d removed", len(seen), len(p.Remove))
			}
		})
	}
}
