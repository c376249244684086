package replica

import (
	"errors"
	"reflect"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/restore"
)

func locals(n int) []Local {
	l := make([]Local, n)
	for i := range l {
		l[i] = Local{ID: archive.NewID(), Name: "s" + string(rune('0'+i))}
	}
	return l
}

func TestChoose(t *testing.T) {
	l := locals(3)
	held := func(i int) archive.Snapshot { return archive.Snapshot{ID: l[i].ID, Name: l[i].Name} }
	gone := archive.Snapshot{ID: archive.NewID(), Name: "gone"}
	mod := &Change{Reason: "written to", Offset: 4096, Length: 4096, Bytes: 4096}
	for _, c := range []struct {
		name     string
		h        Holding
		rollback bool
		resume   bool
		mode     Mode
		snap     int // index into l of the snapshot sent again, -1: a new one
		base     int // -1: none
		from     int64
		rolled   bool
		over     bool
		err      error
	}{
		{name: "missing", h: Holding{Kind: KindMissing}, mode: Full, snap: -1, base: -1},
		{name: "empty file", h: Holding{Kind: KindFile}, mode: Full, snap: -1, base: -1},
		{name: "holds the newest", h: Holding{Kind: KindThin, Snapshot: held(2)}, mode: Incremental, snap: -1, base: 2},
		{name: "holds an older one", h: Holding{Kind: KindThick, Snapshot: held(0)}, mode: Incremental, snap: -1, base: 0},
		{name: "holds one gone from the source", h: Holding{Kind: KindThin, Snapshot: gone}, mode: Full, snap: -1, base: -1},
		{name: "modified", h: Holding{Kind: KindThin, Snapshot: held(2), Modified: mod}, err: restore.ErrModified},
		{name: "modified, rollback thin", h: Holding{Kind: KindThin, Snapshot: held(2), Modified: mod}, rollback: true,
			mode: Incremental, snap: -1, base: 2, rolled: true},
		{name: "modified, rollback file", h: Holding{Kind: KindFile, Snapshot: held(2), Modified: mod}, rollback: true,
			mode: Full, snap: -1, base: -1, over: true},
		{name: "modified, rollback thin, base gone", h: Holding{Kind: KindThin, Snapshot: gone, Modified: mod}, rollback: true,
			mode: Full, snap: -1, base: -1, over: true},
		{name: "partial, resumable", h: Holding{Kind: KindThin, Snapshot: held(1), Partial: &Partial{Snapshot: held(2), Parent: l[1].ID, Done: 1 << 20}},
			resume: true, mode: Resumed, snap: 2, base: 1, from: 1 << 20},
		{name: "partial, sent again", h: Holding{Kind: KindFile, Partial: &Partial{Snapshot: held(2), Parent: l[1].ID, Done: 1 << 20}},
			mode: Incremental, snap: 2, base: 1},
		{name: "partial of a full, nothing durable", h: Holding{Kind: KindFile, Partial: &Partial{Snapshot: held(2)}},
			resume: true, mode: Full, snap: 2, base: -1},
		{name: "partial, snapshot gone, file", h: Holding{Kind: KindFile, Partial: &Partial{Snapshot: gone, Parent: l[1].ID}},
			mode: Full, snap: -1, base: -1},
		{name: "partial, snapshot gone, thin", h: Holding{Kind: KindThin, Snapshot: held(1), Partial: &Partial{Snapshot: gone, Parent: l[1].ID}},
			err: restore.ErrModified},
		{name: "partial, snapshot gone, thin, rollback", h: Holding{Kind: KindThin, Snapshot: held(1), Partial: &Partial{Snapshot: gone, Parent: l[1].ID}},
			rollback: true, mode: Incremental, snap: -1, base: 1, rolled: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Choose(c.h, l, "host:/dev/vg/lv", c.rollback, c.resume)
			if c.err != nil || err != nil {
				if !errors.Is(err, c.err) || c.err == nil {
					t.Fatalf("Choose: %v, want %v", err, c.err)
				}
				return
			}
			var snap, base *Local
			if c.snap >= 0 {
				snap = &l[c.snap]
			}
			if c.base >= 0 {
				base = &l[c.base]
			}
			want := Plan{Mode: c.mode, Snap: snap, Base: base, From: c.from, Rollback: c.rolled, Overwrite: c.over}
			p.Notes = nil
			if !reflect.DeepEqual(p, want) {
				t.Errorf("plan %+v, want %+v", p, want)
			}
		})
	}
}

func TestRotation(t *testing.T) {
	l := locals(5)
	names := func(ls []Local) []string {
		var s []string
		for _, x := range ls {
			s = append(s, x.Name)
		}
		return s
	}
	for _, c := range []struct {
		name    string
		held    int
		partial int
		keep    int
		want    []string
	}{
		{"newest held, keep none", 4, -1, 0, []string{"s0", "s1", "s2", "s3"}},
		{"newest held, keep 2", 4, -1, 2, []string{"s0", "s1"}},
		{"keep more than there are", 4, -1, 9, nil},
		{"older held: newer ones go", 2, -1, 1, []string{"s0", "s3", "s4"}},
		{"a partial stays", 2, 4, 0, []string{"s0", "s1", "s3"}},
		{"held unknown: nothing goes", -1, -1, 0, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var held, partial archive.ID
			if c.held >= 0 {
				held = l[c.held].ID
			} else {
				held = archive.NewID()
			}
			if c.partial >= 0 {
				partial = l[c.partial].ID
			}
			if got := names(Rotation(l, held, partial, c.keep)); !reflect.DeepEqual(got, c.want) {
				t.Errorf("Rotation removes %v, want %v", got, c.want)
			}
		})
	}
}
