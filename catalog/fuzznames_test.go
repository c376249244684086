package catalog

import (
	"fmt"
	"testing"
	"unicode/utf8"
)

// FuzzParseFileName: the names of files found in a store's volume
// directories (a store on someone else's disk is outside input). Whatever
// is accepted is exactly fileName's output for what it parsed to.
func FuzzParseFileName(f *testing.F) {
	id := "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
	for _, s := range []string{"00000001-" + id + ".tbk", "00000003-" + id + ".2.tbk", "00000000-" + id + ".tbk",
		"99999999999999999999-" + id + ".tbk", "00000001-" + id + ".0.tbk", "00000001-" + id + ".tbk.tmp", "x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, base string) {
		seq, id, gen, ok := parseFileName(base)
		if !ok {
			return
		}
		if seq == 0 || gen < 0 || ValidID(id) != nil {
			t.Fatalf("parseFileName(%q) = %d, %q, %d", base, seq, id, gen)
		}
		// Seqs may be written with more leading zeros than %08d gives;
		// the rest is canonical.
		if want := fileName("v", seq, id, gen); fmt.Sprintf("volumes/v/%s", base) != want {
			if s2, id2, g2, ok2 := parseFileName(want[len("volumes/v/"):]); !ok2 || s2 != seq || id2 != id || g2 != gen {
				t.Fatalf("parseFileName(%q) = %d %s %d, but fileName gives %q which parses differently", base, seq, id, gen, want)
			}
		}
	})
}

// FuzzParseTempName: file names in a store's tmp/, from which CleanTemp
// decides what it may remove.
func FuzzParseTempName(f *testing.F) {
	for _, s := range []string{"tbk.123.0123456789ab.vg0%2Fvm1.tmp", "tbk.0.0123456789ab.v.tmp", "tbk.01.0123456789ab.v.tmp",
		"tbk.123.0123456789a.v.tmp", "tbk.123.0123456789ab..tmp", "tbk.-1.0123456789ab.v.tmp", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, base string) {
		pid, ok := parseTempName(base)
		if ok && pid <= 0 {
			t.Fatalf("parseTempName(%q) = pid %d", base, pid)
		}
	})
}

// FuzzValidVolumeName: an accepted name has no rune a terminal would act
// on, maps to a directory name that fits and parses back to it.
func FuzzValidVolumeName(f *testing.F) {
	for _, s := range []string{"vg0/vm1", "disk.img", "a\x1b[2J", "a\u202eb", "a\u0085", "..", "\xff", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if ValidVolumeName(name) != nil {
			return
		}
		if !utf8.ValidString(name) {
			t.Fatalf("accepted invalid UTF-8 %q", name)
		}
		for _, r := range name {
			if unsafeRune(r) {
				t.Fatalf("accepted %+q with %U", name, r)
			}
		}
		d := DirName(name)
		if len(d) > maxDirName {
			t.Fatalf("accepted %q whose directory name is %d bytes", name, len(d))
		}
		if back, err := ParseDirName(d); err != nil || back != name {
			t.Fatalf("ParseDirName(DirName(%q)) = %q, %v", name, back, err)
		}
	})
}
