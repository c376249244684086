package lvmthin

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// LV is one logical volume as lvs reports it, plus its pool's chunk size.
// Everything a delta file header needs about a volume is here.
type LV struct {
	VG     string
	Name   string // LV name; hidden sub-LVs are reported as "[name]"
	Pool   string // thin pool LV name, "" if not a thin volume
	DMPath string // /dev/mapper/... path of the LV's device (exists only while active)
	// ThinID is the thin device id in the pool's metadata (the number
	// thin_delta's --snap1/--snap2 and thin_dump's --dev-id take); 0 if the
	// LV is not a thin volume (LVM numbers thin devices from 1).
	ThinID uint32
	Origin string // LV this one is a snapshot of, "" if none
	Attr   string // lv_attr, 10 characters; see lvs(8)
	// Size is lv_size: the virtual size of a thin volume, the size of an
	// ordinary LV, but for a classic snapshot the size of its
	// copy-on-write store. VolumeSize is the size of what it holds.
	Size int64
	// OriginSize is origin_size: for a snapshot the size of its origin (so
	// of the volume a classic snapshot shows); lvs reports an origin's own
	// size too, and 0 for other LVs.
	OriginSize int64
	// DataPercent is how full the LV is, in percent, as lvs' data_percent
	// says (snap_percent for classic snapshots: the share of the COW store
	// in use; 100 once invalidated), or -1 when lvs does not say (inactive,
	// or an LV without such a figure).
	DataPercent float64
	// ChunkSize is the pool's data block size in bytes (the unit of
	// thin_delta's ranges) for thin volumes and pools; for other LVs it is
	// lvs' chunk_size of the LV itself (classic snapshots), else 0.
	ChunkSize int64
	UUID      string
	Time      time.Time // creation time (lv_time), whole seconds
	// SkipActivation is the activation-skip flag (lv_attr[9] == 'k'),
	// which LVM sets on new thin snapshots: they activate only with -K.
	SkipActivation bool
	Active         bool     // lv_attr[4] == 'a'
	Layout         []string // lv_layout, e.g. ["thin", "sparse"]
	Role           []string // lv_role, e.g. ["public", "snapshot", "thinsnapshot"]
	// Open is lv_attr[5] == 'o': the device is open (mounted, or held
	// by a process or another device).
	Open bool
	// Tags are the LV's tags (lv_tags), which replicas use to say what
	// they hold (see ReplicaSource).
	Tags []string
}

// FullName returns the LV's vg/lv name.
func (lv *LV) FullName() Name { return Name{VG: lv.VG, LV: lv.Name} }

// PoolName returns the thin pool's vg/lv ("" LV if not a thin volume).
func (lv *LV) PoolName() Name { return Name{VG: lv.VG, LV: lv.Pool} }

// IsThin reports whether the LV is a thin volume: it has a pool, and
// lv_attr[0] is 'V', or, for a thin volume that is the origin of a classic
// snapshot, 'o' with the thin target type (lv_attr[6] 't').
func (lv *LV) IsThin() bool {
	return len(lv.Attr) == 10 && lv.Pool != "" && (lv.Attr[0] == 'V' || lv.Attr[6] == 't')
}

// IsThinSnapshot reports whether the LV is a thin volume that is a snapshot
// of another (it has an origin).
func (lv *LV) IsThinSnapshot() bool { return lv.IsThin() && lv.Origin != "" }

// IsThinPool reports whether the LV is a thin pool (lv_attr[0] == 't').
func (lv *LV) IsThinPool() bool { return len(lv.Attr) > 0 && lv.Attr[0] == 't' }

// lvsFields are the columns asked of lvs, in the order of reportLV's tags.
const lvsFields = "vg_name,lv_name,pool_lv,lv_dm_path,thin_id,origin,lv_attr,lv_size," +
	"chunk_size,lv_uuid,lv_time,lv_layout,lv_role,origin_size,data_percent,snap_percent,lv_tags"

// lvTimeLayout is lv_time's format under LC_ALL=C ("2026-11-21 12:16:20 +0000").
const lvTimeLayout = "2006-01-02 15:04:05 -0700"

// reportLV is one row of `lvs --reportformat json`. In LVM's "json" format
// (2.03.16; "json_std" with typed values came in 2.03.17) every value is a
// string, so every field is one.
type reportLV struct {
	VG        string `json:"vg_name"`
	Name      string `json:"lv_name"`
	Pool      string `json:"pool_lv"`
	DMPath    string `json:"lv_dm_path"`
	ThinID    string `json:"thin_id"`
	Origin    string `json:"origin"`
	Attr      string `json:"lv_attr"`
	Size      string `json:"lv_size"`
	ChunkSize string `json:"chunk_size"`
	UUID      string `json:"lv_uuid"`
	Time      string `json:"lv_time"`
	Layout    string `json:"lv_layout"`
	Role      string `json:"lv_role"`
	// Added with classic snapshots; reports without them (older
	// fixtures) leave them empty.
	OriginSize  string `json:"origin_size"`
	DataPercent string `json:"data_percent"`
	SnapPercent string `json:"snap_percent"`
	// Added with replicas.
	Tags string `json:"lv_tags"`
}

type report struct {
	Report []struct {
		LV []reportLV `json:"lv"`
	} `json:"report"`
}

// parseReport parses the output of
// `lvs --reportformat json --units b --nosuffix -o <lvsFields>`. Rows of the
// same LV (one per segment) are merged; the pools' chunk sizes are copied to
// their thin volumes when the pool is in the same report.
func parseReport(data []byte) ([]*LV, error) {
	var r report
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("lvs report: %w", err)
	}
	var lvs []*LV
	seen := map[Name]*LV{}
	for _, rep := range r.Report {
		for i := range rep.LV {
			lv, err := rep.LV[i].parse()
			if err != nil {
				return nil, err
			}
			key := Name{VG: lv.VG, LV: lv.Name}
			if prev, ok := seen[key]; ok {
				// A further segment: only chunk_size may differ.
				if prev.ChunkSize == 0 {
					prev.ChunkSize = lv.ChunkSize
				}
				continue
			}
			seen[key] = lv
			lvs = append(lvs, lv)
		}
	}
	for _, lv := range lvs {
		if lv.IsThin() {
			lv.ChunkSize = 0
			if pool, ok := seen[lv.PoolName()]; ok {
				lv.ChunkSize = pool.ChunkSize
			}
		}
	}
	return lvs, nil
}

func (r *reportLV) parse() (*LV, error) {
	tr := strings.TrimSpace
	lv := &LV{
		VG:     tr(r.VG),
		Name:   tr(r.Name),
		Pool:   tr(r.Pool),
		DMPath: tr(r.DMPath),
		Origin: tr(r.Origin),
		Attr:   tr(r.Attr),
		UUID:   tr(r.UUID),
		Layout: splitList(r.Layout),
		Role:   splitList(r.Role),
		Tags:   splitList(r.Tags),
	}
	bad := func(field, v string, err error) error {
		return fmt.Errorf("lvs report: %s/%s: bad %s %q: %v", lv.VG, lv.Name, field, v, err)
	}
	if lv.VG == "" || lv.Name == "" {
		return nil, fmt.Errorf("lvs report: row without vg_name or lv_name")
	}
	if len(lv.Attr) != 10 {
		return nil, bad("lv_attr", lv.Attr, fmt.Errorf("want 10 characters"))
	}
	if v := tr(r.ThinID); v != "" {
		id, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, bad("thin_id", v, err)
		}
		lv.ThinID = uint32(id)
	}
	var err error
	if lv.Size, err = parseBytes(r.Size); err != nil {
		return nil, bad("lv_size", r.Size, err)
	}
	if lv.ChunkSize, err = parseBytes(r.ChunkSize); err != nil {
		return nil, bad("chunk_size", r.ChunkSize, err)
	}
	if lv.OriginSize, err = parseBytes(r.OriginSize); err != nil {
		return nil, bad("origin_size", r.OriginSize, err)
	}
	pct := tr(r.DataPercent)
	if pct == "" {
		pct = tr(r.SnapPercent)
	}
	lv.DataPercent = -1
	if pct != "" {
		v, err := strconv.ParseFloat(pct, 64)
		if err != nil || !(v >= 0 && v <= 100) {
			return nil, bad("data_percent", pct, fmt.Errorf("want a percentage"))
		}
		lv.DataPercent = v
	}
	if v := tr(r.Time); v != "" {
		if lv.Time, err = time.Parse(lvTimeLayout, v); err != nil {
			return nil, bad("lv_time", v, err)
		}
	}
	lv.Active = lv.Attr[4] == 'a'
	lv.Open = lv.Attr[5] == 'o'
	lv.SkipActivation = lv.Attr[9] == 'k'
	return lv, nil
}

// parseBytes parses a size printed with --units b --nosuffix. Sizes in
// bytes are integers; anything else (a unit suffix, a fraction) means the
// command was run without those options, which we refuse rather than guess.
func parseBytes(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("not a byte count (run lvs with --units b --nosuffix)")
	}
	if n < 0 {
		return 0, fmt.Errorf("negative size")
	}
	return n, nil
}

func splitList(s string) []string {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// listVG runs lvs on a whole volume group. Asking for the VG (not the LV)
// gives the thin volume and its pool in one consistent report.
func listVG(ctx context.Context, vg string) ([]*LV, error) {
	out, err := run(ctx, nil, programs.lvs, "--reportformat", "json", "--units", "b", "--nosuffix",
		"-o", lvsFields, "--", vg)
	if err != nil {
		return nil, fmt.Errorf("list volume group %s: %w", vg, err)
	}
	lvs, err := parseReport(out)
	if err != nil {
		return nil, fmt.Errorf("list volume group %s: %w", vg, err)
	}
	return lvs, nil
}

// Report is one lvs report of a volume group: its LVs at one moment. A run
// that needs several LVs of one group (a volume, its snapshots, their pool)
// reads it once and looks them up in it, rather than running lvs for each.
type Report struct {
	VG  string
	LVs []*LV
}

// ListVG runs lvs once on the volume group vg. It fails with ErrNotFound if
// the volume group does not exist.
func ListVG(ctx context.Context, vg string) (*Report, error) {
	lvs, err := listVG(ctx, vg)
	if err != nil {
		return nil, err
	}
	return &Report{VG: vg, LVs: lvs}, nil
}

// Lookup returns the LV named n from the report, or ErrNotFound.
func (r *Report) Lookup(n Name) (*LV, error) {
	if n.VG == r.VG {
		for _, lv := range r.LVs {
			if lv.VG == n.VG && lv.Name == n.LV {
				return lv, nil
			}
		}
	}
	return nil, fmt.Errorf("logical volume %s does not exist (lvs %s lists the volumes): %w", n, n.VG, ErrNotFound)
}

// Snapshots returns the snapshots (thin or classic) of the LV named origin
// in the report, oldest first (by creation time, then thin id, which LVM
// allocates in increasing order). Backup rotation uses it to find what to
// remove. A merging classic snapshot is not listed (LVM hides it).
func (r *Report) Snapshots(origin Name) ([]*LV, error) {
	found := false
	var snaps []*LV
	for _, lv := range r.LVs {
		if lv.VG != origin.VG {
			continue
		}
		if lv.Name == origin.LV {
			found = true
		}
		if k := lv.Kind(); (k == KindThinSnapshot || k == KindClassicSnapshot) && lv.Origin == origin.LV {
			snaps = append(snaps, lv)
		}
	}
	if !found {
		return nil, fmt.Errorf("logical volume %s does not exist: %w", origin, ErrNotFound)
	}
	sort.SliceStable(snaps, func(i, j int) bool {
		if !snaps[i].Time.Equal(snaps[j].Time) {
			return snaps[i].Time.Before(snaps[j].Time)
		}
		return snaps[i].ThinID < snaps[j].ThinID
	})
	return snaps, nil
}

// Lookup returns the LV named n (one lvs of its volume group). It fails
// with ErrNotFound if the volume group or the LV does not exist.
func Lookup(ctx context.Context, n Name) (*LV, error) {
	r, err := ListVG(ctx, n.VG)
	if err != nil {
		return nil, err
	}
	return r.Lookup(n)
}

// Snapshots returns the snapshots of the LV named origin (one lvs of its
// volume group), as Report.Snapshots.
func Snapshots(ctx context.Context, origin Name) ([]*LV, error) {
	r, err := ListVG(ctx, origin.VG)
	if err != nil {
		return nil, err
	}
	return r.Snapshots(origin)
}
