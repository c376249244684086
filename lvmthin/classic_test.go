package lvmthin

import (
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/cow"
)

func TestClassicStatusErrors(t *testing.T) {
	n := Name{"vg0", "s0"}
	for _, tt := range []struct {
		line   string
		base   bool
		want   error
		substr string
	}{
		{"0 8 snapshot 24/96 16", true, nil, ""},
		{"0 8 snapshot Invalid", true, ErrBaseInvalid, "base snapshot vg0/s0 is invalid (dmsetup status Invalid)"},
		{"0 8 snapshot Overflow", true, ErrBaseInvalid, "Overflow"},
		{"0 8 snapshot Invalid", false, ErrSnapshotInvalid, "snapshot vg0/s0 is invalid"},
		{"0 8 snapshot Merge failed", false, ErrSnapshotMerging, "merging"},
		{"0 8 snapshot-merge 24/96 16", true, ErrSnapshotMerging, "merging"},
		{"0 8 snapshot Unknown", true, ErrMetadata, "not a persistent"},
	} {
		st, err := ParseSnapshotStatus(tt.line)
		if err != nil {
			t.Fatal(err)
		}
		err = checkClassicStatus(n, st, tt.base)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%q: %v", tt.line, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.substr) {
			t.Errorf("%q (base %v): %v, want %v with %q", tt.line, tt.base, err, tt.want, tt.substr)
		}
		if errors.Is(err, ErrBaseInvalid) && errors.Is(err, ErrSnapshotInvalid) {
			t.Errorf("%q: both invalid sentinels: %v", tt.line, err)
		}
	}
}

// classicLV makes an LV as lvs reports a classic snapshot.
func classicLV(name, attr string, t time.Time) *LV {
	return &LV{VG: "vg0", Name: name, Origin: "vol", Attr: attr, Size: 8 << 20, OriginSize: 64 << 20, ChunkSize: 4096,
		UUID: "uuid-" + name, Time: t, DMPath: "/dev/mapper/vg0-" + name, Active: attr[4] == 'a', DataPercent: 1}
}

func TestCheckClassicPair(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Hour)
	origin := &LV{VG: "vg0", Name: "vol", Attr: "owi-aos---", Active: true}
	s0 := classicLV("s0", "sri-a-s---", t0)
	s1 := classicLV("s1", "sri-a-s---", t1)
	other := classicLV("o0", "sri-a-s---", t0)
	other.Origin = "other"
	invalid := classicLV("s0", "sri-I-s---", t0)
	inactive := classicLV("s0", "sri---s---", t0)
	same := classicLV("s0", "sri-a-s---", t1)
	thin := &LV{VG: "vg0", Name: "t", Pool: "pool", Origin: "v", Attr: "Vri---tz-k"}
	tests := []struct {
		name       string
		snap, base *LV
		origin     *LV
		want       error
		substr     string
	}{
		{"full", s1, nil, origin, nil, ""},
		{"incremental", s1, s0, origin, nil, ""},
		{"live origin", origin, nil, nil, ErrNotSnapshot, "never a live volume"},
		{"thin snapshot", thin, nil, nil, ErrNotSnapshot, "OpenDelta"},
		{"base newer", s0, s1, origin, ErrBadBase, "newer than"},
		{"same second", s1, same, origin, ErrBadBase, "same second"},
		{"base of another volume", s1, other, origin, ErrBadBase, "same volume"},
		{"base is the snapshot", s1, s1, origin, ErrBadBase, "itself"},
		{"base not a snapshot", s1, origin, origin, ErrBadBase, "not a classic snapshot"},
		{"base invalid", s1, invalid, origin, ErrBaseInvalid, "copy-on-write space filled up"},
		{"snapshot invalid", classicLV("s1", "sri-I-s---", t1), s0, origin, ErrSnapshotInvalid, "is invalid"},
		{"base inactive", s1, inactive, origin, ErrInactive, "lvchange -ay vg0/vol"},
		{"origin merging", s1, s0, &LV{VG: "vg0", Name: "vol", Attr: "Owi-aos---"}, ErrSnapshotMerging, "merging into vg0/vol"},
		{"merge failed", s1, s0, &LV{VG: "vg0", Name: "vol", Attr: "owi-mos---"}, ErrSnapshotMerging, "failed"},
	}
	for _, tt := range tests {
		err := checkClassicPair(tt.snap, tt.base, tt.origin)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.substr) {
			t.Errorf("%s: %v, want %v with %q", tt.name, err, tt.want, tt.substr)
		}
	}
}

// sliceExtents serves extents from a slice, through a spool like the real
// ones.
func spoolOf(t *testing.T, exts []archive.Extent) *Extents {
	t.Helper()
	sp, err := newSpool(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		if err := sp.write(e); err != nil {
			t.Fatal(err)
		}
	}
	x, err := sp.finish()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.Close() })
	return x
}

// TestExtentUnion compares the union of random extent lists, clipped and
// filled past a limit, with a byte map.
func TestExtentUnion(t *testing.T) {
	r := testRand(t)
	const size = 4000
	random := func() []archive.Extent {
		var out []archive.Extent
		pos := int64(0)
		for pos < size {
			pos += r.Int64N(80)
			n := 1 + r.Int64N(60)
			if pos+n > size {
				break
			}
			out = append(out, archive.Extent{Offset: pos, Length: n, Kind: archive.KindData})
			pos += n + r.Int64N(2) // sometimes adjacent
			if r.IntN(5) == 0 {
				pos += 1
			}
		}
		return out
	}
	for round := 0; round < 300; round++ {
		a, b := random(), random()
		limit := int64(size)
		if round%3 == 1 {
			limit = r.Int64N(size)
		}
		var got []archive.Extent
		u := &extentUnion{limit: limit, out: func(e archive.Extent) error { got = append(got, e); return nil }}
		if round%5 != 4 {
			u.other = spoolOf(t, b)
		} else {
			b = nil
		}
		for _, e := range a {
			if err := u.add(e); err != nil {
				t.Fatal(err)
			}
		}
		if err := u.finish(size); err != nil {
			t.Fatal(err)
		}
		want := make([]bool, size)
		for _, l := range [][]archive.Extent{a, b} {
			for _, e := range l {
				for i := e.Offset; i < e.End() && i < limit; i++ {
					want[i] = true
				}
			}
		}
		for i := limit; i < size; i++ {
			want[i] = true
		}
		have := make([]bool, size)
		for i, e := range got {
			if e.Length <= 0 || e.Kind != archive.KindData || i > 0 && e.Offset <= got[i-1].End() {
				t.Fatalf("round %d: extent %d %+v after %v", round, i, e, got[:i])
			}
			for j := e.Offset; j < e.End(); j++ {
				have[j] = true
			}
		}
		if !reflect.DeepEqual(have, want) {
			t.Fatalf("round %d: union differs", round)
		}
	}
}

func TestClassicTableError(t *testing.T) {
	ce := &cow.Error{Name: "/dev/mapper/vg0-s0-cow", Offset: 4104, Err: cow.ErrCorrupt, Detail: "x"}
	err := classicTableError(ce)
	if !errors.Is(err, ErrMetadata) || !errors.Is(err, cow.ErrCorrupt) || err.Error() != ce.Error() {
		t.Errorf("%v", err)
	}
	inv := &cow.Error{Err: cow.ErrInvalidated}
	if err := classicTableError(inv); errors.Is(err, ErrMetadata) {
		t.Errorf("invalidated is not corrupt: %v", err)
	}
	if err := classicTableError(io.ErrUnexpectedEOF); errors.Is(err, ErrMetadata) {
		t.Errorf("I/O errors are not corrupt: %v", err)
	}
}
