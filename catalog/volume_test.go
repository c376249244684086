package catalog

import (
	"errors"
	"math/rand"
	"strings"
	"testing"
)

func TestDirName(t *testing.T) {
	for _, tc := range []struct{ volume, dir string }{
		{"vg0/vm1", "vg0%2Fvm1"},
		{"disk.img", "disk.img"},
		{".", "%2E"},
		{"..", "%2E."},
		{".hidden", "%2Ehidden"},
		{"a..b", "a..b"},
		{"100%", "100%25"},
		{"a b", "a%20b"},
		{"vg-0/lv_1+x", "vg-0%2Flv_1%2Bx"},
		{"/var/lib/images/disk.img", "%2Fvar%2Flib%2Fimages%2Fdisk.img"},
		{"ü", "%C3%BC"},
		{"A-Z_0.9", "A-Z_0.9"},
	} {
		if got := DirName(tc.volume); got != tc.dir {
			t.Errorf("DirName(%q) = %q, want %q", tc.volume, got, tc.dir)
		}
		back, err := ParseDirName(tc.dir)
		if err != nil || back != tc.volume {
			t.Errorf("ParseDirName(%q) = %q, %v, want %q", tc.dir, back, err, tc.volume)
		}
	}
}

func TestParseDirNameRejectsNonCanonical(t *testing.T) {
	for _, dir := range []string{
		"", "a%2fb", "a%2", "a%", "a%ZZ", "%41", "a/b", ".x", ".", "..", "a%00b", "%FF",
	} {
		if v, err := ParseDirName(dir); err == nil {
			t.Errorf("ParseDirName(%q) = %q, want an error", dir, v)
		}
	}
}

// TestDirNameProperties checks, on random names, that DirName is reversible
// (hence collision-free) and yields one safe path element.
func TestDirNameProperties(t *testing.T) {
	rng := rand.New(rand.NewSource(testSeed(t)))
	alphabet := []rune("ab/.%-_ +:Zü€\\\t")
	seen := make(map[string]string)
	for range 20000 {
		n := 1 + rng.Intn(12)
		r := make([]rune, n)
		for i := range r {
			r[i] = alphabet[rng.Intn(len(alphabet))]
		}
		name := string(r)
		dir := DirName(name)
		if ValidVolumeName(name) != nil {
			if !strings.ContainsRune(name, '\t') {
				t.Fatalf("ValidVolumeName(%q) rejected a printable name", name)
			}
			continue
		}
		if dir == "." || dir == ".." || strings.HasPrefix(dir, ".") || strings.ContainsAny(dir, "/\\ \x00") {
			t.Fatalf("DirName(%q) = %q is not a safe file name", name, dir)
		}
		back, err := ParseDirName(dir)
		if err != nil || back != name {
			t.Fatalf("ParseDirName(DirName(%q)) = %q, %v", name, back, err)
		}
		if other, ok := seen[dir]; ok && other != name {
			t.Fatalf("DirName(%q) == DirName(%q) == %q", name, other, dir)
		}
		seen[dir] = name
	}
}

func TestValidVolumeName(t *testing.T) {
	for _, bad := range []string{"", "a\x00b", "a\nb", "\xff", strings.Repeat("/", 70)} {
		if ValidVolumeName(bad) == nil {
			t.Errorf("ValidVolumeName(%q) accepted", bad)
		}
	}
	// Names that would drive a terminal or read as another name.
	for _, bad := range []string{"vm\x1b]0;owned\x07", "vm\x1b[2J", "a\u0085b", "a\u009bb", "a\x7fb",
		"evil\u202egpj.exe", "a\u202ab", "a\u2066b", "a\u2069b", "a\u200fb", "a\u2028b"} {
		err := ValidVolumeName(bad)
		if err == nil {
			t.Errorf("ValidVolumeName(%+q) accepted", bad)
			continue
		}
		// The refusal itself must not carry the character to a terminal.
		for _, r := range err.Error() {
			if unsafeRune(r) {
				t.Errorf("ValidVolumeName(%+q): the message holds %U: %+q", bad, r, err.Error())
			}
		}
	}
	for _, good := range []string{"vg0/vm1", "disk.img", "..", strings.Repeat("a", 200), "café/vm", "日本語", "a\u200db"} {
		if err := ValidVolumeName(good); err != nil {
			t.Errorf("ValidVolumeName(%q): %v", good, err)
		}
	}
}

func TestVolumeRecords(t *testing.T) {
	ts := newTestStore(t)
	v := &Volume{Name: "vg0/vm1", UUID: "Abc123-x", Kind: KindLVMThin, Source: "vg0/vm1", BlockSize: 65536,
		Retention: Retention{KeepLast: 3, KeepDaily: 7}}
	mustUpdate(t, ts, func(tx *Tx) error { return tx.PutVolume(v) })
	if v.Created.IsZero() {
		t.Error("PutVolume did not set Created")
	}
	ts.putVolume("disk.img")
	mustView(t, ts, func(tx *Tx) error {
		got, err := tx.Volume("vg0/vm1")
		if err != nil {
			return err
		}
		if got.Retention != v.Retention || got.UUID != v.UUID || !got.Created.Equal(v.Created) {
			t.Errorf("Volume = %+v, want %+v", got, v)
		}
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		if len(vols) != 2 || vols[0].Name != "disk.img" || vols[1].Name != "vg0/vm1" {
			t.Errorf("Volumes = %v", vols)
		}
		if _, err := tx.Volume("nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Volume(nope): %v", err)
		}
		return nil
	})
	for _, bad := range []*Volume{
		{Name: "", Kind: KindFile, BlockSize: 4096},
		{Name: "x", Kind: "", BlockSize: 4096},
		{Name: "x", Kind: KindFile, BlockSize: 0},
		{Name: "x", Kind: KindFile, BlockSize: 4096, Retention: Retention{KeepDaily: -1}},
		{Name: "x", Kind: KindFile, BlockSize: 4096, Source: strings.Repeat("s", maxField+1)},
	} {
		err := ts.Update(func(tx *Tx) error { return tx.PutVolume(bad) })
		if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("PutVolume(%+v): %v, want ErrInvalidRecord", bad, err)
		}
	}

	snap := ts.commit("vg0/vm1", "", []byte("full"))
	if err := ts.Update(func(tx *Tx) error { return tx.DeleteVolume("vg0/vm1") }); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteVolume with snapshots: %v, want ErrInUse", err)
	}
	if err := ts.Remove("vg0/vm1", snap.ID); err != nil {
		t.Fatal(err)
	}
	mustUpdate(t, ts, func(tx *Tx) error { return tx.DeleteVolume("vg0/vm1") })
	if err := ts.Update(func(tx *Tx) error { return tx.DeleteVolume("vg0/vm1") }); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteVolume: %v, want ErrNotFound", err)
	}
}
