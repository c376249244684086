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
// snapshot known only by its block digests (a DigestIterator, such as the
// merged records of the snapshot's delta files), hashing the image on
// several cores as it reads it once.
package archive
