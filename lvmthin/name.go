package lvmthin

import (
	"errors"
	"fmt"
	"strings"
)

// Name identifies a logical volume by volume group and LV name.
type Name struct {
	VG, LV string
}

// String returns the "vg/lv" spelling LVM commands take.
func (n Name) String() string { return n.VG + "/" + n.LV }

// DMName returns the LV's device-mapper name, as in /dev/mapper/<DMName>.
func (n Name) DMName() string { return DMName(n.VG, n.LV, "") }

// ErrName is returned (wrapped) by ParseName for input that names no LV.
var ErrName = errors.New("lvmthin: bad volume name")

// maxNameLen is LVM's NAME_LEN minus the terminating NUL.
const maxNameLen = 127

// ParseName accepts the spellings users type for a logical volume:
//
//	vg/lv
//	/dev/vg/lv
//	/dev/mapper/vg-lv   (a hyphen inside vg or lv is doubled: my--vg-my--lv)
//
// It checks the names against LVM's rules, so that a name that cannot exist
// is refused before any command runs. Device-mapper names of LVM's internal
// layers (vg-pool-tpool, vg-lv-real) and of hidden sub-LVs (vg-pool_tmeta)
// are refused: they are not volumes one backs up.
func ParseName(s string) (Name, error) {
	var n Name
	switch {
	case strings.HasPrefix(s, "/dev/mapper/"):
		dm := strings.TrimPrefix(s, "/dev/mapper/")
		vg, lv, layer, err := splitDMName(dm)
		if err != nil {
			return Name{}, fmt.Errorf("%w %q: %v", ErrName, s, err)
		}
		if layer != "" {
			return Name{}, fmt.Errorf("%w %q: device-mapper layer %q of %s/%s is not a volume", ErrName, s, layer, vg, lv)
		}
		n = Name{VG: vg, LV: lv}
	case strings.HasPrefix(s, "/dev/"):
		parts := strings.Split(strings.TrimPrefix(s, "/dev/"), "/")
		if len(parts) != 2 {
			return Name{}, fmt.Errorf("%w %q: want /dev/VG/LV", ErrName, s)
		}
		n = Name{VG: parts[0], LV: parts[1]}
	default:
		parts := strings.Split(s, "/")
		if len(parts) != 2 {
			return Name{}, fmt.Errorf("%w %q: want VG/LV, /dev/VG/LV or /dev/mapper/VG-LV", ErrName, s)
		}
		n = Name{VG: parts[0], LV: parts[1]}
	}
	if err := checkVGName(n.VG); err != nil {
		return Name{}, fmt.Errorf("%w %q: %v", ErrName, s, err)
	}
	if err := checkLVName(n.LV); err != nil {
		return Name{}, fmt.Errorf("%w %q: %v", ErrName, s, err)
	}
	return n, nil
}

// DMName builds a device-mapper name the way libdevmapper's
// dm_build_dm_name does: "<vg>-<lv>[-<layer>]" with every hyphen inside
// vg, lv and layer doubled, so the single hyphens are unambiguous separators.
// A layer that starts with "_" is appended without a separator. Layers LVM
// uses: "tpool" (a thin pool's target), "real", "cow".
func DMName(vg, lv, layer string) string {
	var b strings.Builder
	b.WriteString(strings.ReplaceAll(vg, "-", "--"))
	if lv != "" {
		b.WriteByte('-')
		b.WriteString(strings.ReplaceAll(lv, "-", "--"))
	}
	if layer != "" {
		if layer[0] != '_' {
			b.WriteByte('-')
		}
		b.WriteString(strings.ReplaceAll(layer, "-", "--"))
	}
	return b.String()
}

// splitDMName undoes DMName (like libdevmapper's dm_split_lvm_name): a
// doubled hyphen is a hyphen, a single one ends a part.
func splitDMName(s string) (vg, lv, layer string, err error) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '-' {
			cur.WriteByte(s[i])
			continue
		}
		if i+1 < len(s) && s[i+1] == '-' {
			cur.WriteByte('-')
			i++
			continue
		}
		parts = append(parts, cur.String())
		cur.Reset()
	}
	parts = append(parts, cur.String())
	switch len(parts) {
	case 1:
		return "", "", "", errors.New("no single hyphen between volume group and volume")
	case 2:
		return parts[0], parts[1], "", nil
	case 3:
		if parts[2] == "" {
			return "", "", "", errors.New("ends with a hyphen")
		}
		return parts[0], parts[1], parts[2], nil
	}
	return "", "", "", errors.New("too many single hyphens")
}

// checkVGName applies LVM's rules for VG names (validate_name). A VG
// named "mapper" is refused too: its /dev/mapper/LV would be ambiguous with
// device-mapper names.
func checkVGName(s string) error {
	if err := checkChars("volume group", s); err != nil {
		return err
	}
	if s == "mapper" {
		return fmt.Errorf("volume group name %q clashes with /dev/mapper", s)
	}
	return nil
}

// hiddenLVParts are the strings LVM reserves for its internal sub-LVs
// (lvm2 apply_lvname_restrictions); no user-visible LV contains them.
var hiddenLVParts = []string{
	"_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_mimage", "_mlog",
	"_pmspare", "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
}

// checkLVName applies LVM's rules for LV names.
func checkLVName(s string) error {
	if err := checkChars("volume", s); err != nil {
		return err
	}
	if strings.HasPrefix(s, "snapshot") || strings.HasPrefix(s, "pvmove") {
		return fmt.Errorf("volume name %q uses a prefix LVM reserves", s)
	}
	for _, p := range hiddenLVParts {
		if strings.Contains(s, p) {
			return fmt.Errorf("%q names an internal LVM sub-volume (%s)", s, p)
		}
	}
	return nil
}

func checkChars(what, s string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s name", what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%s name longer than %d characters", what, maxNameLen)
	case s == "." || s == "..":
		return fmt.Errorf("%s name %q is not allowed", what, s)
	case s[0] == '-':
		return fmt.Errorf("%s name %q starts with a hyphen", what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '+' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("%s name %q has character %q (allowed: a-z A-Z 0-9 + _ . -)", what, s, c)
		}
	}
	return nil
}
