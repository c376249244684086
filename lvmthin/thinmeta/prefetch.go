package thinmeta

import (
	"slices"
	"sync"
)

// A walk that reads nodes one 4 KiB read at a time waits for each: on a
// real device, or through O_DIRECT, the latency of every read adds up,
// where the thin tools keep many reads in flight. So when a cursor must
// read a node below the root, it reads with it the other children of the
// same parent it is going to need: all of them in a full walk; in a diff,
// those the other tree's node at the same place does not share (the
// shared ones are skipped unread). Runs of consecutive blocks are read
// with one call, and the runs concurrently. Each level has its buffer, so
// memory is a node's worth of children per level of the tree.
const (
	// maxPrefetch is the most entries a node can have (8-byte values).
	maxPrefetch = (BlockSize - nodeHeaderSize) / 16
	// prefetchReaders bounds the reads in flight.
	prefetchReaders = 8
)

type prefetch struct {
	mem  []byte   // maxPrefetch blocks, aligned
	blks []uint64 // the blocks in mem, in order, sorted
	have []bool   // whether each was read
	tmp  []uint64
	skip []uint64
}

func newPrefetch() *prefetch {
	return &prefetch{mem: alignedBlocks(maxPrefetch)}
}

// prefetched returns block blk, a child at depth d (1 or more, once the
// tree's leaf depth is known, so that the children's level is), from the
// level's prefetch buffer, filling it first from the parent's remaining
// children on a miss; nil if it is not there (then the caller reads it
// itself). buf is the level's own buffer: a node above the leaves is
// copied there, because a frame on the cursor's path must outlive the
// level's next fill; a leaf is used in place (the next fill of its level
// comes when the cursor has left it).
func (c *cursor) prefetched(blk uint64, d int, buf []byte) []byte {
	if !c.readAhead || d == 0 || c.leafDepth < d {
		return nil
	}
	pf := c.pfs[d]
	if pf == nil {
		pf = newPrefetch()
		c.pfs[d] = pf
	}
	if b := pf.get(blk); b != nil {
		return c.place(b, d, buf)
	}
	parent := &c.stack[d-1]
	var skip []uint64 // children of the other tree's node at the same place
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
		skip = pf.skip[:0]
		for i := 0; i < of.n.n; i++ {
			skip = append(skip, of.n.value64(i))
		}
		slices.Sort(skip)
		pf.skip = skip
		if _, shared := slices.BinarySearch(skip, blk); shared {
			// A shared node the diff reads anyway (Same ranges
			// wanted): read it alone, and keep the buffer for the
			// unshared ones it holds.
			return nil
		}
	}
	want := pf.tmp[:0]
	for i := parent.i; i < parent.n.n && len(want) < maxPrefetch; i++ {
		b := parent.n.value64(i)
		if b == 0 || b >= c.m.nblocks {
			continue // the normal path reports it
		}
		if _, shared := slices.BinarySearch(skip, b); !shared || b == blk {
			want = append(want, b)
		}
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

// fill reads blocks (at most maxPrefetch) into the buffer. A block that
// fails to read is left out: the walk's own read then says why.
func (pf *prefetch) fill(m *Metadata, blocks []uint64) {
	pf.blks = append(pf.blks[:0], blocks...)
	slices.Sort(pf.blks)
	pf.blks = slices.Compact(pf.blks)
	pf.have = append(pf.have[:0], make([]bool, len(pf.blks))...)
	type run struct{ first, n int }
	var runs []run
	for i := 0; i < len(pf.blks); {
		j := i + 1
		for j < len(pf.blks) && pf.blks[j] == pf.blks[j-1]+1 {
			j++
		}
		runs = append(runs, run{i, j - i})
		i = j
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var read int64
	next := make(chan run)
	for w := 0; w < min(prefetchReaders, len(runs)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range next {
				buf := pf.mem[r.first*BlockSize : (r.first+r.n)*BlockSize]
				n, _ := m.r.ReadAt(buf, int64(pf.blks[r.first])*BlockSize)
				full := n / BlockSize
				for k := 0; k < full; k++ {
					pf.have[r.first+k] = true
				}
				mu.Lock()
				read += int64(n)
				mu.Unlock()
			}
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
