// Package catalog records what thinback has backed up and restored: volumes,
// the chain of snapshots of each volume with their delta files, restore
// targets, and retention policies. It keeps them in one bbolt file, and it
// manages the store directory the delta files live in.
//
// The catalog is a cache of what the delta files say about themselves:
// every snapshot's delta file carries its own identity and its parent's, so
// a lost catalog is rebuilt from the files (see Store.Files). This package
// never parses delta files; it stores what the caller tells it.
//
// # Basics
//
// A catalog file is opened with Open and used through transactions given as
// closures, as in bbolt:
//
//	err := db.Update(func(tx *catalog.Tx) error {
//		return tx.PutVolume(&catalog.Volume{Name: "vg0/vm1", Kind: catalog.KindLVMThin, BlockSize: 65536})
//	})
//
// An Update whose closure returns an error writes nothing; one that returns
// nil is committed and fsynced as a whole. View is read-only.
//
// bbolt locks the file for as long as it is open. A backup may run for an
// hour while `thinback list` must still work, so thinback opens the file
// for one transaction at a time: the package-level View and Update (and a
// Store's) open the file, run the closure and close it. Readers share the
// lock; a writer waits for readers and readers for the writer, for at most
// Options.Timeout, after which the error is ErrBusy naming the file. View
// of a file that does not exist sees an empty catalog and creates nothing,
// so the state file of `thinback apply` (targets only, see Target) works
// standalone, without a store.
//
// Records are JSON values under a schema version kept in the file. Unknown
// JSON fields are ignored, so an older thinback reads what a newer one adds;
// a newer schema version is refused (ErrVersion), as is a file that is not
// a catalog (ErrInvalid); a catalog whose pages fail their checksums is
// ErrDamaged, and its message says to run `thinback catalog rebuild`. Every record is validated when read: a damaged one
// is an error naming its key (ErrCorrupt), never a panic.
//
// A Store is a directory with the catalog, the delta files and the
// temporary and lock files. A backup goes:
//
//	unlock, err := store.LockVolume("vg0/vm1")       // ErrLocked if a backup runs
//	defer unlock()
//	snap, err := store.WriteDelta("vg0/vm1", func(w io.Writer) (catalog.Snapshot, error) {
//		// write the whole delta file to w
//		return catalog.Snapshot{...}, nil            // the record to keep
//	})
//
// WriteDelta (WriteVolumeDelta for what may be a volume's first snapshot,
// ReplaceDelta for a prune's merge) is the store's one write seam, the
// DeltaWriter interface: it either commits or leaves nothing, and a volume
// is recorded only together with its first snapshot. The callback sees only an io.Writer, so a store on object
// storage fits behind the same calls. Underneath, the local store writes a
// temp file (CreateTemp) and Commit makes it durable under its final name
// before it records it, so the catalog never points at a file that is not
// on disk, and a file in volumes/ is complete or absent. A prune merges
// files outside the catalog and then swaps records and files atomically
// with Replace. After a crash, CleanTemp removes temp files of dead
// writers and RemoveOrphans removes files that were renamed into place
// but never recorded, or that a committed change made obsolete.
//
// A reader that may run for days, or read a store on read-only media,
// opens it with OpenReadOnly: a Repository that creates and cleans
// nothing, holds the catalog's shared lock only while a View runs, and
// refuses every write with ErrReadOnly. Retention.Plan says what a prune
// of a volume removes and which files it merges, for the caller to carry
// out with ReplaceDelta and Remove.
//
// # Publishing a file
//
// Every finished file thinback writes gets its name one way, here, for the
// store and for the command's other files (`send -o`, snapback files):
//
//	temp name → write → fsync → rename without replacing → close → fsync the directory
//
// Publish does the last steps for an open file; CreatePending and
// Pending.Publish/Discard wrap the whole sequence for a file next to its
// final name; CreateExclusive creates a file that is written in place
// (complete at every checkpoint, as a snapback file is) and makes its name
// durable first; SyncDir fsyncs a directory. Renaming without replacing
// uses renameat2(RENAME_NOREPLACE); where the filesystem lacks it, a hard
// link and an unlink; where it lacks hard links too (FAT, exFAT, some FUSE
// filesystems), an exclusive create that reserves the final name and a
// rename over that empty file once it is checked to be still ours. Every
// Close error is checked. WriteError gives a full disk (ErrNoSpace) and a
// file too large for its filesystem (ErrTooLarge: FAT's 4 GiB) their
// types.
//
// Check lists every inconsistency: of the records among themselves (broken
// or looping chains, duplicate Seqs, unknown volumes and snapshots) and,
// for a store, between records and files (missing, wrong size, orphans).
// Retention.Select chooses what a prune keeps, with the semantics of
// Proxmox Backup Server.
//
// A host's state file also keeps what the host has seen of encrypted
// stores: a Watermark per master key and volume (the newest snapshot
// seen) and a StoreKey per store location (the key its slots wrapped), so
// that a store rolled back behind the host's back can be noticed. The
// catalog stores them as given; whether a watermark moves is the
// caller's decision.
//
// # Caveats
//
//   - A Tx must not be used outside its closure or from another goroutine.
//     Do not open the same catalog with Open twice in one process and use
//     both: flock conflicts between the two, so the second waits and fails
//     with ErrBusy. A Store serialises its own transactions: do not call a
//     Store's methods from inside one of its transaction closures.
//   - Records are re-encoded by this version when written: a field added by
//     a newer thinback (within the same schema version) is dropped when this
//     version rewrites that record.
//   - Store operations assume the caller holds LockVolume for the volume it
//     writes. The lock is a flock: it is released when the process dies,
//     and it is per open file, so a second LockVolume of the same volume in
//     one process fails too.
//   - Check does not read delta files; it checks sizes and that a digest
//     was recorded. Pass CheckOptions.Verify to check contents.
//   - Check on a live store may report as orphan a file that a concurrent
//     Commit has renamed but not yet recorded (a window of milliseconds).
//   - Fsyncs make files durable on filesystems that honour them. On a
//     network filesystem or a disk with a volatile write cache that ignores
//     flushes, a power loss can still lose what was acknowledged.
//   - A store may be on a disk someone else controls. Its own files and
//     directories (catalog.db, tmp/, locks/, volumes/ and what is in them)
//     are never followed when they are symbolic links, nor used when they
//     are FIFOs or files with other hard links (ErrNotOwn, see OpenOwn
//     and OwnDir); the store root itself may be a link. The checks happen
//     when a file is opened, so a writer racing thinback inside the store
//     while it runs is not kept out.
//   - Volume directory names are case-sensitive: on vfat or exfat, two
//     volume names that differ only in case share a directory.
//   - With the exclusive-create fallback (no RENAME_NOREPLACE, no hard
//     links), a crash between reserving a name and the rename leaves an
//     empty file under the final name: in a store an orphan, removed by
//     RemoveOrphans; elsewhere not a delta file, so no command mistakes it
//     for one.
package catalog
