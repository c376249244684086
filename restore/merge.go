package restore

import (
	"io"

	"github.com/thinback/thinback/archive"
)

// A segment is a range of the final volume and the record that defines it:
// the newest record, across the chain, that covers the range.
type segment struct {
	kind     archive.Kind
	off, end int64
	input    int             // index of the file the record comes from
	rec      *archive.Record // DATA: the record whose data covers [off, end)
}

// merger walks the records of a chain of files, oldest first, all in
// ascending offset order, and yields the disjoint segments of the final
// state in ascending order. It holds one record per file, so memory does
// not grow with the files' sizes.
type merger struct {
	cur   []*archive.Record // current record of each file; nil at the end
	rds   []*archive.Reader
	names []string
	size  int64 // final volume size: nothing past it is written
	pos   int64
	// onRecord is called when a file's current record is about to be
	// left behind, with whether any segment of it was yielded: a stream's
	// payload must be read then or never.
	onRecord func(input int, rec *archive.Record, used bool) error
	used     []bool
}

func newMerger(rds []*archive.Reader, names []string, size int64) *merger {
	return &merger{cur: make([]*archive.Record, len(rds)), rds: rds, names: names, size: size, used: make([]bool, len(rds))}
}

// advance moves file i to its next record.
func (m *merger) advance(i int) error {
	if m.cur[i] != nil && m.onRecord != nil {
		if err := m.onRecord(i, m.cur[i], m.used[i]); err != nil {
			return err
		}
	}
	m.used[i] = false
	rec, err := m.rds[i].Next()
	switch {
	case err == io.EOF:
		m.cur[i] = nil
		return io.EOF
	case err != nil:
		return inputError(m.names[i], err)
	}
	m.cur[i] = rec
	return nil
}

func (m *merger) start() error {
	for i := range m.rds {
		if err := m.advance(i); err != nil && err != io.EOF {
			return err
		}
	}
	return nil
}

// next returns the next segment, or io.EOF when the final volume is done
// (the files may still hold records past its end: see finish).
func (m *merger) next() (segment, error) {
	for m.pos < m.size {
		// Leave behind records that end at or before pos.
		for i := range m.cur {
			for m.cur[i] != nil && m.cur[i].End() <= m.pos {
				if err := m.advance(i); err != nil && err != io.EOF {
					return segment{}, err
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
				return segment{}, io.EOF // no record covers anything from here on
			}
			m.pos = cut
			continue
		}
		r := m.cur[win]
		seg := segment{kind: r.Kind, off: m.pos, end: min(r.End(), cut), input: win}
		if r.Kind == archive.KindData {
			seg.rec = r
		}
		m.used[win] = true
		m.pos = seg.end
		return seg, nil
	}
	return segment{}, io.EOF
}

// finish reads every file to its verified END record.
func (m *merger) finish() error {
	for i := range m.cur {
		for m.cur[i] != nil {
			if err := m.advance(i); err != nil && err != io.EOF {
				return err
			}
		}
	}
	return nil
}
