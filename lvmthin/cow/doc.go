// Package cow reads the exception table of a classic (non-thin) LVM
// snapshot: the persistent copy-on-write store of the kernel's dm-snapshot
// target, the hidden "<vg>-<snapshot>-cow" device. The table lists every
// chunk of the origin written since the snapshot was taken (and every chunk
// written to the snapshot itself), so an incremental backup from it reads
// only what changed, as lvmsync does.
//
// # Basics
//
// Read takes the store as an io.ReaderAt and its size. It checks the
// header (magic, version, chunk size, the valid flag the kernel clears
// when it invalidates a snapshot) and every exception, and gives the
// caller the changed origin chunks as sorted, merged runs. ReadHeader
// reads only the header, to see whether a snapshot is still valid.
//
// Errors about the store are *Error values naming the device and the byte
// offset of the bad field, wrapping ErrCorrupt, ErrVersion or
// ErrInvalidated. Nothing read from the store sizes an allocation: the
// number of exceptions is bounded only by the device, and memory by
// Options.MemoryChunks (8 bytes per exception, 16 MiB by default, beyond
// which sorted runs spill to a temporary file).
//
// # Caveats
//
//   - The kernel writes the store through its own I/O path: the page cache
//     of the -cow device node can be stale. Read it with O_DIRECT (the
//     caller's io.ReaderAt; lvmthin opens it so).
//   - The header's valid flag is not enough to trust a table: the kernel
//     marks a snapshot invalid in memory first ("dmsetup status" says
//     Invalid) and on disk afterwards, if it can. Check the status too,
//     before and after reading.
//   - A table read while the snapshot is active is a consistent prefix of
//     what the kernel has committed: exceptions are committed before the
//     write that caused them completes, and a read racing the kernel's
//     rewrite of an area can only miss the newest ones.
//   - The data chunks (new_chunk) are checked to be inside the device and
//     not metadata, not to be distinct: two exceptions sharing one would
//     corrupt the snapshot's contents, not the list of changed chunks,
//     which is all this package reads.
package cow
