package backup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin"
)

// LookupLV finds an LV, of any kind, by any spelling users type, with one
// lvs of its volume group; the report is returned too, for the run's other
// questions. rep, when not nil, is a report the run already has, used
// when it is of the same volume group. A name that does not parse is a
// *UsageError.
func LookupLV(ctx context.Context, spelling string, rep *lvmthin.Report) (*lvmthin.LV, *lvmthin.Report, error) {
	n, err := lvmthin.ParseName(spelling)
	if err != nil {
		return nil, nil, &UsageError{Msg: err.Error()}
	}
	if rep == nil || rep.VG != n.VG {
		if rep, err = lvmthin.ListVG(ctx, n.VG); err != nil {
			return nil, nil, err
		}
	}
	lv, err := rep.Lookup(n)
	return lv, rep, err
}

// OriginOf returns the origin of a snapshot from the run's report of its
// volume group, or nil when it is gone.
func OriginOf(rep *lvmthin.Report, snap *lvmthin.LV) (*lvmthin.LV, error) {
	if snap.Origin == "" {
		return nil, nil
	}
	o, err := rep.Lookup(lvmthin.Name{VG: snap.VG, LV: snap.Origin})
	if errors.Is(err, lvmthin.ErrNotFound) {
		return nil, nil
	}
	return o, err
}

// ThinBlockSize picks a delta file's block size for a pool's chunk size:
// the chunk itself when the format allows it, so each changed chunk is one
// block digest, else 64 KiB, which divides every thin chunk size.
func ThinBlockSize(chunk int64) int64 {
	if chunk >= archive.MinBlockSize && chunk <= archive.MaxBlockSize && chunk%archive.MinBlockSize == 0 {
		return chunk
	}
	return archive.DefaultBlockSize
}

// LVSnapshot names a snapshot LV's state: its ID is derived from the
// LV's UUID, so a full and a later incremental made from the same LV, on
// any host, agree on it.
func LVSnapshot(lv *lvmthin.LV) archive.Snapshot {
	return archive.Snapshot{ID: archive.DeriveID("lvm", lv.UUID), Name: lv.FullName().String(), Time: lv.Time.UTC()}
}

// ThinHeader describes a delta of the thin snapshot snap (against base,
// or a full) of origin; the caller names the tool.
func ThinHeader(snap, base, origin *lvmthin.LV) *archive.Header {
	h := &archive.Header{
		BlockSize: ThinBlockSize(snap.ChunkSize), Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.FullName().String(), VolumeSize: snap.Size,
		Snapshot: LVSnapshot(snap),
	}
	h.SetAttr(archive.AttrLVMVG, snap.VG)
	h.SetAttr(archive.AttrLVMKind, archive.LVMKindThin)
	h.SetAttr(archive.AttrLVMPool, snap.Pool)
	if origin != nil {
		h.VolumeName, h.VolumeUUID = origin.FullName().String(), origin.UUID
		h.SetAttr(archive.AttrLVMOrigin, origin.Name)
		h.SetAttr(archive.AttrLVMOriginUUID, origin.UUID)
	}
	h.SetAttr(archive.AttrLVMLV, snap.Name)
	h.SetAttr(archive.AttrLVMLVUUID, snap.UUID)
	h.SetAttr(archive.AttrLVMThinID, strconv.FormatUint(uint64(snap.ThinID), 10))
	h.SetAttr(archive.AttrLVMLVTime, snap.Time.UTC().Format(time.RFC3339))
	h.SetAttr(archive.AttrLVMChunkSize, strconv.FormatInt(snap.ChunkSize, 10))
	if base != nil {
		h.Parent, h.ParentSize = LVSnapshot(base), base.Size
		h.SetAttr(archive.AttrLVMParentLV, base.Name)
		h.SetAttr(archive.AttrLVMParentUUID, base.UUID)
		h.SetAttr(archive.AttrLVMParentThinID, strconv.FormatUint(uint64(base.ThinID), 10))
	}
	return h
}

// ClassicHeader describes a delta of the classic snapshot snap (against
// base, or a full) of origin, of a volume of size bytes; the caller names
// the tool.
func ClassicHeader(snap, base, origin *lvmthin.LV, size int64) *archive.Header {
	h := &archive.Header{
		BlockSize: archive.DefaultBlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.VG + "/" + snap.Origin, VolumeSize: size,
		Snapshot: LVSnapshot(snap),
	}
	h.SetAttr(archive.AttrLVMVG, snap.VG)
	h.SetAttr(archive.AttrLVMKind, archive.LVMKindThick)
	h.SetAttr(archive.AttrLVMOrigin, snap.Origin)
	if origin != nil {
		h.VolumeUUID = origin.UUID
		h.SetAttr(archive.AttrLVMOriginUUID, origin.UUID)
	}
	h.SetAttr(archive.AttrLVMLV, snap.Name)
	h.SetAttr(archive.AttrLVMLVUUID, snap.UUID)
	h.SetAttr(archive.AttrLVMLVTime, snap.Time.UTC().Format(time.RFC3339))
	h.SetAttr(archive.AttrLVMChunkSize, strconv.FormatInt(snap.ChunkSize, 10))
	if base != nil {
		h.Parent, h.ParentSize = LVSnapshot(base), size
		h.SetAttr(archive.AttrLVMParentLV, base.Name)
		h.SetAttr(archive.AttrLVMParentUUID, base.UUID)
	}
	return h
}

// LVOptions are the settings of a backup or a send of an LV.
type LVOptions struct {
	// SnapshotSize is --snapshot-size: a thick LV's snapshot store.
	SnapshotSize string
	// ThickOnly: a backup of several volumes, whose --snapshot-size is
	// for those of them that are thick, not an error for the thin ones.
	ThickOnly bool
	// ReleaseStale, Discovery and Waiting are lvmthin.DeltaOptions' for
	// a thin LV.
	ReleaseStale bool
	Discovery    lvmthin.Discovery
	Waiting      func(string)
	// Tool names the program in the files' headers.
	Tool string
}

// OpenLV finds the LV to back up by any spelling and returns its source:
// a thin LV's or a thick LV's. A snapshot, which thinback takes itself,
// and an option of the other kind are *UsageErrors; a pool or another
// kind of LV is lvmthin.ErrNotThin.
func OpenLV(ctx context.Context, spelling string, o LVOptions) (Source, error) {
	origin, rep, err := LookupLV(ctx, spelling, nil)
	if err != nil {
		return nil, err
	}
	switch k := origin.Kind(); k {
	case lvmthin.KindThin, lvmthin.KindThick:
	case lvmthin.KindThinSnapshot, lvmthin.KindClassicSnapshot:
		return nil, &UsageError{Msg: fmt.Sprintf("%s is a %s (lv_attr %s): back up its origin %s/%s; thinback snapshots it itself", origin.FullName(), k, origin.Attr, origin.VG, origin.Origin)}
	default:
		return nil, fmt.Errorf("%s is a %s (lv_attr %s): thinback backs up thin and ordinary (thick) volumes: %w", origin.FullName(), k, origin.Attr, lvmthin.ErrNotThin)
	}
	if o.SnapshotSize != "" && origin.Kind() != lvmthin.KindThick && !o.ThickOnly {
		return nil, &UsageError{Msg: fmt.Sprintf("--snapshot-size is for thick LVs; %s is a thin volume, whose snapshots take space from its pool as it is written", origin.FullName())}
	}
	lv := lvSource{origin: origin, rep: rep, o: o}
	if origin.Kind() == lvmthin.KindThick {
		return &ThickSource{lvSource: lv}, nil
	}
	return &ThinSource{lvSource: lv}, nil
}
