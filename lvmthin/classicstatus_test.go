package lvmthin

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseSnapshotStatus(t *testing.T) {
	tests := []struct {
		line string
		want SnapshotStatus
	}{
		{"0 131072 snapshot 24/16384 16", SnapshotStatus{State: SnapshotValid, SectorsAllocated: 24, TotalSectors: 16384, MetadataSectors: 16}},
		{"0 131072 snapshot 9000/139264 48", SnapshotStatus{State: SnapshotValid, SectorsAllocated: 9000, TotalSectors: 139264, MetadataSectors: 48}},
		{"0 131072 snapshot-merge 24/16384 16", SnapshotStatus{State: SnapshotValid, Merging: true, SectorsAllocated: 24, TotalSectors: 16384, MetadataSectors: 16}},
		{"0 131072 snapshot Invalid", SnapshotStatus{State: SnapshotInvalid}},
		{"0 131072 snapshot Overflow", SnapshotStatus{State: SnapshotOverflow}},
		{"0 131072 snapshot Merge failed", SnapshotStatus{State: SnapshotMergeFailed}},
		{"0 131072 snapshot-merge Merge failed", SnapshotStatus{State: SnapshotMergeFailed, Merging: true}},
		{"0 131072 snapshot Unknown", SnapshotStatus{State: SnapshotUnknown}},
		{"0 131072 snapshot 16/16 16 future", SnapshotStatus{State: SnapshotValid, SectorsAllocated: 16, TotalSectors: 16, MetadataSectors: 16}},
	}
	for _, tt := range tests {
		st, err := ParseSnapshotStatus(tt.line)
		if err != nil {
			t.Fatalf("%q: %v", tt.line, err)
		}
		st.RawStatusWords = nil
		if !reflect.DeepEqual(*st, tt.want) {
			t.Errorf("%q: %+v, want %+v", tt.line, *st, tt.want)
		}
	}
	if st, _ := ParseSnapshotStatus("0 8 snapshot 24/96 16"); st.Usage() != 25 {
		t.Errorf("usage %v", st.Usage())
	}
	for _, line := range []string{
		"", "0 131072", "0 131072 snapshot", "0 131072 linear 7:0 2048", "0 131072 snapshot-origin ",
		"0 131072 thin-pool 1 1/2 1/2 - rw", "0 131072 snapshot 24/16384", "0 131072 snapshot 24 16",
		"0 131072 snapshot 24/16384 x", "0 131072 snapshot 20000/16384 16", "0 131072 snapshot 24/16384 32",
		"0 131072 snapshot Merge", "0 131072 snapshot invalid",
	} {
		if st, err := ParseSnapshotStatus(line); !errors.Is(err, ErrMetadata) {
			t.Errorf("ParseSnapshotStatus(%q) = %+v, %v; want ErrMetadata", line, st, err)
		}
	}
}

func FuzzParseSnapshotStatus(f *testing.F) {
	for _, s := range strings.Split(strings.TrimSpace(string(readFixture(f, "snapshot-status.txt"))), "\n") {
		f.Add(s)
	}
	for _, s := range []string{"0 131072 snapshot 24/16384 16", "0 131072 snapshot Invalid", "0 1 snapshot-merge Merge failed",
		"0 131072 snapshot Overflow", "0 131072 snapshot Unknown"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		st, err := ParseSnapshotStatus(line)
		if err != nil {
			if !errors.Is(err, ErrMetadata) {
				t.Fatalf("error %v is not ErrMetadata", err)
			}
			return
		}
		switch st.State {
		case SnapshotValid:
			if st.SectorsAllocated > st.TotalSectors || st.MetadataSectors > st.SectorsAllocated {
				t.Fatalf("accepted %+v", st)
			}
			if u := st.Usage(); !(u >= 0 && u <= 100) {
				t.Fatalf("usage %v", u)
			}
		case SnapshotInvalid, SnapshotOverflow, SnapshotMergeFailed, SnapshotUnknown:
			if st.SectorsAllocated != 0 || st.TotalSectors != 0 {
				t.Fatalf("figures with state %s", st.State)
			}
		default:
			t.Fatalf("state %q", st.State)
		}
	})
}

// TestParseSnapshotStatusFixtures: dmsetup status of the snapshots of
// testdata/cow (see its README).
func TestParseSnapshotStatusFixtures(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(string(readFixture(t, "snapshot-status.txt"))), "\n")
	want := []SnapshotStatus{
		{State: SnapshotValid, SectorsAllocated: 160, TotalSectors: 8192, MetadataSectors: 16},   // small
		{State: SnapshotValid, SectorsAllocated: 4832, TotalSectors: 8192, MetadataSectors: 32},  // areas
		{State: SnapshotValid, SectorsAllocated: 1024, TotalSectors: 8192, MetadataSectors: 256}, // chunk64k
		{State: SnapshotInvalid}, // overflowed
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines", len(lines))
	}
	for i, line := range lines {
		st, err := ParseSnapshotStatus(line)
		if err != nil {
			t.Fatal(err)
		}
		st.RawStatusWords = nil
		if !reflect.DeepEqual(*st, want[i]) {
			t.Errorf("line %d: %+v, want %+v", i, *st, want[i])
		}
	}
}

func TestKinds(t *testing.T) {
	tests := []struct {
		lv   LV
		kind VolumeKind
	}{
		{LV{Name: "v", Pool: "pool", Attr: "Vwi-a-tz--"}, KindThin},
		{LV{Name: "s", Pool: "pool", Origin: "v", Attr: "Vri---tz-k"}, KindThinSnapshot},
		{LV{Name: "thin", Pool: "pool", Attr: "owi-a-tz--"}, KindThin}, // thin origin of a classic snapshot
		{LV{Name: "pool", Attr: "twi-aotz--"}, KindThinPool},
		{LV{Name: "[pool_tdata]", Attr: "Twi-ao----"}, KindOther},
		{LV{Name: "[pool_tmeta]", Attr: "ewi-ao----"}, KindOther},
		{LV{Name: "[lvol0_pmspare]", Attr: "ewi-------"}, KindOther},
		{LV{Name: "plain", Attr: "-wi-a-----"}, KindThick},
		{LV{Name: "vol", Attr: "owi-a-s---"}, KindThick},
		{LV{Name: "vol", Attr: "Owi-aos---"}, KindThick},
		{LV{Name: "r1", Attr: "rwi-a-r---"}, KindThick},
		{LV{Name: "s0", Origin: "vol", Attr: "swi-a-s---"}, KindClassicSnapshot},
		{LV{Name: "s0", Origin: "vol", Attr: "sri-I-s---"}, KindClassicSnapshot},
		{LV{Name: "[s2]", Origin: "vol", Attr: "Swi-a-s---"}, KindClassicSnapshot},
		{LV{Name: "z", Attr: "vwi-a-v---"}, KindOther},
		{LV{Name: "short", Attr: "-wi"}, KindOther},
	}
	for _, tt := range tests {
		if k := tt.lv.Kind(); k != tt.kind {
			t.Errorf("%s %s: kind %v, want %v", tt.lv.Name, tt.lv.Attr, k, tt.kind)
		}
	}
	inv := LV{Name: "s0", Origin: "vol", Attr: "sri-I-s---", Size: 8 << 20, OriginSize: 64 << 20}
	if !inv.IsInvalidSnapshot() || inv.IsMerging() || inv.VolumeSize() != 64<<20 {
		t.Errorf("invalid snapshot: %v %v %v", inv.IsInvalidSnapshot(), inv.IsMerging(), inv.VolumeSize())
	}
	if m := (LV{Attr: "Swi-a-s---"}); !m.IsMerging() || !(&LV{Attr: "Owi-aos---"}).IsMerging() {
		t.Error("merging not seen")
	}
	if (&LV{Attr: "owi-m-s---"}).MergeFailed() != true {
		t.Error("merge failure not seen")
	}
	if v := (LV{Name: "v", Pool: "pool", Attr: "Vwi-a-tz--", Size: 5}); v.VolumeSize() != 5 {
		t.Error("thin volume size")
	}
}
