package lvmthin

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseReportMixed(t *testing.T) {
	lvs, err := parseReport(readFixture(t, "lvs-mixed.json"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*LV{}
	var names []string
	for _, lv := range lvs {
		byName[lv.Name] = lv
		names = append(names, lv.Name)
	}
	// "plain" has two segments and two rows; it must appear once.
	wantNames := []string{"[lvol0_pmspare]", "my-vol", "my-vol-snap1", "my-vol-snap2", "other", "plain",
		"plain-snap", "thin-pool", "[thin-pool_tdata]", "[thin-pool_tmeta]"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Fatalf("names %q\nwant %q", names, wantNames)
	}
	snap2 := byName["my-vol-snap2"]
	want := &LV{
		VG: "test-vg", Name: "my-vol-snap2", Pool: "thin-pool", DMPath: "/dev/mapper/test--vg-my--vol--snap2",
		ThinID: 3, Origin: "my-vol", Attr: "Vri---tz-k", Size: 64 << 20, ChunkSize: 64 << 10,
		UUID:           "J8RiuR-8s5P-4l3u-Vx2t-bbPA-cqWg-3a0XcW",
		Time:           time.Date(2026, 11, 21, 12, 52, 49, 0, time.UTC),
		SkipActivation: true, Active: false, DataPercent: -1,
		Layout: []string{"thin", "sparse"}, Role: []string{"public", "snapshot", "thinsnapshot"},
	}
	if !snap2.Time.Equal(want.Time) {
		t.Errorf("time %v, want %v", snap2.Time, want.Time)
	}
	snap2.Time = want.Time
	if !reflect.DeepEqual(snap2, want) {
		t.Errorf("got  %+v\nwant %+v", snap2, want)
	}
	if !snap2.IsThinSnapshot() || snap2.FullName() != (Name{"test-vg", "my-vol-snap2"}) ||
		snap2.PoolName() != (Name{"test-vg", "thin-pool"}) {
		t.Errorf("snapshot predicates wrong for %+v", snap2)
	}
	vol := byName["my-vol"]
	if !vol.IsThin() || vol.IsThinSnapshot() || !vol.Active || vol.SkipActivation || vol.ThinID != 1 || vol.ChunkSize != 64<<10 {
		t.Errorf("my-vol: %+v", vol)
	}
	pool := byName["thin-pool"]
	if !pool.IsThinPool() || pool.IsThin() || pool.ChunkSize != 64<<10 || pool.ThinID != 0 {
		t.Errorf("thin-pool: %+v", pool)
	}
	cs := byName["plain-snap"]
	if cs.IsThin() || cs.IsThinSnapshot() || cs.Origin != "plain" || cs.ChunkSize != 4096 {
		t.Errorf("classic snapshot: %+v", cs)
	}
	if p := byName["plain"]; p.Size != 12<<20 || p.IsThin() {
		t.Errorf("plain: %+v", p)
	}
}

func TestParseReportOthers(t *testing.T) {
	lvs, err := parseReport(readFixture(t, "lvs-binary.json"))
	if err != nil {
		t.Fatal(err)
	}
	// The pool is not in this one-LV report: the chunk size is unknown.
	if len(lvs) != 1 || !lvs[0].SkipActivation || lvs[0].ChunkSize != 0 || lvs[0].ThinID != 3 {
		t.Errorf("binary report: %+v", lvs)
	}
	lvs, err = parseReport(readFixture(t, "lvs-full-pool.json"))
	if err != nil {
		t.Fatal(err)
	}
	if lvs[0].Name != "big" || lvs[0].ChunkSize != 64<<10 || lvs[2].Attr[8] != 'D' {
		t.Errorf("full pool report: %+v %+v", lvs[0], lvs[2])
	}
}

func TestParseReportBad(t *testing.T) {
	row := func(over string) string {
		fields := map[string]string{"vg_name": "vg", "lv_name": "lv", "lv_attr": "Vwi-a-tz--", "lv_size": "4096",
			"chunk_size": "0", "thin_id": "1", "lv_time": "2026-11-21 12:52:49 +0000"}
		k, v, _ := strings.Cut(over, "=")
		fields[k] = v
		var b strings.Builder
		b.WriteString(`{"report":[{"lv":[{`)
		first := true
		for k, v := range fields {
			if !first {
				b.WriteString(",")
			}
			first = false
			b.WriteString(`"` + k + `":"` + v + `"`)
		}
		b.WriteString(`}]}]}`)
		return b.String()
	}
	if _, err := parseReport([]byte(row(""))); err != nil {
		t.Fatalf("the good row fails: %v", err)
	}
	for _, in := range []string{
		"", "{", "[]", `{"report":[{"lv":[{"lv_name":1}]}]}`,
		string(readFixture(t, "lvs-suffix.json")), // sizes with unit suffixes
		row("lv_size=64.00m"), row("lv_size=-1"), row("lv_size=99999999999999999999"),
		row("chunk_size=64k"), row("thin_id=x"), row("thin_id=4294967296"), row("lv_attr=Vwi"),
		row("lv_time=yesterday"), row("vg_name="), row("lv_name="),
	} {
		if lvs, err := parseReport([]byte(in)); err == nil {
			t.Errorf("parseReport(%.80q) = %+v, want an error", in, lvs)
		}
	}
}

func FuzzParseReport(f *testing.F) {
	for _, name := range []string{"lvs-mixed.json", "lvs-binary.json", "lvs-suffix.json", "lvs-full-pool.json"} {
		f.Add(readFixture(f, name))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lvs, err := parseReport(data)
		if err != nil {
			return
		}
		seen := map[Name]bool{}
		for _, lv := range lvs {
			if lv.VG == "" || lv.Name == "" || len(lv.Attr) != 10 || lv.Size < 0 || lv.ChunkSize < 0 {
				t.Fatalf("accepted %+v", lv)
			}
			if seen[lv.FullName()] {
				t.Fatalf("%v twice", lv.FullName())
			}
			seen[lv.FullName()] = true
		}
	})
}

// TestParseReportClassic reads lvs -a of a VG with a thick origin whose
// classic snapshot is merging (into an open origin, so waiting), another
// classic snapshot, a thin pool and a thin volume.
func TestParseReportClassic(t *testing.T) {
	lvs, err := parseReport(readFixture(t, "lvs-classic.json"))
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*LV{}
	for _, lv := range lvs {
		byName[lv.Name] = lv
	}
	want := map[string]VolumeKind{
		"my-vol": KindThick, "my-vol-s0": KindClassicSnapshot, "[my-vol-s2]": KindClassicSnapshot,
		"my-vol-s3": KindClassicSnapshot, "pool": KindThinPool, "thin": KindThin, "[pool_tdata]": KindOther,
		"[pool_tmeta]": KindOther, "[lvol0_pmspare]": KindOther,
	}
	if len(lvs) != len(want) {
		t.Fatalf("%d LVs, want %d", len(lvs), len(want))
	}
	for name, k := range want {
		lv := byName[name]
		if lv == nil || lv.Kind() != k {
			t.Errorf("%s: %+v, want kind %v", name, lv, k)
		}
	}
	o, s0, s2 := byName["my-vol"], byName["my-vol-s0"], byName["[my-vol-s2]"]
	if !o.IsMerging() || o.Attr != "Owi-aos---" || o.Size != 64<<20 || o.DataPercent != -1 {
		t.Errorf("merging origin: %+v", o)
	}
	if s0.Origin != "my-vol" || s0.Size != 8<<20 || s0.OriginSize != 64<<20 || s0.VolumeSize() != 64<<20 ||
		s0.ChunkSize != 4096 || s0.IsMerging() || s0.IsInvalidSnapshot() || !s0.Active || s0.Attr[1] != 'r' ||
		s0.DataPercent != 54.93 { // mkfs.ext4 wrote to the origin after the snapshot
		t.Errorf("classic snapshot: %+v", s0)
	}
	if !s2.IsMerging() || s2.Attr[0] != 'S' {
		t.Errorf("merging snapshot: %+v", s2)
	}
	if p := byName["pool"]; p.DataPercent != 0 || p.ChunkSize != 64<<10 {
		t.Errorf("pool: %+v", p)
	}
}
