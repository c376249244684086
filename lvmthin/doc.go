// Package lvmthin reads LVM volumes for thinback: it names and looks up
// logical volumes, creates, activates and removes thin and classic
// snapshots, holds a thin pool's metadata snapshot, and finds the blocks
// that changed between two snapshots, from the thin pool's metadata or from
// a classic snapshot's copy-on-write exception table, so a backup reads
// only what changed.
//
// # Basics
//
// Every LVM and device-mapper operation is one function (Lookup,
// CreateSnapshot, Activate, GetPoolStatus, ReserveMetadataSnap, ...) that
// runs the LVM command line tool or a thin-provisioning-tools program
// through one runner, or asks device-mapper through its ioctls (dm.go,
// package internal/dmioctl; dmsetup with THINBACK_DM=dmsetup). A failed command gives a *CommandError with
// the full command line, exit status and standard error; known failures are
// also sentinel errors (ErrNotFound, ErrNotThin, ErrMetadataSnapBusy,
// ErrStaleMetadataSnap, ErrPoolFailed, ErrExists, ErrNoSpace, ErrOpen,
// ...) to test with errors.Is. LV.Kind says what an LV is (thin volume or
// snapshot, thin pool, thick volume, classic snapshot).
//
// LVM's commands are most of a small backup's fixed cost, so a caller that
// needs several LVs of a volume group reads it once (ListVG, a Report) and
// passes the records on: CreateSnapshotOf, RemoveSnapshotLV and OpenDelta
// (which trusts an active Snap) run no lvs of their own. CountCommands
// counts the commands and device-mapper ioctls run under a context, and
// their time.
//
// OpenDelta ties it together: given a thin snapshot (and an older one as the
// base of an incremental) it returns an archive.Source whose extents come
// from the pool's metadata snapshot, and whose data is read, with O_DIRECT,
// from the newer snapshot's device.
//
// # Discovery
//
// The extents are found in the pool's metadata in one of two ways
// (DiscoverOptions.Discovery, DeltaOptions.Discovery):
//
//   - DiscoverNative, the default, reads the metadata in process (package
//     thinmeta). A thin snapshot starts as its origin's btree root, and the
//     kernel copies only the nodes on the path to a change, so within the
//     held metadata snapshot a block both devices' trees reference is the
//     same subtree in both: the diff passes over it unread, and reads the
//     paths to the changed leaves, not the volume. It validates every block
//     it reads and refuses damage as ErrMetadata naming the block.
//   - DiscoverTools runs thin_delta (incremental) or thin_dump (full) from
//     thin-provisioning-tools and parses their XML (package thinxml): a
//     fallback, and the oracle the native reader is tested against, in a
//     real kernel and on damaged metadata. Only it needs those tools.
//
// Both feed the same extent builder, so they give the same extents.
//
// OpenClassic does the same for thick volumes: given a classic snapshot
// (CreateClassicSnapshot) and the older one of the previous backup as the
// base, its extents are the chunks the base's exception table lists (read
// by lvmthin/cow from the base's -cow device, with O_DIRECT) together with
// those of the newer snapshot's own table, and its data is read from the
// newer snapshot. A full reads the whole snapshot.
//
// # Where things are
//
// The root is the control plane, and the two ways of reading a delta:
//
//   - Running LVM and device-mapper: exec.go (the runner, command counts),
//     dm.go (device-mapper status, table and messages, by ioctl or
//     dmsetup), pipe.go, name.go, lvs.go, lv.go, kind.go, vg.go, pool.go, errors.go;
//     a pool's metadata snapshot and its lock: metasnap.go, poollock.go.
//   - How thinback reads a thin pool: delta.go (OpenDelta: a thin
//     snapshot as an archive.Source), discover.go (Discover, and the
//     choice of Discovery), native.go (with package thinmeta, the kernel's
//     on-disk metadata), tools.go (running thin_delta and thin_dump, with
//     package thinxml, their XML), extents.go (the extent builder and
//     spool both feed).
//   - The receiving side of a replica: replica.go (a target's tagged
//     read-only replica snapshots, comparing the target with one through
//     the pool's metadata, rolling it back, creating a new thin target).
//   - How it reads a classic snapshot: classic.go (creating one),
//     classicdelta.go (OpenClassic), classicstatus.go (its dmsetup status),
//     with package cow, the kernel's copy-on-write store. They stay in the
//     root, beside the thin side, because they run LVM and dmsetup and
//     share its extent spool; cow, like thinmeta and thinxml, only reads a
//     format and runs nothing.
//
// Subpackages: thinmeta, thinxml and cow read formats and import nothing
// of thinback's; lvmtest runs tests in a User-Mode Linux guest;
// internal/blockdev reads block devices with O_DIRECT; internal/xmlref is
// the tests' reference XML parser; internal/discbench and
// internal/classicbench are the programs of scripts/bench-*.sh.
//
// # Caveats
//
//   - A metadata snapshot held by a pool survives crashes and reboots and
//     makes the pool's metadata and data usage grow. ReserveMetadataSnap
//     serializes thinback processes with a lock per pool, refuses a snapshot
//     it did not take (ErrStaleMetadataSnap: release it explicitly with
//     ReleaseStale), and its Release runs on a context of its own. While one
//     is held, SIGINT and SIGTERM cancel the work instead of killing the
//     process; programs should still turn signals into context cancellation
//     (signal.NotifyContext) and return normally, so deferred releases run.
//     Only SIGKILL or a crash can leave one behind; the next run says so.
//   - LVM's lv_time has whole seconds; thin snapshots made within one second
//     are ordered by the pool metadata's creation time.
//   - While the pool is active only its held metadata snapshot is a
//     consistent view (the thin tools' -m; the native reader checks that it
//     reads the snapshot it reserved); the extents are spooled to an
//     unlinked temporary file so the snapshot is released before any data
//     is read.
//   - The tools' XML is read by a scanner of the subset of XML they write
//     (thin-provisioning-tools 0.9 and 1.x; package thinxml), in memory
//     that does not grow with the output; XML outside it, such as text
//     between elements, entity references or a DOCTYPE, is refused as
//     ErrMetadata.
//   - A classic snapshot costs its origin a copy on the first write to each
//     chunk, and is invalidated by the kernel once its COW store is full.
//     OpenClassic checks the base before and after reading its table (lvs,
//     dmsetup status, the store's header) and returns ErrBaseInvalid if it
//     was invalidated: the table is incomplete, and the caller must find the
//     changes another way (comparing block digests). ErrSnapshotInvalid is
//     an invalid newer snapshot, which cannot be read at all.
//   - Classic snapshots are ordered by lv_time, which has whole seconds and
//     is all LVM records; a base and snapshot of the same second are refused.
//   - Merging snapshots (lvconvert --merge, attr S on the snapshot, O on the
//     origin) are refused (ErrSnapshotMerging); LVM lists them only with -a.
//   - Everything here needs root and a kernel with dm-thin and dm-snapshot;
//     the package's tests that need them run in a User-Mode Linux guest
//     (scripts/uml/run).
package lvmthin
