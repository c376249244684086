package archive

// The header attribute keys thinback writes (docs/FORMAT.md, "Header
// attributes"). Attributes are for people and for a catalog rebuild: no
// reader decision depends on one. A key's prefix names the source that
// knows it.
const (
	// Of an LV's snapshot (thin or thick).
	AttrLVMVG           = "lvm.vg"             // the volume group
	AttrLVMKind         = "lvm.kind"           // LVMKindThin or LVMKindThick; absent means thin
	AttrLVMPool         = "lvm.pool"           // the thin pool (thin only)
	AttrLVMOrigin       = "lvm.origin"         // the origin LV, the volume backed up
	AttrLVMOriginUUID   = "lvm.origin_uuid"    // the origin LV's UUID
	AttrLVMLV           = "lvm.lv"             // the snapshot LV read
	AttrLVMLVUUID       = "lvm.lv_uuid"        // the snapshot LV's UUID
	AttrLVMThinID       = "lvm.thin_id"        // the snapshot's thin device id (thin only)
	AttrLVMLVTime       = "lvm.lv_time"        // the snapshot LV's creation time, RFC 3339
	AttrLVMChunkSize    = "lvm.chunk_size"     // the pool's or the COW store's chunk size, bytes
	AttrLVMParentLV     = "lvm.parent_lv"      // the base snapshot LV of an incremental
	AttrLVMParentUUID   = "lvm.parent_lv_uuid" // the base snapshot LV's UUID
	AttrLVMParentThinID = "lvm.parent_thin_id" // the base snapshot's thin device id (thin only)

	// Of a file or block device backed up as an image.
	AttrFilePath     = "file.path"      // the image's absolute path
	AttrFileBasePath = "file.base_path" // the base image's absolute path (send --base)

	// Of a snapback file.
	AttrSnapbackTarget  = "snapback.target"  // the target the apply wrote
	AttrSnapbackApplied = "snapback.applied" // the files applied, space-separated
)

// The values of AttrLVMKind.
const (
	LVMKindThin  = "thin"  // a thin snapshot in a thin pool
	LVMKindThick = "thick" // a classic copy-on-write snapshot of an ordinary LV
)
