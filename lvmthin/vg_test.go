package lvmthin

import (
	"strings"
	"testing"
)

func TestParseVGReport(t *testing.T) {
	vgs, err := parseVGReport(readFixture(t, "vgs.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := VG{Name: "tb-vg", Size: 1069547520, Free: 687865856, ExtentSize: 4 << 20}
	if len(vgs) != 1 || *vgs[0] != want {
		t.Fatalf("got %+v, want %+v", vgs, want)
	}
	for _, tt := range []struct{ name, row string }{
		{"no name", `{"vg_name":" ", "vg_size":"8388608", "vg_free":"0", "vg_extent_size":"4194304"}`},
		{"suffix", `{"vg_name":"v", "vg_size":"1.00g", "vg_free":"0", "vg_extent_size":"4194304"}`},
		{"negative", `{"vg_name":"v", "vg_size":"8388608", "vg_free":"-4194304", "vg_extent_size":"4194304"}`},
		{"free above size", `{"vg_name":"v", "vg_size":"4194304", "vg_free":"8388608", "vg_extent_size":"4194304"}`},
		{"no extent size", `{"vg_name":"v", "vg_size":"4194304", "vg_free":"0", "vg_extent_size":""}`},
		{"free not in extents", `{"vg_name":"v", "vg_size":"8388608", "vg_free":"4096", "vg_extent_size":"4194304"}`},
	} {
		if vgs, err := parseVGReport([]byte(`{"report":[{"vg":[` + tt.row + `]}]}`)); err == nil {
			t.Errorf("%s: accepted %+v", tt.name, vgs)
		}
	}
	if _, err := parseVGReport([]byte(`{"report":[{"vg":[`)); err == nil || !strings.Contains(err.Error(), "vgs report") {
		t.Errorf("truncated: %v", err)
	}
}

func FuzzParseVGReport(f *testing.F) {
	f.Add(readFixture(f, "vgs.json"))
	f.Fuzz(func(t *testing.T, data []byte) {
		vgs, err := parseVGReport(data)
		if err != nil {
			return
		}
		for _, vg := range vgs {
			if vg.Name == "" || vg.ExtentSize <= 0 || vg.Free < 0 || vg.Free > vg.Size || vg.Free%vg.ExtentSize != 0 {
				t.Fatalf("accepted %+v", vg)
			}
		}
	})
}
