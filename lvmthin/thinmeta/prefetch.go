package thinmeta

import (
	"slices"
	"sync"
)

// A walk that reads nodes one 4 KiB read at a time waits for each: on a
// real device, or through O_DIRECT, the latency of every read adds up,
// and an SSD or a RAID gives its bandwidth only to a deep queue. So when a
// cursor must read a node below the root, it reads with it the nodes it
// is going to read next at that level, many reads in flight at once
// (Options.ReadAhead): the remaining children of the node's parent, and
// then those of the parent's following siblings that the level above has
// already read ahead, so that a batch spans many parents. In a full walk
// that is all of them. In a diff it is those the other tree does not
// share: the children of the other cursor's node at the parent's place
// and of the nodes the other cursor has read ahead after it are skipped,
// as the diff passes over them unread; a child beyond what the other side
// has read ahead is left for a later batch, when the other side can tell.
//
// The batch is read into the level's buffer and consumed in order by the
// walk, which validates each node as it takes it, exactly as one it reads
// itself: the read-ahead only changes where the bytes come from, never the
// order of the walk, what it checks or the errors it reports. A block
// that fails to read ahead is left out, and the walk's own read of it then
// says why. Runs of consecutive blocks are read with one call (split into
// pieces of at most readRun blocks, so that a long run is read by several
// readers), the pieces concurrently. Each level has its own buffer of at
// most maxBatch blocks, so memory is bounded by the tree's depth, not by
// its size: 4 MiB for the leaves' level, a few blocks for the levels
// above (a level holds only as many nodes as it has).
const (
	// DefaultReadAhead is the reads a walk keeps in flight when
	// Options.ReadAhead is 0.
	DefaultReadAhead = 32
	// maxBatch bounds the blocks of one level's batch.
	maxBatch = 1024
	// readRun is the most blocks one read of a run reads.
	readRun = 16
)

type prefetch struct {
	mem   []byte   // len(blks) blocks or more, aligned
	blks  []uint64 // the blocks in mem, in order, sorted
	have  []bool   // whether each was read
	tmp   []uint64
	other []child
}

// child is an entry of an internal node: a subtree's lowest key and block.
type child struct{ key, blk uint64 }

// maxOther bounds the other tree's children a diff's batch is checked
// against (1 MiB).
const maxOther = 64 * maxBatch

// sharedChild reports whether the child at key k, block blk, is among
// children, which are in key order.
func sharedChild(children []child, k, blk uint64) bool {
	i, ok := slices.BinarySearchFunc(children, k, func(c child, k uint64) int {
		switch {
		case c.key < k:
			return -1
		case c.key > k:
			return 1
		}
		return 0
	})
	return ok && children[i].blk == blk
}

// nextParents calls fn with the nodes at depth pd that the cursor walks
// next, in order, and the entry to start from: the node on its path from
// its current entry, then its following siblings found in the read-ahead
// buffer of depth pd (siblings that are not there are passed over: in a
// diff they are the shared ones, in a full walk past the batch). It stops
// when fn returns false. A sibling that does not parse is passed over: the
// walk reports it when it comes to it.
func (c *cursor) nextParents(pd int, fn func(n *node, from int, last uint64) bool) {
	f := &c.stack[pd]
	if !fn(&f.n, f.i, f.last) || pd == 0 || c.pfs[pd] == nil {
		return
	}
	gp := &c.stack[pd-1]
	pf := c.pfs[pd]
	for k := gp.i + 1; k < gp.n.n; k++ {
		blk := gp.n.value64(k)
		b := pf.get(blk)
		if b == nil {
			continue
		}
		lo, last := gp.n.key(k), gp.last
		if k+1 < gp.n.n {
			last = gp.n.key(k+1) - 1
		}
		n, why := parseNode(b, blk, c.vsize, lo, last, false)
		if why != "" || n.leaf {
			continue
		}
		if !fn(&n, 0, last) {
			return
		}
	}
}

// prefetched returns block blk, a child at depth d (1 or more, once the
// tree's leaf depth is known, so that the children's level is), from the
// level's read-ahead buffer, filling it first with the next batch on a
// miss; nil if it is not there (then the caller reads it itself). buf is
// the level's own buffer: a node above the leaves is copied there,
// because a frame on the cursor's path must outlive the level's next
// fill; a leaf is used in place (the next fill of its level comes when
// the cursor has left it).
func (c *cursor) prefetched(blk uint64, d int, buf []byte) []byte {
	if !c.readAhead || d == 0 || c.leafDepth < d {
		return nil
	}
	pf := c.pfs[d]
	if pf == nil {
		pf = &prefetch{}
		c.pfs[d] = pf
	}
	if b := pf.get(blk); b != nil {
		return c.place(b, d, buf)
	}
	parent := &c.stack[d-1]
	// The other tree's children at the same place, in key order: a
	// child the two share is the same block at the same key in both (a
	// change to a node's lowest key copies the node).
	var other []child
	covered := uint64(0)
	if o := c.other; o != nil {
		// The other cursor's node at the parent's height, if it is on
		// its path and covers some of the parent's keys.
		od := o.leafDepth - (c.leafDepth - (d - 1))
		if o.leafDepth < 0 || od < 0 || od >= o.depth {
			// Nothing to tell which children are shared: reading ahead
			// could read what the diff skips.
			return nil
		}
		of := &o.stack[od]
		if of.n.leaf || of.last < parent.lo || parent.last < of.lo {
			return nil
		}
		other = pf.other[:0]
		o.nextParents(od, func(n *node, _ int, last uint64) bool {
			if len(other)+n.n > maxOther {
				return false
			}
			for i := 0; i < n.n; i++ {
				other = append(other, child{n.key(i), n.value64(i)})
			}
			covered = last
			return true
		})
		pf.other = other
		if sharedChild(other, parent.n.key(parent.i), blk) {
			// A shared node the diff reads anyway (Same ranges
			// wanted): read it alone, and keep the buffer for the
			// unshared ones it holds.
			return nil
		}
	}
	want := pf.tmp[:0]
	j := 0 // other[j:] are the other's children at or after the key
	c.nextParents(d-1, func(n *node, from int, _ uint64) bool {
		for i := from; i < n.n && len(want) < maxBatch; i++ {
			k := n.key(i)
			if k > c.limit || (c.other != nil && k > covered) {
				return false // not wanted, or not known to be unshared yet
			}
			b := n.value64(i)
			if b == 0 || b >= c.m.nblocks {
				continue // the normal path reports it
			}
			for j < len(other) && other[j].key < k {
				j++
			}
			if b == blk || j == len(other) || other[j].key != k || other[j].blk != b {
				want = append(want, b)
			}
		}
		return len(want) < maxBatch
	})
	if len(want) == 0 || !slices.Contains(want, blk) {
		want = append(want, blk)
	}
	pf.tmp = want
	pf.fill(c.m, want)
	if b := pf.get(blk); b != nil {
		return c.place(b, d, buf)
	}
	return nil
}

func (c *cursor) place(b []byte, d int, buf []byte) []byte {
	if d < c.leafDepth {
		copy(buf, b)
		return buf
	}
	return b
}

func (pf *prefetch) get(blk uint64) []byte {
	i, ok := slices.BinarySearch(pf.blks, blk)
	if !ok || !pf.have[i] {
		return nil
	}
	return pf.mem[i*BlockSize : (i+1)*BlockSize]
}

// fill reads blocks (at most maxBatch, and a few more) into the buffer,
// up to m.readAhead reads in flight. A block that fails to read is left
// out: the walk's own read then says why.
func (pf *prefetch) fill(m *Metadata, blocks []uint64) {
	pf.blks = append(pf.blks[:0], blocks...)
	slices.Sort(pf.blks)
	pf.blks = slices.Compact(pf.blks)
	if len(pf.mem) < len(pf.blks)*BlockSize {
		pf.mem = alignedBlocks(min(max(len(pf.blks), 2*len(pf.mem)/BlockSize), maxBatch+2))
		if len(pf.mem) < len(pf.blks)*BlockSize {
			pf.mem = alignedBlocks(len(pf.blks))
		}
	}
	pf.have = append(pf.have[:0], make([]bool, len(pf.blks))...)
	type run struct{ first, n int }
	var runs []run
	for i := 0; i < len(pf.blks); {
		j := i + 1
		for j < len(pf.blks) && j-i < readRun && pf.blks[j] == pf.blks[j-1]+1 {
			j++
		}
		runs = append(runs, run{i, j - i})
		i = j
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var read int64
	next := make(chan run)
	for w := 0; w < min(m.readAhead, len(runs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var got int64
			for r := range next {
				buf := pf.mem[r.first*BlockSize : (r.first+r.n)*BlockSize]
				n, _ := m.r.ReadAt(buf, int64(pf.blks[r.first])*BlockSize)
				full := n / BlockSize
				for k := 0; k < full; k++ {
					pf.have[r.first+k] = true
				}
				got += int64(n)
			}
			mu.Lock()
			read += got
			mu.Unlock()
		}()
	}
	for _, r := range runs {
		next <- r
	}
	close(next)
	wg.Wait()
	m.stats.BytesRead += read
	m.stats.BlocksRead += read / BlockSize
}
