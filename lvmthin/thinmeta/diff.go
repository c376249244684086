package thinmeta

import (
	"context"
	"fmt"
	"math"
	"strconv"
)

// Kind is what a Range of a diff says about its blocks.
type Kind uint8

const (
	Same      Kind = iota + 1 // mapped to the same data block in both devices
	Different                 // mapped in both, to different data blocks
	LeftOnly                  // mapped only in the base (unmapped since: discarded)
	RightOnly                 // mapped only in the newer device (written since)
	Mapped                    // MappedRanges: mapped in the device
)

func (k Kind) String() string {
	switch k {
	case Same:
		return "same"
	case Different:
		return "different"
	case LeftOnly:
		return "left_only"
	case RightOnly:
		return "right_only"
	case Mapped:
		return "mapped"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Range is a run of virtual blocks of one kind.
type Range struct {
	Kind          Kind
	Begin, Length uint64 // in data blocks
}

// End returns the block after the range.
func (r Range) End() uint64 { return r.Begin + r.Length }

// emitter merges blocks into ranges of one kind and passes them on in
// ascending order.
type emitter struct {
	m       *Metadata
	what    string
	fn      func(Range) error
	pending Range
	last    uint64 // the previous block, if any
	any     bool
}

// add adds block k of kind kind. Blocks come in strictly ascending order;
// the cursors' checks see to that, and add checks it once more, so that
// nothing out of order ever reaches fn.
func (e *emitter) add(kind Kind, k uint64) error {
	if e.any && k <= e.last {
		return e.m.bad(0, e.what, "block "+strconv.FormatUint(k, 10)+" out of order")
	}
	e.last, e.any = k, true
	if e.pending.Length > 0 {
		if e.pending.Kind == kind && e.pending.End() == k {
			e.pending.Length++
			return nil
		}
		if err := e.fn(e.pending); err != nil {
			return err
		}
	}
	e.pending = Range{Kind: kind, Begin: k, Length: 1}
	return nil
}

// addRun adds the n blocks from k on, all of kind kind, as add does one by
// one.
func (e *emitter) addRun(kind Kind, k, n uint64) error {
	if n == 0 {
		return nil
	}
	if err := e.add(kind, k); err != nil {
		return err
	}
	e.pending.Length += n - 1
	e.last = k + n - 1
	return nil
}

func (e *emitter) flush() error {
	if e.pending.Length == 0 {
		return nil
	}
	r := e.pending
	e.pending = Range{}
	return e.fn(r)
}

// DiffOptions tune Diff.
type DiffOptions struct {
	// SameFrom is the first block for which Same ranges are reported.
	// Below it, subtrees the two devices share are passed over unread:
	// that is what makes a diff cost what changed. 0 reports every Same
	// range, as thin_delta does, and reads both trees whole;
	// math.MaxUint64 reports none.
	SameFrom uint64
	// End, if not 0, is the first block not of interest (the end of the
	// volume): blocks from there on are neither read nor reported.
	End uint64
}

// Diff compares the mappings of thin device left (the older, base) with
// those of right (the newer) and calls fn with the ranges that differ, in
// ascending order, adjacent ranges of one kind merged: Different,
// LeftOnly, RightOnly, and Same from opts.SameFrom on. Mappings compare by
// data block only, not by time, as the kernel and thin_delta do.
//
// Within one consistent view of the metadata (a held metadata snapshot,
// or an inactive pool), a block that both trees reference is one subtree
// with the same mappings in both: the kernel never changes a shared node
// in place, it copies the nodes on the path to a change. Diff walks both
// trees together with two cursors and passes over every subtree the two
// fronts share without reading it, so it reads the nodes on the paths to
// changed leaves and those leaves, not the whole trees:
//   - fronts at the same block: both skipped;
//   - fronts at different subtrees: the one whose key range lies wholly
//     before the other's is read, else the one with the wider range (the
//     higher one, whose children may be the other's block);
//   - a subtree against a leaf entry: the entry is reported if it comes
//     before the subtree's range, else the subtree is read;
//   - leaf entries against each other are merged by key.
//
// Every block it reads is validated; a block it passes over is, by the
// argument above, the same in both, whatever it holds.
func (m *Metadata) Diff(ctx context.Context, left, right uint64, opts DiffOptions, fn func(Range) error) error {
	lroot, err := m.DeviceRoot(left)
	if err != nil {
		return err
	}
	rroot, err := m.DeviceRoot(right)
	if err != nil {
		return err
	}
	limit := uint64(math.MaxUint64)
	if opts.End != 0 {
		limit = opts.End - 1
	}
	what := fmt.Sprintf("diff of thin devices %d and %d", left, right)
	a := newCursor(ctx, m, lroot, mappingValueSize, limit, "mapping tree of thin device "+strconv.FormatUint(left, 10))
	b := newCursor(ctx, m, rroot, mappingValueSize, limit, "mapping tree of thin device "+strconv.FormatUint(right, 10))
	a.readAhead, b.readAhead = m.readAhead > 0, m.readAhead > 0
	a.other, b.other = b, a
	e := &emitter{m: m, what: what, fn: fn}
	sameFrom := opts.SameFrom
	for {
		x, y := a.front(), b.front()
		var err error
		switch {
		case x.kind == itemEnd && y.kind == itemEnd:
			return e.flush()

		case x.kind == itemTree && y.kind == itemTree && x.blk == y.blk:
			if sameFrom != math.MaxUint64 && min(max(x.last, y.last), limit) >= sameFrom {
				// Same ranges wanted here: read it (the other side
				// follows, as it is then the wider).
				err = a.expand(x)
				break
			}
			if hx, hy := a.height(x.depth), b.height(y.depth); hx >= 0 && hy >= 0 && hx != hy {
				return m.bad(x.blk, what, fmt.Sprintf("shared node %d levels above the leaves in thin device %d, %d in thin device %d",
					hx, left, hy, right))
			}
			a.advance()
			b.advance()

		case x.kind == itemTree && y.kind == itemTree:
			switch {
			case x.last < y.lo:
				err = a.expand(x)
			case y.last < x.lo:
				err = b.expand(y)
			case x.width() >= y.width():
				err = a.expand(x)
			default:
				err = b.expand(y)
			}

		case x.kind == itemTree: // y is an entry or the end
			if y.kind == itemEntry && y.lo < x.lo {
				err = e.add(RightOnly, y.lo)
				b.advance()
			} else {
				err = a.expand(x)
			}

		case y.kind == itemTree: // x is an entry or the end
			if x.kind == itemEntry && x.lo < y.lo {
				err = e.add(LeftOnly, x.lo)
				a.advance()
			} else {
				err = b.expand(y)
			}

		case x.kind == itemEnd:
			err = e.add(RightOnly, y.lo)
			b.advance()

		case y.kind == itemEnd:
			err = e.add(LeftOnly, x.lo)
			a.advance()

		default:
			err = mergeLeaves(a, b, e, sameFrom)
		}
		if err != nil {
			return err
		}
	}
}

// mergeLeaves merges the leaf entries both cursors are at, until one of
// the leaves ends: the inner loop of a diff of changed leaves, without
// the general loop's work per entry.
func mergeLeaves(a, b *cursor, e *emitter, sameFrom uint64) error {
	fa, fb := &a.stack[a.depth-1], &b.stack[b.depth-1]
	na, nb := &fa.n, &fb.n
	i, j := fa.i, fb.i
	defer func() { fa.i, fb.i = i, j }()
	limit := a.limit // both cursors have the caller's
	for i < na.n && j < nb.n {
		ka, kb := na.key(i), nb.key(j)
		if ka > limit {
			i = na.n // the cursor's front is then the end
			break
		}
		if kb > limit {
			j = nb.n
			break
		}
		var err error
		switch {
		case ka < kb:
			err = e.add(LeftOnly, ka)
			i++
		case kb < ka:
			err = e.add(RightOnly, kb)
			j++
		default:
			da, _ := unpackBlockTime(na.value64(i))
			db, _ := unpackBlockTime(nb.value64(j))
			switch {
			case da != db:
				err = e.add(Different, ka)
			case ka >= sameFrom:
				err = e.add(Same, ka)
			}
			i++
			j++
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// MappedRanges calls fn with the runs of mapped blocks of thin device dev
// below end (0: all), in ascending order; a run is any virtually
// contiguous stretch of mapped blocks, whatever their data blocks.
func (m *Metadata) MappedRanges(ctx context.Context, dev, end uint64, fn func(Range) error) error {
	e := &emitter{m: m, what: "mappings of thin device " + strconv.FormatUint(dev, 10), fn: fn}
	err := m.walk(ctx, dev, end, func(n *node, i, j int) error {
		for i < j {
			// Keys ascend strictly, so entries [i, j) are one run of
			// blocks when the last is as far from the first as its
			// index: most leaves of a written volume are.
			k := n.key(i)
			if r := uint64(j - 1 - i); n.key(j-1)-k == r {
				return e.addRun(Mapped, k, r+1)
			}
			if err := e.add(Mapped, k); err != nil {
				return err
			}
			i++
		}
		return nil
	})
	if err != nil {
		return err
	}
	return e.flush()
}

// Mappings calls fn with every mapping of thin device dev below end (0:
// all), in ascending order.
func (m *Metadata) Mappings(ctx context.Context, dev, end uint64, fn func(Mapping) error) error {
	return m.walk(ctx, dev, end, func(n *node, i, j int) error {
		for ; i < j; i++ {
			data, t := unpackBlockTime(n.value64(i))
			if err := fn(Mapping{Block: n.key(i), DataBlock: data, Time: t}); err != nil {
				return err
			}
		}
		return nil
	})
}

// walk reads every leaf of a device's mapping tree with keys below end
// and calls leaf with each, and the entries [i, j) of it that are wanted.
func (m *Metadata) walk(ctx context.Context, dev, end uint64, leaf func(n *node, i, j int) error) error {
	root, err := m.DeviceRoot(dev)
	if err != nil {
		return err
	}
	limit := uint64(math.MaxUint64)
	if end != 0 {
		limit = end - 1
	}
	c := newCursor(ctx, m, root, mappingValueSize, limit, "mapping tree of thin device "+strconv.FormatUint(dev, 10))
	c.readAhead = m.readAhead > 0
	for {
		it := c.front()
		switch it.kind {
		case itemEnd:
			return nil
		case itemTree:
			if err := c.expand(it); err != nil {
				return err
			}
		case itemEntry:
			f := &c.stack[c.depth-1]
			j := f.i
			for j < f.n.n && f.n.key(j) <= limit {
				j++
			}
			if err := leaf(&f.n, f.i, j); err != nil {
				return err
			}
			f.i = f.n.n
			if j < f.n.n {
				return nil // the rest is past the end
			}
		}
	}
}
