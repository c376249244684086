package lvmthin

// VolumeKind says what an LV is, as far as thinback is concerned: which
// way it can be snapshotted and read.
type VolumeKind int

const (
	// KindOther: nothing thinback backs up (pool data or metadata, raid
	// images, logs, spares, virtual or VDO LVs, ...).
	KindOther VolumeKind = iota
	// KindThin: a thin volume that is not a snapshot.
	KindThin
	// KindThinSnapshot: a thin snapshot (a thin volume with an origin).
	KindThinSnapshot
	// KindThinPool: a thin pool.
	KindThinPool
	// KindThick: an ordinary LV (linear, striped, mirror, raid or cached),
	// perhaps the origin of classic snapshots.
	KindThick
	// KindClassicSnapshot: a classic (copy-on-write) snapshot, merging or
	// not.
	KindClassicSnapshot
)

func (k VolumeKind) String() string {
	switch k {
	case KindThin:
		return "thin volume"
	case KindThinSnapshot:
		return "thin snapshot"
	case KindThinPool:
		return "thin pool"
	case KindThick:
		return "thick volume"
	case KindClassicSnapshot:
		return "classic snapshot"
	}
	return "other"
}

// Kind tells what the LV is from lv_attr (see lvs(8)) and pool_lv.
func (lv *LV) Kind() VolumeKind {
	if len(lv.Attr) != 10 {
		return KindOther
	}
	switch {
	case lv.Attr[0] == 't':
		return KindThinPool
	case lv.Attr[0] == 's' || lv.Attr[0] == 'S':
		return KindClassicSnapshot
	case lv.IsThin():
		if lv.Origin != "" {
			return KindThinSnapshot
		}
		return KindThin
	case len(lv.Name) > 0 && lv.Name[0] == '[':
		// A hidden sub-LV, listed by lvs -a.
		return KindOther
	}
	switch lv.Attr[0] {
	case '-', 'o', 'O', 'm', 'M', 'r', 'R', 'C':
		return KindThick
	}
	return KindOther
}

// IsClassicSnapshot reports whether the LV is a classic snapshot
// (lv_attr[0] 's', or 'S' while merging).
func (lv *LV) IsClassicSnapshot() bool { return lv.Kind() == KindClassicSnapshot }

// IsMerging reports whether the LV is a merging classic snapshot ('S') or
// the origin of one ('O'). LVM lists a merging snapshot only with lvs -a,
// so a merge shows as the origin's 'O'.
func (lv *LV) IsMerging() bool {
	return len(lv.Attr) == 10 && (lv.Attr[0] == 'S' || lv.Attr[0] == 'O')
}

// IsInvalidSnapshot reports whether a classic snapshot has been
// invalidated (lv_attr[4] 'I', or 'S' when also suspended): its COW store
// overflowed, or the kernel hit an I/O error on it.
func (lv *LV) IsInvalidSnapshot() bool {
	return lv.IsClassicSnapshot() && (lv.Attr[4] == 'I' || lv.Attr[4] == 'S')
}

// MergeFailed reports whether a snapshot merge into the LV failed
// (lv_attr[4] 'm' or 'M').
func (lv *LV) MergeFailed() bool {
	return len(lv.Attr) == 10 && (lv.Attr[4] == 'm' || lv.Attr[4] == 'M')
}

// VolumeSize returns the size of the volume the LV holds: lv_size, except
// for a classic snapshot, whose lv_size is its COW store's and whose
// volume is as large as its origin.
func (lv *LV) VolumeSize() int64 {
	if lv.IsClassicSnapshot() {
		return lv.OriginSize
	}
	return lv.Size
}
