package archive

import (
	"fmt"
	"io"
)

// ChainDigests yields the block digests of a snapshot from the delta files
// of its chain, full first, without reading their payloads: the newest
// record wins for each block, a DATA record lends the digests of the blocks
// it wins and a ZERO record says they read as zeroes. It is how an image is
// compared with its last backup when only the backup's files are at hand
// (see NewDigestSource).
//
// It reads the files' metadata once, front to back, seeking over payloads,
// and holds one record per file: memory does not grow with the volume.
// Digests are checked only through the files' digest chains, which cover
// them; the payloads are not read, so a corrupt payload does not change the
// digests, and is the business of a verify.
type ChainDigests struct {
	c       *Chain
	pos     int64
	pending []DigestExtent
	err     error
}

var _ DigestIterator = (*ChainDigests)(nil)

// OpenChainDigests opens inputs, the chain of a snapshot from its full,
// oldest first, and checks that they form a chain with one block size (see
// OpenChain). The files must stay open while the ChainDigests is used.
//
// WithKey reads a chain encrypted under the key: the digests are then the
// key's keyed digests, to compare with those of a DigestSource given the
// same key.
func OpenChainDigests(inputs []ChainInput, opts ...Option) (*ChainDigests, error) {
	c, err := OpenChain(inputs, opts...)
	if err != nil {
		return nil, err
	}
	if first := c.Files()[0]; !first.Header.IsFull() {
		return nil, fmt.Errorf("%s is an incremental from %s: %w; the digests of a snapshot come from its chain from the full", first.Name, first.Header.Parent.Describe(), ErrNotChain)
	}
	return &ChainDigests{c: c}, nil
}

// BlockSize returns the block size the chain's files share.
func (d *ChainDigests) BlockSize() int64 { return d.c.BlockSize() }

// Header returns the header of the chain's last file: the snapshot whose
// digests are yielded, and its volume size.
func (d *ChainDigests) Header() *Header { return d.c.Header() }

// Next returns the next extent of the snapshot, in ascending order, and
// io.EOF after the last, once every file was read to its verified END
// record. The extents cover [0, volume size) without gaps. A DATA extent's
// digests are those of the record it comes from, one per block; they stay
// valid after the next call. Errors are sticky.
func (d *ChainDigests) Next() (DigestExtent, error) {
	if d.err != nil {
		return DigestExtent{}, d.err
	}
	if len(d.pending) > 0 {
		e := d.pending[0]
		d.pending = d.pending[1:]
		return e, nil
	}
	e, err := d.next()
	if err != nil {
		d.err = err
		return DigestExtent{}, err
	}
	return e, nil
}

func (d *ChainDigests) next() (DigestExtent, error) {
	size := d.c.Header().VolumeSize
	seg, err := d.c.Next()
	if err == io.EOF {
		if d.pos < size {
			// The reader enforces a full's coverage, so this is not reached
			// with valid files; say so rather than yield a gap.
			return DigestExtent{}, fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", d.pos, size, ErrNotChain)
		}
		return DigestExtent{}, io.EOF
	}
	if err != nil {
		return DigestExtent{}, err
	}
	if seg.Offset != d.pos {
		return DigestExtent{}, fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", d.pos, seg.Offset, ErrNotChain)
	}
	d.pos = seg.End()
	e := DigestExtent{Offset: seg.Offset, Length: seg.Length, Kind: seg.Kind}
	if seg.Kind != KindData {
		return e, nil
	}
	rec, bs := seg.Record, d.c.BlockSize()
	e.Digests = rec.Digests[(seg.Offset-rec.Offset)/bs : (seg.End()-rec.Offset+bs-1)/bs]
	tail := (seg.End() - rec.Offset) % bs
	if tail == 0 || seg.End() == rec.End() {
		return e, nil
	}
	// The volume shrank to a size inside this record's block: the digest
	// of what is left of the block is not in any file. Work it out from the
	// record's data, once per chain at most.
	digest, zero, err := d.cutBlock(seg, seg.End()-tail)
	if err != nil {
		return DigestExtent{}, err
	}
	n := len(e.Digests)
	if !zero {
		e.Digests = append(e.Digests[:n-1:n-1], digest)
		return e, nil
	}
	z := DigestExtent{Offset: seg.End() - tail, Length: tail, Kind: KindZero}
	if n == 1 {
		return z, nil
	}
	e.Length -= tail
	e.Digests = e.Digests[:n-1]
	d.pending = append(d.pending, z)
	return e, nil
}

// cutBlock returns the digest of [from, seg.End()) of the segment's record,
// and whether those bytes are all zero, after verifying the record.
func (d *ChainDigests) cutBlock(seg Segment, from int64) (Digest, bool, error) {
	rec := seg.Record
	p, err := d.c.ReadPayload(seg.Input, rec, nil)
	if err != nil {
		return Digest{}, false, err
	}
	dec := NewDecoder()
	defer dec.Close()
	data, err := dec.Decode(nil, rec, p)
	if err != nil {
		return Digest{}, false, fmt.Errorf("%s: %w", d.c.Files()[seg.Input].Name, err)
	}
	b := data[from-rec.Offset : seg.End()-rec.Offset]
	if isZero(b) {
		return Digest{}, true, nil
	}
	var key *Key
	if rec.crypt != nil {
		key = rec.crypt.key
	}
	return key.blockDigest(b), false, nil
}
