// Package lvmthin reads LVM thin volumes for thinback: it names and looks up
// logical volumes, creates, activates and removes thin snapshots, holds a
// thin pool's metadata snapshot, and finds the blocks that changed between
// two thin snapshots from the pool's metadata, so a backup reads only what
// changed.
//
// # Basics
//
// Every LVM and device-mapper operation is one function (Lookup,
// CreateSnapshot, Activate, GetPoolStatus, ReserveMetadataSnap, ...) that
// runs the LVM command line tool, dmsetup or a thin-provisioning-tools
// program through one runner. A failed command gives a *CommandError with
// the full command line, exit status and standard error; known failures are
// also sentinel errors (ErrNotFound, ErrNotThin, ErrMetadataSnapBusy,
// ErrStaleMetadataSnap, ErrPoolFailed, ...) to test with errors.Is.
//
// OpenDelta ties it together: given a thin snapshot (and an older one as the
// base of an incremental) it returns an archive.Source whose extents come
// from thin_delta (or thin_dump for a full) run on the pool's metadata
// snapshot, and whose data is read, with O_DIRECT, from the newer snapshot's
// device.
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
//   - LVM's lv_time has whole seconds; snapshots made within one second are
//     ordered by the pool metadata's creation time.
//   - The thin tools must read the metadata snapshot (-m) while the pool is
//     active; the extents are spooled to an unlinked temporary file so the
//     snapshot is released before any data is read.
//   - The tools' XML is read by a scanner of the subset of XML they write
//     (thin-provisioning-tools 0.9 and 1.x), in memory that does not grow
//     with the output; XML outside it, such as text between elements,
//     entity references or a DOCTYPE, is refused as ErrMetadata.
//   - Everything here needs root and a kernel with dm-thin; the package's
//     tests that need them run in a User-Mode Linux guest (scripts/uml/run).
package lvmthin
