package restore

import (
	"errors"
	"fmt"
	"io"

	"github.com/thinback/thinback/archive"
	"github.com/zeebo/blake3"
)

// ChainDigests yields the block digests of a snapshot from the delta files
// of its chain, full first, without reading their payloads: the newest
// record wins for each block, a DATA record lends the digests of the blocks
// it wins and a ZERO record says they read as zeroes. It is how an image is
// compared with its last backup when only the backup's files are at hand
// (see archive.NewDigestSource).
//
// It reads the files' metadata once, front to back, seeking over payloads,
// and holds one record per file: memory does not grow with the volume.
// Digests are checked only through the files' digest chains, which cover
// them; the payloads are not read, so a corrupt payload does not change the
// digests, and is the business of a verify.
//
// ChainDigests implements archive.DigestIterator.
type ChainDigests struct {
	m       *merger
	last    *archive.Header
	names   []string
	ras     []io.ReaderAt
	bs      int64
	size    int64
	pos     int64
	pending []archive.DigestExtent
	err     error
}

var _ archive.DigestIterator = (*ChainDigests)(nil)

// OpenChainDigests reads the headers of inputs, the chain of a snapshot from
// its full, oldest first, and checks that they form a chain with one block
// size. Inputs must be seekable regular files, left open while the
// ChainDigests is used.
func OpenChainDigests(inputs []Input) (*ChainDigests, error) {
	if len(inputs) == 0 {
		return nil, fmt.Errorf("no delta files: %w", ErrNotChain)
	}
	files := make([]File, len(inputs))
	rds := make([]*archive.Reader, len(inputs))
	names := make([]string, len(inputs))
	ras := make([]io.ReaderAt, len(inputs))
	for i, in := range inputs {
		s, ok := in.R.(seekReaderAt)
		if !ok || !isSeekable(s) {
			return nil, fmt.Errorf("%s is not a regular file (a pipe?): the digests of a chain are read from regular files", in.Name)
		}
		rd := archive.NewReader(s)
		h, err := rd.Header()
		if err != nil {
			return nil, inputError(in.Name, err)
		}
		files[i], rds[i], names[i], ras[i] = File{Name: in.Name, Header: h}, rd, in.Name, s
	}
	if first := files[0]; !first.Header.IsFull() {
		return nil, fmt.Errorf("%s is an incremental from %s: %w; the digests of a snapshot come from its chain from the full", first.Name, describe(first.Header.Parent), ErrNotChain)
	}
	if err := checkMergeable(files); err != nil {
		return nil, err
	}
	last := files[len(files)-1].Header
	c := &ChainDigests{m: newMerger(rds, names, last.VolumeSize), last: last, names: names, ras: ras,
		bs: last.BlockSize, size: last.VolumeSize}
	if err := c.m.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// BlockSize returns the block size the chain's files share.
func (c *ChainDigests) BlockSize() int64 { return c.bs }

// Header returns the header of the chain's last file: the snapshot whose
// digests are yielded, and its volume size.
func (c *ChainDigests) Header() *archive.Header { return c.last }

// Next returns the next extent of the snapshot, in ascending order, and
// io.EOF after the last, once every file was read to its verified END
// record. The extents cover [0, volume size) without gaps. A DATA extent's
// digests are those of the record it comes from, one per block; they stay
// valid after the next call. Errors are sticky.
func (c *ChainDigests) Next() (archive.DigestExtent, error) {
	if c.err != nil {
		return archive.DigestExtent{}, c.err
	}
	if len(c.pending) > 0 {
		e := c.pending[0]
		c.pending = c.pending[1:]
		return e, nil
	}
	e, err := c.next()
	if err != nil {
		c.err = err
		return archive.DigestExtent{}, err
	}
	return e, nil
}

func (c *ChainDigests) next() (archive.DigestExtent, error) {
	seg, err := c.m.next()
	if err == io.EOF {
		if c.pos < c.size {
			// The reader enforces a full's coverage, so this is not reached
			// with valid files; say so rather than yield a gap.
			return archive.DigestExtent{}, fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", c.pos, c.size, ErrNotChain)
		}
		if err := c.m.finish(); err != nil {
			return archive.DigestExtent{}, err
		}
		return archive.DigestExtent{}, io.EOF
	}
	if err != nil {
		return archive.DigestExtent{}, err
	}
	if seg.off != c.pos {
		return archive.DigestExtent{}, fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", c.pos, seg.off, ErrNotChain)
	}
	c.pos = seg.end
	e := archive.DigestExtent{Offset: seg.off, Length: seg.end - seg.off, Kind: seg.kind}
	if seg.kind != archive.KindData {
		return e, nil
	}
	rec, bs := seg.rec, c.bs
	e.Digests = rec.Digests[(seg.off-rec.Offset)/bs : (seg.end-rec.Offset+bs-1)/bs]
	tail := (seg.end - rec.Offset) % bs
	if tail == 0 || seg.end == rec.End() {
		return e, nil
	}
	// The volume shrank to a size inside this record's block: the digest
	// of what is left of the block is not in any file. Work it out from the
	// record's data, once per chain at most.
	d, zero, err := c.cutBlock(seg, seg.end-tail)
	if err != nil {
		return archive.DigestExtent{}, err
	}
	n := len(e.Digests)
	if !zero {
		e.Digests = append(e.Digests[:n-1:n-1], d)
		return e, nil
	}
	z := archive.DigestExtent{Offset: seg.end - tail, Length: tail, Kind: archive.KindZero}
	if n == 1 {
		return z, nil
	}
	e.Length -= tail
	e.Digests = e.Digests[:n-1]
	c.pending = append(c.pending, z)
	return e, nil
}

// cutBlock returns the digest of [from, seg.end) of the segment's record,
// and whether those bytes are all zero, after verifying the record.
func (c *ChainDigests) cutBlock(seg segment, from int64) (archive.Digest, bool, error) {
	rec := seg.rec
	p := make([]byte, rec.PayloadLen)
	if n, err := c.ras[seg.input].ReadAt(p, rec.PayloadPos); int64(n) != rec.PayloadLen {
		if err == nil || errors.Is(err, io.EOF) {
			err = &archive.FormatError{Offset: rec.PayloadPos, Record: rec.Num, Err: archive.ErrTruncated,
				Detail: fmt.Sprintf("the file ends inside the payload of record %d", rec.Num)}
		}
		return archive.Digest{}, false, inputError(c.names[seg.input], err)
	}
	dec := archive.NewDecoder()
	defer dec.Close()
	data, err := dec.Decode(nil, rec, p)
	if err != nil {
		return archive.Digest{}, false, inputError(c.names[seg.input], err)
	}
	b := data[from-rec.Offset : seg.end-rec.Offset]
	for _, x := range b {
		if x != 0 {
			return blake3.Sum256(b), false, nil
		}
	}
	return archive.Digest{}, true, nil
}
