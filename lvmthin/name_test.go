package lvmthin

import (
	"errors"
	"strings"
	"testing"
)

func TestParseName(t *testing.T) {
	tests := []struct {
		in   string
		want Name
	}{
		{"vg0/vm1", Name{"vg0", "vm1"}},
		{"/dev/vg0/vm1", Name{"vg0", "vm1"}},
		{"/dev/mapper/vg0-vm1", Name{"vg0", "vm1"}},
		{"test-vg/thin-snap", Name{"test-vg", "thin-snap"}},
		{"/dev/test-vg/thin-snap", Name{"test-vg", "thin-snap"}},
		{"/dev/mapper/test--vg-thin--snap", Name{"test-vg", "thin-snap"}},
		{"/dev/mapper/a---b", Name{"a-", "b"}},
		{"/dev/mapper/a-b----c", Name{"a", "b--c"}},
		{"/dev/mapper/a--b-c--d--e", Name{"a-b", "c-d-e"}},
		{"my.vg+1/lv_2.x", Name{"my.vg+1", "lv_2.x"}},
		{"/dev/mapper/my.vg+1-lv_2.x", Name{"my.vg+1", "lv_2.x"}},
		{"vg/" + strings.Repeat("x", 127), Name{"vg", strings.Repeat("x", 127)}},
	}
	for _, tt := range tests {
		got, err := ParseName(tt.in)
		if err != nil {
			t.Errorf("ParseName(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseName(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

func TestParseNameBad(t *testing.T) {
	for _, in := range []string{
		"", "vg", "vg/", "/lv", "vg/lv/x", "vg//lv", "/dev/vg", "/dev/vg/lv/x", "/dev/vg/",
		"/dev/mapper/", "/dev/mapper/vglv", "/dev/mapper/vg-", "/dev/mapper/-lv",
		"/dev/mapper/vg0-pool-tpool", "/dev/mapper/vg0-base-real", "/dev/mapper/a-b-c-d",
		"/dev/mapper/vg0-pool_tmeta", "vg0/pool_tdata", "vg0/snapshot1", "vg0/pvmove0",
		"-vg/lv", "vg/-lv", "vg/l v", "vg/lv\n", "vg/l*v", "./lv", "../lv", "vg/.", "vg/..",
		"vg/" + strings.Repeat("x", 128), "vg/lv\x00", "mapper/lv",
	} {
		if n, err := ParseName(in); err == nil {
			t.Errorf("ParseName(%q) = %+v, want an error", in, n)
		} else if !errors.Is(err, ErrName) {
			t.Errorf("ParseName(%q): %v is not ErrName", in, err)
		}
	}
}

func TestDMName(t *testing.T) {
	tests := []struct{ vg, lv, layer, want string }{
		{"vg0", "vm1", "", "vg0-vm1"},
		{"test-vg", "thin-snap", "", "test--vg-thin--snap"},
		{"test-vg", "pool", "tpool", "test--vg-pool-tpool"},
		{"test-vg", "pool_tmeta", "", "test--vg-pool_tmeta"},
		{"vg", "pool", "_tmeta", "vg-pool_tmeta"},
		{"vg", "my-lv", "re-al", "vg-my--lv-re--al"},
	}
	for _, tt := range tests {
		if got := DMName(tt.vg, tt.lv, tt.layer); got != tt.want {
			t.Errorf("DMName(%q, %q, %q) = %q, want %q", tt.vg, tt.lv, tt.layer, got, tt.want)
		}
	}
	if got := MetadataDevice(Name{"test-vg", "thin-pool"}); got != "/dev/mapper/test--vg-thin--pool_tmeta" {
		t.Errorf("MetadataDevice = %q", got)
	}
	if got := poolDMName(Name{"test-vg", "thin-pool"}); got != "test--vg-thin--pool-tpool" {
		t.Errorf("poolDMName = %q", got)
	}
}

// FuzzParseName checks that every accepted name survives all three
// spellings unchanged.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"vg0/vm1", "/dev/vg0/vm1", "/dev/mapper/test--vg-thin--snap",
		"/dev/mapper/a---b", "/dev/mapper/vg0-pool-tpool", "vg/lv/x", "-vg/lv"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseName(s)
		if err != nil {
			if !errors.Is(err, ErrName) {
				t.Fatalf("ParseName(%q): %v is not ErrName", s, err)
			}
			return
		}
		for _, spelling := range []string{n.String(), "/dev/" + n.VG + "/" + n.LV, "/dev/mapper/" + n.DMName()} {
			m, err := ParseName(spelling)
			if err != nil {
				t.Fatalf("ParseName(%q) = %+v, but ParseName(%q): %v", s, n, spelling, err)
			}
			if m != n {
				t.Fatalf("ParseName(%q) = %+v, ParseName(%q) = %+v", s, n, spelling, m)
			}
		}
	})
}
