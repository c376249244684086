// Package s3store is a thinback store on S3-compatible object storage:
// catalog.Repository on top of package s3's objects, uploads, ranged
// reads and locks. The bucket is the truth; each machine keeps a local
// cache of the catalog (a catalog file, as a local store's), brought up
// to date from the bucket before it is used.
//
// # Layout
//
// Under the store's prefix:
//
//	thinback-store.json                         the store: its id and piece size
//	volumes/<DirName(volume)>/<seq>-<id>.tbk    delta files, named as in a local store
//	volumes/<DirName(volume)>/<seq>-<id>.<g>.tbk  the g-th rewrite by a prune
//	volumes/<...>.tbk.<n>                       the n-th piece of a file larger than one piece
//	records/<DirName(volume)>/<seq>-<id>.json   one snapshot's record: the commit of its file
//	records/<DirName(volume)>/volume.json       the volume's record, with its retention policy
//	records/<DirName(volume)>/journal-*.json    what a write in progress may leave behind
//	locks/<DirName(volume)>.lock                the volume's lock while a command writes to it
//
// An object store has no rename, so a delta file cannot appear complete
// under its name as a local one does. Here the file is a multipart upload,
// which shows nothing until it is completed, and the record object,
// created with a conditional create (If-None-Match: *) only after the
// file is complete, is the commit: a snapshot exists when its record
// does, and a record never points at a file that is not complete. A
// record is small JSON holding what the catalog holds for the snapshot
// (catalog.Snapshot) and the volume's record as it was then.
//
// # Basics
//
//	loc, _ := s3.ParseLocation("s3:https://s3.example.com/backups/thinback")
//	st, err := s3store.Open(ctx, loc, &s3store.Options{Create: true})
//	defer st.Close()
//	unlock, err := st.LockVolume("vg0/vm1")   // a lock object, renewed while held
//	snap, err := st.WriteVolumeDelta(vol, id, func(w io.Writer) (catalog.Snapshot, error) { ... })
//	err = unlock()
//
// Open reads the store object and syncs the cache: it lists records/,
// fetches the records that are new or changed since the cache saw them
// (by ETag, many at a time), checks each as the catalog checks what it
// stores and against its name, drops what vanished, and skips (and
// reports) what is damaged. LockVolume syncs the volume again once it
// holds the lock, so a writer decides from the records as they are.
//
// Delta files are uploaded as streams in parts of s3.Options.PartSize (16
// MiB), two in flight: 48 MiB of buffers whatever the file's size. One
// object holds at most 10 000 parts, so a file is cut into pieces of the
// store's piece size (128 GiB: 8192 parts) and a larger one continues in
// <file>.2, <file>.3...; readers see one file. Most files are one piece
// and carry exactly the local layout's name.
//
// Reads are ranged GETs, pinned to each object's ETag. OpenStream keeps
// several in flight ahead of a reader going front to back (verify);
// OpenDelta serves random access (restore, merge, the chain digests of a
// backup) and reads what a reader walks in order through a window that
// grows while it goes on in order.
//
// # Writes, crashes and cleanup
//
// Every write holds the volume's lock and first writes a journal naming
// the files it may leave behind; the journal goes when the write is done.
// The next holder of the lock aborts the volume's multipart uploads (no
// other writer can be live) and removes each file a journal names that
// no record references, then the journal; Notify reports it. A file no
// journal names is never removed as an orphan: if records were lost, the
// files wait for catalog rebuild, which writes records from the files'
// headers. A prune's merge uploads the merged file under a new name,
// replaces the kept snapshot's record (If-Match), deletes the merged
// snapshots' records newest first, then the obsolete files: a kill at any
// step leaves records that form valid chains, and objects the next
// writer removes.
//
// # Caveats
//
//   - Conditional writes make locks and commits safe; a server that
//     ignores If-None-Match is found out at the first write (the store
//     object, or a lock) and refused with s3.ErrNoConditional.
//   - A lock is valid for Options.LockTTL unless renewed. A holder that
//     cannot renew it for most of that stops before it commits. A lock
//     whose holder is a process of this host that provably no longer
//     runs (the same boot ID and pid namespace, and no process with its
//     pid, or one started at another time) is broken by the next writer
//     of this host, with a warning: a run killed with SIGKILL does not
//     stop the next cron run. Any other stale lock (not renewed within
//     the time to live, judged by the server's clock alone) is never
//     taken over unless Options.BreakStaleLocks: the error names its
//     owner.
//   - Readers on other hosts see a prune's commit only when they next
//     sync; a restore that started before a prune on another host may
//     find an object gone (an error, never wrong data: every read is
//     pinned to its object's ETag and every record's data is verified).
//   - The cache lives under Options.Cache (DefaultCacheDir), in a
//     directory named by the store's id; removing it costs one full sync.
//     Both directories must belong to the user thinback runs as and be
//     writable by no one else, as ssh requires of a key directory
//     (CacheDirError); the files in them are never reached through a
//     link.
//   - Rebuild takes every volume's lock and rewrites every record; do it
//     while no backups run.
package s3store
