// Package archive reads and writes thinback delta files.
//
// A delta file describes one snapshot of a block volume: completely (a full)
// or as the changes from a parent snapshot (an incremental). The byte layout
// is specified in docs/FORMAT.md; format.go holds the constants that define
// it.
//
// The API is shaped like archive/tar. A Writer takes a Header and then
// records in offset order; Close writes the END record. A Reader returns the
// Header and then each record, verifying the chain of digests that links
// every record to everything before it; Next returns io.EOF only after a
// verified END record. Errors are sticky: once a Writer or Reader has failed,
// every later call returns the same error. Corruption is reported as a
// *FormatError that wraps one of the sentinel errors (ErrHeader,
// ErrChecksum, ErrTruncated, ErrVersion, ErrTrailingData) and says where in
// the file it was found.
//
// Payloads are not decoded by the Reader: a Decoder turns a DATA record into
// verified bytes, so that decoding and hashing can run on every core (see
// Scan), and a reader that needs only the structure of a file can skip the
// payloads.
//
// Send is the writing pipeline: it takes a Source (extents plus a reader),
// splits the data into blocks, stores all-zero blocks as ZERO records and
// hashes and compresses the rest in parallel, writing records in order with
// memory bounded by the number of workers.
//
// Sources: FileSource sends a whole file or block device (holes of a sparse
// file without reading them), CompareSource the blocks in which two images
// differ, and DigestSource the blocks in which an image differs from a
// snapshot known only by its block digests (a DigestIterator, such as
// ChainDigests), hashing the image on several cores as it reads it once.
//
// # Chains
//
// The files of a chain (a full, then incrementals, each from the snapshot
// of the one before) are read together here, because what they mean
// together is part of the format: CheckLinks holds the rules between the
// files (ErrNotChain, ErrBlockSize), a Merger merges their records into the
// segments of the final state (the newest record wins for each byte), which
// is how restore applies a chain writing each byte once and merges files
// into one, and ChainDigests gives the block digests of any snapshot from
// its chain's metadata alone, which is how an image is backed up against
// its last backup. OpenChain opens a chain of seekable files for both;
// a Chain's Scan decodes its segments on all cores and hands them over in
// order (an image of a snapshot, written out).
//
// A SnapshotReader (OpenSnapshot) reads any byte range of a snapshot from
// its chain without restoring it, for mounting a point in time: an index
// of the merged segments, about 70 bytes per record and nothing per byte
// of the volume, and ReadAt that reads, verifies and decodes only the
// records a range needs, with a small cache and a read-ahead for
// sequential readers. A damaged record fails the reads of its range only.
//
// # Encryption
//
// A file written by NewWriter(w, WithKey(k)) is encrypted under k, a Key
// made from a 32-byte master key (NewKey): record metadata and payloads
// sealed with AES-256-GCM under keys of the file's own (a random salt),
// block digests keyed, the header and END authenticated, an incremental
// bound to its parent snapshot's identity under the key
// (Header.ParentTag, Key.ParentTag, CheckParentTags), and each file with
// a tag only the key gives (Trailer.Tag, Key.FileTag). NewReader,
// OpenChain, OpenChainDigests, ResumeWriter and RecoverWriter take
// WithKey, OpenSnapshot and DigestSource a Key field; a Decoder authenticates a payload before any
// byte of it is decrypted or returned, and OpenPayload opens one for
// copying into another file. Without the key a Reader gives the header
// and then ErrKeyRequired, and CheckStructure checks what can be checked
// without it: the structure and the file digest. ErrWrongKey, ErrAuth and
// ErrParentTag say what else went wrong. docs/FORMAT.md "Encryption" is
// the design.
//
// # Machinery for the other packages
//
// Each of these exists once, here, for every package that needs it:
// Ordered, the ordered parallel pipeline (read in order, work on every core,
// write in order, memory bounded, the earliest error wins) behind Send,
// Scan, DigestSource and restore's apply and merge, with the worker policy
// (WorkerCount, MaxWorkers); ReadPayloadAt, reading a record's payload at
// its offset (ErrTruncated when the file shrank); ReadError, an
// unreadable source or delta file located to its first bad 4 KiB (Send,
// ReadPayloadAt and Reader read a failed range again a block at a time);
// ResumeWriter, continuing a complete file where its END record is (a
// snapback file of an apply run again), and RecoverWriter, the same for a
// file a crash tore during a checkpoint, up to its last record that
// verifies; and DataRegions, the walk over a
// sparse file's data and holes with SEEK_DATA/SEEK_HOLE.
package archive
