// Package restore applies delta files to a regular file or block device.
//
// Apply takes one or more delta files that form a chain (each one's parent
// is the previous one's snapshot) and writes the state of the last one onto
// a Target. Files given together are merged first (archive.Merger): for
// each byte the newest record wins, so each block is written once however
// long the chain. An incremental file is never applied on top of a state it
// was not made from: CheckChain (check.go) holds the rules between the
// files and the target, like ZFS's "does not match incremental source",
// and uses archive.CheckLinks for the rules between the files.
//
// Every record is verified before any of it is written. Seekable files are
// checked completely (structure, digest chain, END record) before the
// target is touched, and their payloads too when there are at most
// VerifyFirstLimit bytes of them; a stream is checked as it is read. An
// apply cut short after it wrote leaves the target marked as in progress,
// with the byte range it overwrote: a good copy of the files finishes it
// (applying a file is idempotent). One that fails before its first write
// leaves the state as it was, and a file target it created is removed.
//
// The state also carries what the last apply left on the target: a
// regular file's size, times and inode (FileStat, exact), a block
// device's sampled fingerprint (Fingerprint). A target written to since
// (Target.Verify), or replaced (Identity), is treated as holding nothing,
// so that only a full is applied to it (ErrModified, ZFS's "destination
// has been modified since most recent snapshot"). A target that is one of the command's own files, or holds
// the filesystem one of them is on, is refused (TargetOptions.Guards).
//
// With a snapback file, the old contents of every range are saved, and made
// durable, before the range is overwritten. The snapback file is itself a
// delta file, complete after every saved range: applying it undoes the
// apply, even one that was interrupted. The caller creates the file and
// hands it over open (Options.Snapback); how a file gets a durable name is
// the catalog package's (catalog.CreateExclusive), not restore's.
//
// Encrypted files are read with Options.Key (MergeOptions.Key for
// Merge), and only with it: without it they are refused with
// archive.ErrKeyRequired, and with it a file that is not encrypted is
// refused (archive.ErrAuth), before anything is written. An encrypted
// incremental applied after another file must be bound to that file's
// snapshot (archive.ErrParentTag). Files written from an encrypted apply,
// the snapback file and a merged file, are encrypted under the same key.
//
// Merge (merge.go) writes one delta file equivalent to a chain of them,
// from the files alone: removing a snapshot from a store merges its file
// into its successor's. It merges the chain's records as Apply does
// (archive.OpenChain). The block digests of a snapshot from its chain's
// files, with which an image is backed up against its last backup, are not
// restore's: see archive.ChainDigests.
//
// Apply (apply.go) and Merge run on archive.Ordered, the one ordered
// parallel pipeline, and read payloads with archive.ReadPayloadAt; snapback
// files (snapback.go) skip a target's holes with archive.DataRegions.
//
// The state of a target (which snapshot it holds, an apply in progress) is
// kept by the caller, which passes it in as State and is told of changes
// through Options.Begin and Options.Finish; this package does not store
// anything itself.
package restore
