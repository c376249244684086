package archive

import (
	"errors"
	"fmt"
	"io"
)

// Errors of a chain of delta files. Test with errors.Is.
var (
	// ErrNotChain means that files given together do not form a chain:
	// a full after the first file, a parent that is not the file before,
	// another volume, or a parent size that is not the size the file
	// before leaves the volume at.
	ErrNotChain = errors.New("files do not form a chain")
	// ErrBlockSize means that files given together have different block
	// sizes, so their records cannot be merged block by block.
	ErrBlockSize = errors.New("files have different block sizes")
)

// ChainFile is a delta file's header with the name used in messages.
type ChainFile struct {
	Name   string
	Header *Header
}

// CheckLinks checks the rules between the files of a chain, oldest first:
// only the first may be a full; each incremental's parent is the snapshot of
// the file before it, with the volume size that file leaves (its
// ParentSize); all are of one volume. It does not require the first file to
// be a full, nor one block size (see OpenChain).
//
// A snapback file's sizes are those of the target it was written on (a
// block device may be larger than the volume, a file target is recorded at
// its size before the apply), so the size rule is not applied next to one.
func CheckLinks(files []ChainFile) error {
	for _, f := range files {
		if f.Header.IsResumed() && len(files) > 1 {
			return fmt.Errorf("%s is the rest of an interrupted transfer, from byte %d: %w; apply it on its own, to the target of that transfer", f.Name, f.Header.ResumeFrom, ErrNotChain)
		}
	}
	for i := 1; i < len(files); i++ {
		prev, cur := files[i-1], files[i]
		ph, ch := prev.Header, cur.Header
		if ch.IsFull() {
			return fmt.Errorf("%s is a full and %s comes before it: %w; apply a full first, then its incrementals in order", cur.Name, prev.Name, ErrNotChain)
		}
		if ch.Parent.ID != ph.Snapshot.ID {
			return fmt.Errorf("%s is an incremental from %s, but the file before it, %s, is snapshot %s: %w; give the files in chain order", cur.Name, ch.Parent.Describe(), prev.Name, ph.Snapshot.Describe(), ErrNotChain)
		}
		if u, v := ph.VolumeUUID, ch.VolumeUUID; u != "" && v != "" && u != v {
			return fmt.Errorf("%s is of volume %s (%s), %s of volume %s (%s): %w", prev.Name, ph.VolumeName, u, cur.Name, ch.VolumeName, v, ErrNotChain)
		}
		if ch.ParentSize != ph.VolumeSize && !ch.IsSnapback() && !ph.IsSnapback() {
			// Bytes past the smaller size would be defined by neither
			// file, and left as whatever the target held.
			return fmt.Errorf("%s is an incremental from a volume of %d bytes, but the file before it, %s, leaves the volume at %d bytes: %w; the file is damaged or was not made from that snapshot", cur.Name, ch.ParentSize, prev.Name, ph.VolumeSize, ErrNotChain)
		}
	}
	return nil
}

// checkBlockSize requires one block size, without which a record could not
// be cut into blocks of another file's size.
func checkBlockSize(files []ChainFile) error {
	bs := files[0].Header.BlockSize
	for _, f := range files[1:] {
		if f.Header.BlockSize != bs {
			return fmt.Errorf("%s has blocks of %d bytes, %s of %d bytes: %w; files of one chain share the block size of its full", files[0].Name, bs, f.Name, f.Header.BlockSize, ErrBlockSize)
		}
	}
	return nil
}

// A Segment is a range of a chain's final volume and the record that
// defines it: the newest record, across the chain, that covers the range.
type Segment struct {
	Kind   Kind
	Offset int64
	Length int64
	// Input is the index of the file the record comes from.
	Input int
	// Record is that record; the segment may be only part of it.
	Record *Record
}

// End returns the offset just past the segment.
func (s Segment) End() int64 { return s.Offset + s.Length }

// A Merger merges the records of a chain of delta files, oldest first, each
// in ascending offset order, into the disjoint segments of the final
// state, in ascending order: for each byte the newest record wins, so that
// a chain is applied (or merged into one file) writing each byte once. It
// holds one record per file, so memory does not grow with the files.
//
// A Merger reads the files' structure only. The payload of a DATA segment's
// record is read with ReadPayloadAt or, from a stream, with its Reader's
// ReadPayload before the next call to Next: the record is then still the
// current one of its file.
type Merger struct {
	names   []string
	rds     []*Reader
	cur     []*Record // current record of each file; nil at the end
	size    int64
	pos     int64
	started bool
	err     error
}

// NewMerger returns a Merger of the files rds reads (names for messages)
// into the final volume of size bytes: nothing past it is yielded. The
// readers must be past their headers (Header called) or about to read them.
func NewMerger(names []string, rds []*Reader, size int64) *Merger {
	return &Merger{names: names, rds: rds, cur: make([]*Record, len(rds)), size: size}
}

// Next returns the next segment, and io.EOF after the last, once every
// file was read to its verified END record (records past the final size
// included). Ranges that no record covers (bytes an incremental leaves to
// its parent) are skipped. An error names the file at fault; errors are
// sticky.
func (m *Merger) Next() (Segment, error) {
	if m.err != nil {
		return Segment{}, m.err
	}
	seg, err := m.next()
	if err != nil {
		m.err = err
	}
	return seg, err
}

func (m *Merger) next() (Segment, error) {
	if !m.started {
		m.started = true
		for i := range m.rds {
			if err := m.advance(i); err != nil {
				return Segment{}, err
			}
		}
	}
	for m.pos < m.size {
		// Leave behind records that end at or before pos.
		for i := range m.cur {
			for m.cur[i] != nil && m.cur[i].End() <= m.pos {
				if err := m.advance(i); err != nil {
					return Segment{}, err
				}
			}
		}
		// The newest record covering pos wins; a newer file's record that
		// starts later cuts it short.
		win := -1
		for i := len(m.cur) - 1; i >= 0; i-- {
			if r := m.cur[i]; r != nil && r.Offset <= m.pos {
				win = i
				break
			}
		}
		cut := m.size
		for i := win + 1; i < len(m.cur); i++ {
			if r := m.cur[i]; r != nil && r.Offset > m.pos {
				cut = min(cut, r.Offset)
			}
		}
		if win < 0 {
			if cut == m.size {
				break // no record covers anything from here on
			}
			m.pos = cut
			continue
		}
		r := m.cur[win]
		seg := Segment{Kind: r.Kind, Offset: m.pos, Length: min(r.End(), cut) - m.pos, Input: win, Record: r}
		m.pos = seg.End()
		return seg, nil
	}
	// Read every file to its verified END record.
	for i := range m.cur {
		for m.cur[i] != nil {
			if err := m.advance(i); err != nil {
				return Segment{}, err
			}
		}
	}
	return Segment{}, io.EOF
}

// advance moves file i to its next record, nil after its END.
func (m *Merger) advance(i int) error {
	rec, err := m.rds[i].Next()
	switch {
	case err == io.EOF:
		m.cur[i] = nil
	case err != nil:
		return fmt.Errorf("%s: %w", m.names[i], err)
	default:
		m.cur[i] = rec
	}
	return nil
}

// ReadSeekerAt is a delta file that can be read front to back, seeking over
// payloads, and at offsets: an *os.File of a regular file.
type ReadSeekerAt interface {
	io.ReadSeeker
	io.ReaderAt
}

// ChainInput is one delta file of a chain, open for reading from its start.
type ChainInput struct {
	Name string // used in messages
	File ReadSeekerAt
}

// A Chain is the delta files of a snapshot's chain, oldest first, read
// together: their segments (see Merger) in one pass over the files'
// metadata, each payload read at its offset only when it is needed.
type Chain struct {
	files []ChainFile
	ras   []io.ReaderAt
	rds   []*Reader
	*Merger
}

// OpenChain reads the headers of inputs, delta files oldest first, and
// checks that they form a chain (CheckLinks) with one block size. The first
// may be an incremental: the chain then holds the changes from its parent.
// The files must stay open while the Chain is used. Damage after the
// headers is found as the segments are read, naming the file.
//
// WithKey reads files encrypted under the key, and then also requires each
// encrypted incremental (but a snapback file) to carry the parent tag of
// the file before it (CheckParentTags), checked from the authenticated
// headers before any record is read: a file of another key
// (ErrWrongKey), of another volume or snapshot, or a snapback file, in
// the parent's place is refused before a byte of data is returned
// (ErrParentTag). Any file of the parent's snapshot under the key, a
// merged one included, is taken.
func OpenChain(inputs []ChainInput, opts ...Option) (*Chain, error) {
	if len(inputs) == 0 {
		return nil, fmt.Errorf("no delta files: %w", ErrNotChain)
	}
	c := &Chain{files: make([]ChainFile, len(inputs)), ras: make([]io.ReaderAt, len(inputs))}
	names := make([]string, len(inputs))
	rds := make([]*Reader, len(inputs))
	for i, in := range inputs {
		rd := NewReader(in.File, opts...)
		h, err := rd.Header()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", in.Name, err)
		}
		if h.IsResumed() {
			return nil, fmt.Errorf("%s is the rest of an interrupted transfer, from byte %d, not a snapshot: %w; apply it to the target of that transfer with thinback receive", in.Name, h.ResumeFrom, ErrNotChain)
		}
		c.files[i], c.ras[i], names[i], rds[i] = ChainFile{Name: in.Name, Header: h}, in.File, in.Name, rd
	}
	if err := CheckLinks(c.files); err != nil {
		return nil, err
	}
	if err := checkBlockSize(c.files); err != nil {
		return nil, err
	}
	if err := CheckParentTags(c.files, applyOptions(opts).key); err != nil {
		return nil, err
	}
	c.rds = rds
	c.Merger = NewMerger(names, rds, c.Header().VolumeSize)
	return c, nil
}

// Files returns the chain's files, oldest first, with their headers.
func (c *Chain) Files() []ChainFile { return c.files }

// Header returns the header of the chain's last file: the snapshot it leads
// to and its volume size.
func (c *Chain) Header() *Header { return c.files[len(c.files)-1].Header }

// BlockSize returns the block size the chain's files share.
func (c *Chain) BlockSize() int64 { return c.files[0].Header.BlockSize }

// ReadPayload reads the payload of rec, a record of the chain's file input
// (a Segment's Input and Record), into buf (grown if too small), with
// ReadPayloadAt. An error names the file.
func (c *Chain) ReadPayload(input int, rec *Record, buf []byte) ([]byte, error) {
	p, err := ReadPayloadAt(c.ras[input], rec, buf)
	if err != nil {
		return p, fmt.Errorf("%s: %w", c.files[input].Name, err)
	}
	return p, nil
}
