package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SnapshotState is what a classic snapshot's status says of it.
type SnapshotState string

const (
	SnapshotValid       SnapshotState = "valid" // usage figures follow
	SnapshotInvalid     SnapshotState = "Invalid"
	SnapshotOverflow    SnapshotState = "Overflow"
	SnapshotMergeFailed SnapshotState = "Merge failed"
	SnapshotUnknown     SnapshotState = "Unknown" // a store without usage figures
)

// SnapshotStatus is a classic snapshot's `dmsetup status` line (kernel
// dm-snap.c snapshot_status):
//
//	<start> <len> snapshot|snapshot-merge <allocated>/<total sectors> <metadata sectors>
//	<start> <len> snapshot|snapshot-merge Invalid|Overflow|Merge failed|Unknown
//
// Allocated counts the COW store's chunks in use (header, metadata areas
// and copied data) in 512-byte sectors; total is the COW device's size.
type SnapshotStatus struct {
	State            SnapshotState
	Merging          bool // the snapshot-merge target: merging into the origin
	SectorsAllocated uint64
	TotalSectors     uint64
	MetadataSectors  uint64
	RawStatusWords   []string
}

// Usage returns the share of the COW store in use, in percent (0 unless
// the state is SnapshotValid).
func (s *SnapshotStatus) Usage() float64 {
	if s.TotalSectors == 0 {
		return 0
	}
	return 100 * float64(s.SectorsAllocated) / float64(s.TotalSectors)
}

// ParseSnapshotStatus parses one line of `dmsetup status` of a snapshot or
// snapshot-merge device. Unknown trailing words are ignored.
func ParseSnapshotStatus(line string) (*SnapshotStatus, error) {
	f := strings.Fields(line)
	bad := func(why string) (*SnapshotStatus, error) {
		return nil, fmt.Errorf("%w: snapshot status %q: %s", ErrMetadata, line, why)
	}
	if len(f) < 4 {
		return bad("too short")
	}
	st := &SnapshotStatus{RawStatusWords: f[3:]}
	switch f[2] {
	case "snapshot":
	case "snapshot-merge":
		st.Merging = true
	default:
		return bad("target is " + strconv.Quote(f[2]) + ", not snapshot")
	}
	w := f[3:]
	switch {
	case w[0] == "Invalid":
		st.State = SnapshotInvalid
	case w[0] == "Overflow":
		st.State = SnapshotOverflow
	case w[0] == "Merge" && len(w) > 1 && w[1] == "failed":
		st.State = SnapshotMergeFailed
	case w[0] == "Unknown":
		st.State = SnapshotUnknown
	default:
		if len(w) < 2 {
			return bad("want <allocated>/<total> <metadata>")
		}
		var err error
		if st.SectorsAllocated, st.TotalSectors, err = parseUsage(w[0]); err != nil {
			return bad("usage: " + err.Error())
		}
		if st.MetadataSectors, err = strconv.ParseUint(w[1], 10, 64); err != nil {
			return bad("metadata sectors: " + err.Error())
		}
		if st.MetadataSectors > st.SectorsAllocated {
			return bad("more metadata sectors than allocated ones")
		}
		st.State = SnapshotValid
	}
	return st, nil
}

// GetSnapshotStatus asks device-mapper for the status of <vg>-<snap>, a
// classic snapshot (`dmsetup status`, through the ioctl unless
// THINBACK_DM=dmsetup). It must be active (ErrNotFound otherwise).
func GetSnapshotStatus(ctx context.Context, snap Name) (*SnapshotStatus, error) {
	out, err := dmStatus(ctx, snap.DMName())
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("status of snapshot %s (it must be active): %w", snap, err)
		}
		return nil, fmt.Errorf("status of snapshot %s: %w", snap, err)
	}
	line := strings.TrimSpace(string(out))
	if strings.Contains(line, "\n") {
		return nil, fmt.Errorf("status of snapshot %s: %w: more than one table line: %q", snap, ErrMetadata, line)
	}
	st, err := ParseSnapshotStatus(line)
	if err != nil {
		return nil, fmt.Errorf("status of snapshot %s: %w", snap, err)
	}
	return st, nil
}
