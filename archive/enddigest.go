package archive

import (
	"fmt"
	"io"
)

// EndDigest returns the file digest a complete delta file of size bytes
// claims: the tag of its END record, its last DigestSize bytes. It reads
// only those bytes and verifies nothing; a Reader that reads the file to
// its END checks that the claim is the file's digest (Trailer.Digest). So
// a caller that knows which file it wants (a catalog records the digest)
// can refuse another one before reading it, and rely on the readers to
// refuse a file that claims the right digest but does not have it.
func EndDigest(r io.ReaderAt, size int64) (Digest, error) {
	var d Digest
	if size < int64(len(magic))+DigestSize {
		return d, fmt.Errorf("a delta file of %d bytes is too short to end in an END record: %w", size, ErrTruncated)
	}
	if n, err := r.ReadAt(d[:], size-DigestSize); n < DigestSize {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return d, fmt.Errorf("reading the END record's digest: %w", err)
	}
	return d, nil
}
