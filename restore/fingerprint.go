package restore

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"io"
	"sort"

	"github.com/thinback/thinback/archive"
	"github.com/zeebo/blake3"
)

// A fingerprint is what a target held after the apply that left it at its
// snapshot: its size and the digests of a few dozen of its blocks. It is
// how a block device, which keeps no modification time, is checked; a
// regular file is checked exactly by its FileStat, and by its fingerprint
// only when its state was recorded without one. Before
// an incremental is applied on top, the blocks are read and hashed again; a
// difference means that the target was written to since (mounted, or
// overwritten by something else) and no longer holds the snapshot, so only
// a full can be applied to it. It costs a few dozen 4 KiB reads per apply.
//
// The blocks are chosen from what the apply wrote, with data preferred to
// zeroes (a replaced or reformatted device reads as zeroes more often than
// not), deterministically: each written block's priority is a hash of its
// number seeded by the snapshot's ID, and the blocks of lowest priority are
// kept (a bottom-k sample, whatever the order of the writes). The first
// block, the block at 64 KiB and the last block are always among them:
// that is where filesystems, partition tables and volume labels keep their
// superblocks and headers, which mounting a filesystem rewrites. The blocks
// of the previous fingerprint that the apply did not displace come next,
// so that an incremental that wrote little still leaves a full set.

// Fingerprint is a target's size and the digests of some of its blocks
// after an apply.
type Fingerprint struct {
	Size      int64
	BlockSize int64
	Samples   []Sample
}

// Sample is the BLAKE3-256 digest of the block at Offset (a short last
// block is hashed as it is).
type Sample struct {
	Offset int64
	Digest archive.Digest
}

const (
	fingerprintBlock   = 4096
	fingerprintSamples = 32
	// Offsets always sampled; the last block is added per target.
	superblockOffset = 64 << 10
)

var zeroBlockDigest = archive.Digest(blake3.Sum256(make([]byte, fingerprintBlock)))

// sampler follows an apply's writes and keeps the candidates for its
// fingerprint.
type sampler struct {
	seed       uint64
	data, zero bottomK
}

func newSampler(seed uint64) *sampler {
	return &sampler{seed: seed, data: newBottomK(fingerprintSamples), zero: newBottomK(fingerprintSamples)}
}

// mix is SplitMix64's finaliser: a cheap, well-spread hash of a block
// number.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// wrote records that [off, off+n) was written with data, or zeroed. Data
// blocks are all candidates; of a zeroed range (which can be the whole
// volume) only its first and last blocks are, which is enough for a
// fallback.
func (s *sampler) wrote(off, n int64, zero bool) {
	if n <= 0 {
		return
	}
	first, last := off/fingerprintBlock, (off+n-1)/fingerprintBlock
	if zero {
		s.zero.add(mix(s.seed^uint64(first)), first*fingerprintBlock)
		s.zero.add(mix(s.seed^uint64(last)), last*fingerprintBlock)
		return
	}
	for b := first; b <= last; b++ {
		s.data.add(mix(s.seed^uint64(b)), b*fingerprintBlock)
	}
}

// offsets returns the blocks to fingerprint a target of size bytes with,
// in order of preference, at most fingerprintSamples of them.
func (s *sampler) offsets(size int64, prior *Fingerprint) []int64 {
	var out []int64
	seen := map[int64]bool{}
	add := func(off int64) {
		if off >= 0 && off < size && !seen[off] && len(out) < fingerprintSamples {
			seen[off] = true
			out = append(out, off)
		}
	}
	add(0)
	add(superblockOffset)
	if size > 0 {
		add((size - 1) / fingerprintBlock * fingerprintBlock)
	}
	for _, off := range s.data.sorted() {
		add(off)
	}
	if prior != nil && prior.BlockSize == fingerprintBlock {
		for _, zero := range []bool{false, true} {
			for _, p := range prior.Samples {
				if (p.Digest == zeroBlockDigest) == zero {
					add(p.Offset)
				}
			}
		}
	}
	for _, off := range s.zero.sorted() {
		add(off)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// fingerprint reads and hashes the blocks at offsets.
func (t *Target) fingerprint(offsets []int64) (*Fingerprint, error) {
	fp := &Fingerprint{Size: t.size, BlockSize: fingerprintBlock}
	buf := make([]byte, fingerprintBlock)
	for _, off := range offsets {
		d, err := t.blockDigest(buf, off)
		if err != nil {
			return nil, err
		}
		fp.Samples = append(fp.Samples, Sample{Offset: off, Digest: d})
	}
	return fp, nil
}

func (t *Target) blockDigest(buf []byte, off int64) (archive.Digest, error) {
	b := buf[:min(int64(len(buf)), t.size-off)]
	if n, err := t.f.ReadAt(b, off); n != len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return archive.Digest{}, fmt.Errorf("target %s: reading %d bytes at offset %d: %w", t.Path, len(b), off, err)
	}
	return archive.Digest(blake3.Sum256(b)), nil
}

// Verify checks that the target still holds what st says the last apply
// left on it. A regular file must have the same size, modification time,
// status-change time, device and inode as the apply left (st.FileStat):
// that is exact. A block device, and a regular file whose record predates
// FileStat, must have the same digests of the sampled blocks (see
// Fingerprint): that sees only what changed in those blocks. When the
// target differs, Verify returns st with Modified saying how; a file that
// OpenTarget created holds nothing, whatever st says. There is nothing to
// check (st is returned as it is) when st holds neither (an older state
// file), when an apply is in progress (the target is partly written, and
// the mark says so), or when Modified is set already.
func (t *Target) Verify(st State) (State, error) {
	if t.created && st.Modified == "" && (!st.Snapshot.ID.IsZero() || st.InProgress != nil) {
		// Whatever the record says (a file of the same inode number once
		// had it), a file this run created holds nothing.
		st.Modified = "it did not exist: this run created it"
		return st, nil
	}
	if st.Modified != "" || st.InProgress != nil || st.Snapshot.ID.IsZero() {
		return st, nil
	}
	if !t.block && st.FileStat != nil {
		now, err := t.fileStat()
		if err != nil {
			return st, err
		}
		st.Modified = now.changed(*st.FileStat)
		return st, nil
	}
	fp := st.Fingerprint
	if fp == nil {
		return st, nil
	}
	switch {
	case !t.block && t.size != fp.Size:
		st.Modified = fmt.Sprintf("its size changed from %d to %d bytes", fp.Size, t.size)
		return st, nil
	case t.size < fp.Size:
		st.Modified = fmt.Sprintf("it is %d bytes now, %d bytes were written", t.size, fp.Size)
		return st, nil
	}
	if fp.BlockSize < 512 || fp.BlockSize > 1<<20 {
		return st, nil // not ours to read; catalog validation refuses it
	}
	buf := make([]byte, fp.BlockSize)
	differ, first := 0, int64(-1)
	for _, s := range fp.Samples {
		if s.Offset < 0 || s.Offset >= t.size {
			continue
		}
		d, err := t.blockDigest(buf, s.Offset)
		if err != nil {
			return st, err
		}
		if d != s.Digest {
			if differ == 0 {
				first = s.Offset
			}
			differ++
		}
	}
	switch {
	case differ == 1:
		st.Modified = fmt.Sprintf("one of the %d blocks sampled after the last apply differs, at byte %d", len(fp.Samples), first)
	case differ > 1:
		st.Modified = fmt.Sprintf("%d of the %d blocks sampled after the last apply differ, the first at byte %d", differ, len(fp.Samples), first)
	}
	return st, nil
}

// bottomK keeps the k offsets of lowest priority.
type bottomK struct {
	k   int
	h   prioHeap
	has map[int64]bool
}

func newBottomK(k int) bottomK { return bottomK{k: k, has: map[int64]bool{}} }

func (b *bottomK) add(prio uint64, off int64) {
	// The priority first: it turns away nearly every block, cheaply.
	if (len(b.h) == b.k && prio >= b.h[0].prio) || b.has[off] {
		return
	}
	heap.Push(&b.h, prioOff{prio, off})
	b.has[off] = true
	if len(b.h) > b.k {
		delete(b.has, heap.Pop(&b.h).(prioOff).off)
	}
}

// sorted returns the offsets, lowest priority first.
func (b *bottomK) sorted() []int64 {
	h := append(prioHeap(nil), b.h...)
	sort.Slice(h, func(i, j int) bool { return h[i].prio < h[j].prio })
	out := make([]int64, len(h))
	for i, p := range h {
		out[i] = p.off
	}
	return out
}

type prioOff struct {
	prio uint64
	off  int64
}

// prioHeap is a max-heap on prio: the root is the first to go.
type prioHeap []prioOff

func (h prioHeap) Len() int           { return len(h) }
func (h prioHeap) Less(i, j int) bool { return h[i].prio > h[j].prio }
func (h prioHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *prioHeap) Push(x any)        { *h = append(*h, x.(prioOff)) }
func (h *prioHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func seedOf(id archive.ID) uint64 { return binary.LittleEndian.Uint64(id[:8]) }
