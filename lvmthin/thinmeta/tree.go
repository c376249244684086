package thinmeta

import (
	"context"
	"fmt"
	"math"
	"strconv"
)

// maxDepth bounds the nodes on a root-to-leaf path of one btree. The
// kernel keeps its nodes at least about a third full, so 2^64 keys fit in
// 11 levels, and persistent-data's own btree cursor refuses trees deeper
// than 15 (DM_BTREE_CURSOR_MAX_DEPTH); real pools have 3 to 5. A deeper
// path is damage, or a cycle.
const maxDepth = 16

// frame is a node on a cursor's path: the node, the entry the cursor is
// at, and the key range the parent gives the node.
type frame struct {
	blk      uint64
	n        node
	i        int
	lo, last uint64
}

type itemKind uint8

const (
	itemEnd   itemKind = iota // no more keys (or none up to the cursor's limit)
	itemTree                  // a subtree not read yet
	itemEntry                 // a leaf entry
)

// item is what a cursor is at: a subtree that has not been read (its
// block, the key range its parent gives it, its depth) or a leaf entry
// (key in lo, 8-byte value in val).
type item struct {
	kind     itemKind
	blk      uint64
	lo, last uint64
	val      uint64
	depth    int
}

func (it item) width() uint64 { return it.last - it.lo }

// cursor walks one btree in key order with an explicit stack, reading a
// node only when asked to expand it, so a subtree can be passed over
// without being read. Its memory is maxDepth blocks.
//
// It validates every node it reads: parseNode's checks with the key range
// the parent gives, child pointers inside the metadata and not at the
// superblock, all leaves at one depth, no node its own ancestor, no path
// deeper than maxDepth, and no more nodes read than the metadata has
// blocks (a tree that passes the other checks never needs that many: each
// non-empty node fits only one place in it).
type cursor struct {
	ctx       context.Context
	m         *Metadata
	what      string
	vsize     int
	limit     uint64 // keys above it are not wanted
	root      uint64
	started   bool
	depth     int
	stack     [maxDepth]frame
	bufs      []byte
	leafDepth int // -1 until a leaf is read
	reads     uint64
	cacheAll  bool // cache leaves too (small trees read by lookups)
	// readAhead reads the nodes the walk reads next at a level ahead,
	// many at once, into a buffer per level (prefetch.go); other is the
	// cursor of the other tree of a diff.
	readAhead bool
	pfs       [maxDepth]*prefetch
	other     *cursor
}

func newCursor(ctx context.Context, m *Metadata, root uint64, vsize int, limit uint64, what string) *cursor {
	return &cursor{ctx: ctx, m: m, what: what, vsize: vsize, limit: limit, root: root, leafDepth: -1}
}

// front returns the item the cursor is at.
func (c *cursor) front() item {
	if !c.started {
		return item{kind: itemTree, blk: c.root, lo: 0, last: math.MaxUint64}
	}
	for c.depth > 0 && c.stack[c.depth-1].i >= c.stack[c.depth-1].n.n {
		c.depth--
		if c.depth > 0 {
			c.stack[c.depth-1].i++
		}
	}
	if c.depth == 0 {
		return item{kind: itemEnd}
	}
	f := &c.stack[c.depth-1]
	k := f.n.key(f.i)
	if k > c.limit {
		return item{kind: itemEnd}
	}
	if f.n.leaf {
		return item{kind: itemEntry, lo: k, last: k, val: f.n.value64(f.i)}
	}
	last := f.last
	if f.i+1 < f.n.n {
		last = f.n.key(f.i+1) - 1
	}
	return item{kind: itemTree, blk: f.n.value64(f.i), lo: k, last: last, depth: c.depth}
}

// advance moves past the front item (a subtree without reading it).
func (c *cursor) advance() {
	if !c.started {
		c.started = true
		return
	}
	c.stack[c.depth-1].i++
}

// expand reads the subtree at the front, it, and moves to its first item.
func (c *cursor) expand(it item) error {
	m := c.m
	d := it.depth
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	parentBlk := func() uint64 {
		if d == 0 {
			return 0
		}
		return c.stack[d-1].blk
	}
	switch {
	case d >= maxDepth:
		return m.bad(parentBlk(), c.what, "the tree is deeper than "+strconv.Itoa(maxDepth)+" levels")
	case it.blk == 0:
		return m.bad(parentBlk(), c.what, "points at block 0, the superblock, as a btree node")
	case it.blk >= m.nblocks:
		return m.bad(parentBlk(), c.what, "points at block "+u(it.blk)+", past the end of the metadata ("+u(m.nblocks)+" blocks)")
	}
	for j := 0; j < d; j++ {
		if c.stack[j].blk == it.blk {
			return m.bad(it.blk, c.what, "cycle: the node is its own ancestor")
		}
	}
	if c.reads++; c.reads > m.nblocks {
		return m.bad(it.blk, c.what, "the tree has more nodes than the metadata has blocks")
	}
	if c.reads%64 == 0 {
		if err := c.ctx.Err(); err != nil {
			return err
		}
	}
	if c.bufs == nil {
		c.bufs = alignedBlocks(maxDepth)
	}
	buf := c.bufs[d*BlockSize : (d+1)*BlockSize]
	if b := c.prefetched(it.blk, d, buf); b != nil {
		buf = b
	} else if err := m.read(it.blk, buf, c.what); err != nil {
		return err
	}
	n, why := parseNode(buf, it.blk, c.vsize, it.lo, it.last, d == 0)
	if why != "" {
		return m.bad(it.blk, c.what, why)
	}
	switch {
	case n.leaf && c.leafDepth < 0:
		c.leafDepth = d
	case n.leaf && d != c.leafDepth:
		return m.bad(it.blk, c.what, fmt.Sprintf("leaf at depth %d, but the tree's other leaves are at depth %d", d, c.leafDepth))
	case !n.leaf && c.leafDepth >= 0 && d >= c.leafDepth:
		return m.bad(it.blk, c.what, fmt.Sprintf("internal node at depth %d, where the tree's leaves are at depth %d", d, c.leafDepth))
	}
	if !n.leaf || c.cacheAll {
		// Upper levels are few and shared by walks of several devices;
		// so are the small trees lookups read.
		m.cache.put(it.blk, buf)
	}
	c.stack[d] = frame{blk: it.blk, n: n, lo: it.lo, last: it.last}
	c.depth = d + 1
	c.started = true
	return nil
}

// height is the height of a subtree at depth d above the leaves, if the
// tree's leaf depth is known, else -1.
func (c *cursor) height(d int) int {
	if c.leafDepth < 0 {
		return -1
	}
	return c.leafDepth - d
}

// lookup finds key in the tree at root whose leaf values have vsize bytes
// and returns its value, validating each node on the way. ok is false if
// the key is not there.
func (m *Metadata) lookup(root, key uint64, vsize int, what string) (value []byte, ok bool, err error) {
	c := newCursor(context.Background(), m, root, vsize, math.MaxUint64, what)
	c.cacheAll = true
	if m.lookupBufs == nil {
		m.lookupBufs = alignedBlocks(maxDepth)
	}
	c.bufs = m.lookupBufs // a lookup's result is used before the next one
	it := c.front()
	for it.kind == itemTree {
		if err := c.expand(it); err != nil {
			return nil, false, err
		}
		f := &c.stack[c.depth-1]
		// The last entry whose key is <= key: its subtree holds key,
		// if anything does.
		lo, hi := 0, f.n.n
		for lo < hi {
			mid := int(uint(lo+hi) / 2)
			if f.n.key(mid) <= key {
				lo = mid + 1
			} else {
				hi = mid
			}
		}
		if lo == 0 {
			return nil, false, nil
		}
		f.i = lo - 1
		if f.n.leaf {
			if f.n.key(f.i) != key {
				return nil, false, nil
			}
			return f.n.value(f.i), true, nil
		}
		it = c.front()
	}
	return nil, false, nil
}

// DeviceRoot returns the root block of a thin device's mapping tree.
func (m *Metadata) DeviceRoot(dev uint64) (uint64, error) {
	v, ok, err := m.lookup(m.sb.MappingRoot, dev, blockValueSize, "top-level mapping tree")
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("thin pool metadata %s: no mapping tree for thin device %d: %w", m.path, dev, ErrNoDevice)
	}
	root := leUint64(v)
	return root, nil
}

// Device returns a thin device's details.
func (m *Metadata) Device(dev uint64) (DeviceDetails, error) {
	v, ok, err := m.lookup(m.sb.DetailsRoot, dev, detailsValueSize, "device details tree")
	if err != nil {
		return DeviceDetails{}, err
	}
	if !ok {
		return DeviceDetails{}, fmt.Errorf("thin pool metadata %s: thin device %d: %w", m.path, dev, ErrNoDevice)
	}
	return parseDetails(dev, v), nil
}

// Devices calls fn with the details of every thin device, in id order.
func (m *Metadata) Devices(ctx context.Context, fn func(DeviceDetails) error) error {
	c := newCursor(ctx, m, m.sb.DetailsRoot, detailsValueSize, math.MaxUint64, "device details tree")
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
			if err := fn(parseDetails(it.lo, f.n.value(f.i))); err != nil {
				return err
			}
			c.advance()
		}
	}
}

func leUint64(b []byte) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}
