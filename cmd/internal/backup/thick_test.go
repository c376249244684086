package backup

import (
	"errors"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/lvmthin"
)

func TestParseSnapshotSize(t *testing.T) {
	const lv = 10 << 30
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"", 2 << 30}, // 20 % of the LV
		{"512M", 512 << 20},
		{"512MiB", 512 << 20},
		{"2g", 2 << 30},
		{"1T", 1 << 40},
		{"4096", 4096},
		{"64k", 64 << 10},
		{"25%", lv / 4},
		{"100%", lv},
		{"0.5%", lv / 200},
	} {
		got, err := parseSnapshotSize(c.in, lv)
		if err != nil || got != c.want {
			t.Errorf("parseSnapshotSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	// The floor: a small LV gets 1 GiB (capped later at what it can use).
	if got, err := parseSnapshotSize("", 100<<20); err != nil || got != 1<<30 {
		t.Errorf("default for a 100 MiB LV = %d, %v; want 1 GiB", got, err)
	}
	for _, in := range []string{"0", "-1G", "G", "1.5G", "12X", "1GB2", "0%", "101%", "x%", "1Gx", "99999999999T"} {
		_, err := parseSnapshotSize(in, lv)
		var ue *UsageError
		if !errors.As(err, &ue) {
			t.Errorf("parseSnapshotSize(%q) = %v, want a usage error", in, err)
		}
	}
}

func TestClassicStoreSize(t *testing.T) {
	const ext = 4 << 20
	for _, c := range []struct{ want, origin, got int64 }{
		{8 << 20, 256 << 20, 8 << 20},
		{1, 256 << 20, ext},                             // whole extents
		{9 << 20, 256 << 20, 12 << 20},                  // rounded up
		{1 << 30, 256 << 20, 256<<20 + 2*ext + ext},     // capped: data, exceptions, header
		{1 << 40, 100 << 30, 100<<30 + 400<<20 + 2*ext}, // 1/256 for the exceptions
	} {
		if got := classicStoreSize(c.want, c.origin, ext); got != c.got {
			t.Errorf("classicStoreSize(%d, %d) = %d, want %d", c.want, c.origin, got, c.got)
		}
	}
}

// A rebuilt catalog tells a thick volume's files from a thin one's by the
// header alone.
func TestVolumeRecordKind(t *testing.T) {
	when := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	origin := &lvmthin.LV{VG: "vg", Name: "data", UUID: "uuid-origin", Attr: "owi-aos---", Size: 1 << 30}
	snap := &lvmthin.LV{VG: "vg", Name: "data.thinback.x", Origin: "data", UUID: "uuid-snap", Attr: "sri-a-s---", Time: when, ChunkSize: 4096}
	v := record.VolumeOf(ClassicHeader(snap, nil, origin, 1<<30))
	if v.Kind != catalog.KindLVMThick || v.Source != "vg/data" || v.Name != "vg/data" || v.UUID != "uuid-origin" {
		t.Errorf("thick volume record %+v", v)
	}
	thin := &lvmthin.LV{VG: "vg", Name: "vm.thinback.x", Origin: "vm", Pool: "pool", UUID: "uuid-thin", Attr: "Vri---tz-k", Time: when, ThinID: 2, ChunkSize: 65536, Size: 1 << 30}
	thinOrigin := &lvmthin.LV{VG: "vg", Name: "vm", Pool: "pool", UUID: "uuid-vm", Attr: "Vwi-a-tz--", ThinID: 1, Size: 1 << 30}
	if v := record.VolumeOf(ThinHeader(thin, nil, thinOrigin)); v.Kind != catalog.KindLVMThin || v.Source != "vg/vm" {
		t.Errorf("thin volume record %+v", v)
	}
	// Thin files written before lvm.kind existed.
	h := ThinHeader(thin, nil, thinOrigin)
	h.SetAttr("lvm.kind", "")
	if v := record.VolumeOf(h); v.Kind != catalog.KindLVMThin {
		t.Errorf("thin volume record without lvm.kind %+v", v)
	}
}
