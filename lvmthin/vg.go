package lvmthin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// VG is a volume group as vgs reports it: how much room is left for new
// LVs, such as a classic snapshot's copy-on-write store.
type VG struct {
	Name string
	// Size and Free are the VG's size and unallocated space in bytes.
	Size, Free int64
	// ExtentSize is the unit LVM allocates in (vg_extent_size): an LV's
	// size is rounded up to a multiple of it.
	ExtentSize int64
}

// vgsFields are the columns asked of vgs, in the order of reportVG's tags.
const vgsFields = "vg_name,vg_size,vg_free,vg_extent_size"

type reportVG struct {
	Name       string `json:"vg_name"`
	Size       string `json:"vg_size"`
	Free       string `json:"vg_free"`
	ExtentSize string `json:"vg_extent_size"`
}

// parseVGReport parses the output of
// `vgs --reportformat json --units b --nosuffix -o <vgsFields>`.
func parseVGReport(data []byte) ([]*VG, error) {
	var r struct {
		Report []struct {
			VG []reportVG `json:"vg"`
		} `json:"report"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("vgs report: %w", err)
	}
	var vgs []*VG
	for _, rep := range r.Report {
		for _, row := range rep.VG {
			vg := &VG{Name: strings.TrimSpace(row.Name)}
			if vg.Name == "" {
				return nil, fmt.Errorf("vgs report: row without vg_name")
			}
			for _, f := range []struct {
				name string
				s    string
				dst  *int64
			}{{"vg_size", row.Size, &vg.Size}, {"vg_free", row.Free, &vg.Free}, {"vg_extent_size", row.ExtentSize, &vg.ExtentSize}} {
				n, err := parseBytes(f.s)
				if err != nil {
					return nil, fmt.Errorf("vgs report: %s: bad %s %q: %v", vg.Name, f.name, f.s, err)
				}
				*f.dst = n
			}
			if vg.ExtentSize <= 0 || vg.Free > vg.Size || vg.Size%vg.ExtentSize != 0 || vg.Free%vg.ExtentSize != 0 {
				return nil, fmt.Errorf("vgs report: %s: size %d, free %d and extent size %d do not fit together",
					vg.Name, vg.Size, vg.Free, vg.ExtentSize)
			}
			vgs = append(vgs, vg)
		}
	}
	return vgs, nil
}

// GetVG returns the volume group named name (`vgs`). It fails with
// ErrNotFound if there is none.
func GetVG(ctx context.Context, name string) (*VG, error) {
	if err := checkVGName(name); err != nil {
		return nil, fmt.Errorf("volume group %q: %w: %v", name, ErrName, err)
	}
	out, err := run(ctx, nil, programs.vgs, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", vgsFields, "--", name)
	if err != nil {
		return nil, fmt.Errorf("volume group %s: %w", name, err)
	}
	vgs, err := parseVGReport(out)
	if err != nil {
		return nil, fmt.Errorf("volume group %s: %w", name, err)
	}
	for _, vg := range vgs {
		if vg.Name == name {
			return vg, nil
		}
	}
	return nil, fmt.Errorf("volume group %s does not exist (vgs lists them): %w", name, ErrNotFound)
}
