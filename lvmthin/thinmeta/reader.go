package thinmeta

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

// Options say which view of the metadata Open reads.
type Options struct {
	// Snapshot reads the pool's held metadata snapshot: the superblock
	// copy at the live superblock's held_root, and the trees it names.
	// That is the only consistent view of an active pool's metadata; the
	// live trees change under the reader.
	Snapshot bool
	// HeldRoot, if not 0, is the held root of the snapshot the caller
	// reserved (the pool's status reports it); a superblock holding
	// another is ErrNoSnapshot, so a reader never reads someone else's.
	HeldRoot uint64
	// ReadAhead is the most metadata reads a walk (Diff, MappedRanges,
	// Mappings) keeps in flight: 0 is DefaultReadAhead, 1 reads one
	// block, or one run of consecutive blocks, at a time; less than 0
	// reads no node ahead, each only when the walk comes to it. Nodes
	// read ahead wait in a buffer per tree level of at most 4 MiB.
	ReadAhead int
}

// Metadata is an open thin pool metadata device or file. It reads blocks
// on demand and keeps only the blocks on the current paths of the trees it
// walks plus a small cache, so its memory does not grow with the pool. It
// is not safe for concurrent use.
type Metadata struct {
	r          io.ReaderAt
	f          *os.File // nil when reading from a ReaderAt
	path       string
	nblocks    uint64
	sb         Superblock // whose trees are read
	live       Superblock // block 0
	cache      blockCache
	stats      Stats
	scratch    []byte // one aligned block for superblocks
	lookupBufs []byte // the path of a lookup
	readAhead  int    // reads in flight; 0: no read-ahead
}

// Stats count a reader's metadata reads.
type Stats struct {
	BlocksRead int64 // blocks read from the device or file
	BytesRead  int64 // bytes read from the device or file
	CacheHits  int64 // blocks found in the cache instead
}

// Open opens the metadata read-only and reads its superblock, and with
// opts.Snapshot the metadata snapshot's copy. On a block device it reads
// with O_DIRECT, as the thin tools do: the kernel writes metadata through
// its own buffer cache, so the page cache of the device can be stale. A
// file is read normally.
func Open(path string, opts Options) (*Metadata, error) {
	f, err := openRead(path)
	if err != nil {
		return nil, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("thin pool metadata %s: size: %w", path, err)
	}
	m, err := newMetadata(f, f, size, path, opts)
	if err != nil {
		f.Close()
		return nil, err
	}
	return m, nil
}

// isDevice reports whether the metadata is a block device: the live
// superblock of an active pool's device can be read while the kernel
// rewrites it.
func (m *Metadata) isDevice() bool {
	if m.f == nil {
		return false
	}
	fi, err := m.f.Stat()
	return err == nil && fi.Mode()&os.ModeDevice != 0
}

// NewReader reads metadata of size bytes from r (an image in memory, a
// part of a file); name names it in errors. Close does not close r.
func NewReader(r io.ReaderAt, size int64, name string, opts Options) (*Metadata, error) {
	return newMetadata(r, nil, size, name, opts)
}

func newMetadata(r io.ReaderAt, f *os.File, size int64, path string, opts Options) (_ *Metadata, err error) {
	m := &Metadata{r: r, f: f, path: path, readAhead: opts.ReadAhead}
	switch {
	case m.readAhead == 0:
		m.readAhead = DefaultReadAhead
	case m.readAhead < 0:
		m.readAhead = 0
	}
	if size < 0 {
		size = 0
	}
	m.nblocks = uint64(size) / BlockSize
	m.cache.init()
	m.scratch = alignedBlocks(1)
	if m.nblocks == 0 {
		return nil, m.bad(0, "superblock", "the metadata is "+strconv.FormatInt(size, 10)+" bytes long, less than a block")
	}
	if m.live, err = m.readSuperblock(0); err != nil {
		return nil, err
	}
	m.sb = m.live
	if !opts.Snapshot {
		return m, nil
	}
	held := m.live.HeldRoot
	switch {
	case held == 0:
		return nil, fmt.Errorf("thin pool metadata %s: %w", path, ErrNoSnapshot)
	case opts.HeldRoot != 0 && held != opts.HeldRoot:
		return nil, fmt.Errorf("thin pool metadata %s holds the metadata snapshot at block %d, not the one reserved at block %d: %w",
			path, held, opts.HeldRoot, ErrNoSnapshot)
	case held >= m.nblocks:
		return nil, m.bad(0, "superblock", "held root "+strconv.FormatUint(held, 10)+" is past the end of the metadata ("+
			strconv.FormatUint(m.nblocks, 10)+" blocks)")
	}
	if m.sb, err = m.readSuperblock(held); err != nil {
		return nil, err
	}
	if m.sb.DataBlockSectors != m.live.DataBlockSectors {
		return nil, m.bad(held, "metadata snapshot's superblock", "data block size "+
			strconv.FormatUint(uint64(m.sb.DataBlockSectors), 10)+" sectors, the pool's is "+
			strconv.FormatUint(uint64(m.live.DataBlockSectors), 10))
	}
	return m, nil
}

func openRead(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("thin pool metadata: %w", err)
	}
	if fi.Mode()&os.ModeDevice == 0 {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("thin pool metadata: %w", err)
		}
		return f, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		// A device that refuses O_DIRECT: read it buffered, after
		// dropping its cached pages (never the whole system's).
		if f, err = os.Open(path); err == nil {
			if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, 4 /* POSIX_FADV_DONTNEED */, 0, 0); errno != 0 {
				f.Close()
				return nil, fmt.Errorf("thin pool metadata %s: drop cached pages: %w", path, errno)
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("thin pool metadata: %w", err)
	}
	return f, nil
}

// Close closes the device or file.
func (m *Metadata) Close() error {
	if m.f == nil {
		return nil
	}
	return m.f.Close()
}

// Path returns the path the metadata was opened from.
func (m *Metadata) Path() string { return m.path }

// Superblock returns the superblock whose trees the reader reads: the
// metadata snapshot's copy with Options.Snapshot, else block 0.
func (m *Metadata) Superblock() Superblock { return m.sb }

// LiveSuperblock returns block 0's superblock.
func (m *Metadata) LiveSuperblock() Superblock { return m.live }

// Blocks returns the size of the metadata in blocks.
func (m *Metadata) Blocks() uint64 { return m.nblocks }

// Stats returns what the reader has read so far.
func (m *Metadata) Stats() Stats { return m.stats }

// bad makes the error for block blk of structure what.
func (m *Metadata) bad(blk uint64, what, why string) error {
	return &MetadataError{Path: m.path, Block: blk, What: what, Err: why}
}

// readSuperblock reads and validates the superblock at loc. The live
// superblock of an active pool is rewritten at every commit, so a read
// that fails validation is retried a few times before it counts.
func (m *Metadata) readSuperblock(loc uint64) (Superblock, error) {
	what := "superblock"
	if loc != 0 {
		what = "metadata snapshot's superblock"
	}
	var why string
	var sb Superblock
	for try := 0; try < 3; try++ {
		if try > 0 {
			time.Sleep(10 * time.Millisecond)
		}
		if err := m.readDevice(loc, m.scratch, what); err != nil {
			return Superblock{}, err
		}
		if sb, why = parseSuperblock(m.scratch, loc, m.nblocks); why == "" {
			return sb, nil
		}
		if loc != 0 || !m.isDevice() {
			break // a held copy, or a file, does not change
		}
	}
	return Superblock{}, m.bad(loc, what, why)
}

// read fills dst (one block, aligned) with block blk, from the cache if
// it is there.
func (m *Metadata) read(blk uint64, dst []byte, what string) error {
	if m.cache.get(blk, dst) {
		m.stats.CacheHits++
		return nil
	}
	return m.readDevice(blk, dst, what)
}

func (m *Metadata) readDevice(blk uint64, dst []byte, what string) error {
	if blk >= m.nblocks {
		return m.bad(blk, what, "past the end of the metadata ("+strconv.FormatUint(m.nblocks, 10)+" blocks)")
	}
	n, err := m.r.ReadAt(dst[:BlockSize], int64(blk)*BlockSize)
	m.stats.BlocksRead++
	m.stats.BytesRead += int64(n)
	if n == BlockSize {
		return nil
	}
	if err == nil || err == io.EOF {
		return m.bad(blk, what, "the metadata ends inside the block (it shrank while being read?)")
	}
	return fmt.Errorf("thin pool metadata %s: read block %d (%s): %w", m.path, blk, what, err)
}

// alignedBlocks returns n blocks of memory aligned for O_DIRECT (Go's heap
// does not move objects, so the alignment holds).
func alignedBlocks(n int) []byte {
	b := make([]byte, n*BlockSize+BlockSize)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % BlockSize); r != 0 {
		skip = BlockSize - r
	}
	return b[skip : skip+n*BlockSize : skip+n*BlockSize]
}

// cacheBlocks is the size of the block cache. It holds the nodes above
// the leaves, which lookups and walks of several devices share (the
// top-level and details trees, the upper levels of the mapping trees): a
// few dozen blocks even for a pool of many terabytes.
const cacheBlocks = 64

// blockCache is a small cache of validated blocks with CLOCK eviction.
type blockCache struct {
	mem   []byte
	blk   [cacheBlocks]uint64
	valid [cacheBlocks]bool
	ref   [cacheBlocks]bool
	index map[uint64]int
	hand  int
}

func (c *blockCache) init() {
	c.index = make(map[uint64]int, cacheBlocks)
}

func (c *blockCache) slot(i int) []byte { return c.mem[i*BlockSize : (i+1)*BlockSize] }

func (c *blockCache) get(blk uint64, dst []byte) bool {
	i, ok := c.index[blk]
	if !ok {
		return false
	}
	c.ref[i] = true
	copy(dst[:BlockSize], c.slot(i))
	return true
}

func (c *blockCache) put(blk uint64, b []byte) {
	if _, ok := c.index[blk]; ok {
		return
	}
	if c.mem == nil {
		c.mem = make([]byte, cacheBlocks*BlockSize)
	}
	for c.valid[c.hand] && c.ref[c.hand] {
		c.ref[c.hand] = false
		c.hand = (c.hand + 1) % cacheBlocks
	}
	i := c.hand
	c.hand = (c.hand + 1) % cacheBlocks
	if c.valid[i] {
		delete(c.index, c.blk[i])
	}
	copy(c.slot(i), b[:BlockSize])
	c.blk[i], c.valid[i], c.ref[i] = blk, true, false
	c.index[blk] = i
}
