package thinmeta

import (
	"encoding/binary"
	"hash/crc32"
	"strconv"
)

// The on-disk format, as the kernel's dm-thin-metadata.c and
// persistent-data/ write it. Every number is little-endian. The metadata is
// an array of 4096-byte blocks; block 0 is the superblock.
//
// Every block starts with a checksum of its other 4092 bytes: the kernel's
// dm_bm_checksum, crc32c seeded with ~0 and not inverted at the end, xored
// with a constant that says what the block is, so a block of one kind never
// validates as another:
//
//	csum = CRC-32C(block[4:4096]) ^ 0xffffffff ^ salt
//
// (CRC-32C here is the standard one, with its final inversion, which the
// extra 0xffffffff undoes.)
const (
	// BlockSize is the size of a metadata block.
	BlockSize = 4096

	superblockSalt = 160774 // SUPERBLOCK_CSUM_XOR, dm-thin-metadata.c
	nodeSalt       = 121107 // BTREE_CSUM_XOR, dm-btree-spine.c
	indexSalt      = 160478 // INDEX_CSUM_XOR, dm-space-map-metadata.c
	bitmapSalt     = 240779 // BITMAP_CSUM_XOR, dm-space-map-common.c
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// blockChecksum is what the kernel stores in a block's first 4 bytes for
// salt 0; a block's salt is this xored with what it stores.
func blockChecksum(b []byte) uint32 {
	return crc32.Checksum(b[4:BlockSize], castagnoli) ^ 0xffffffff
}

// saltName names the kind of block a checksum salt belongs to, for errors
// about a block read as the wrong kind.
func saltName(salt uint32) string {
	switch salt {
	case superblockSalt:
		return "a superblock"
	case nodeSalt:
		return "a btree node"
	case indexSalt:
		return "a space map index"
	case bitmapSalt:
		return "a space map bitmap"
	}
	return ""
}

// checkSalt checks a block's checksum against the salt of the kind it is
// read as, and says what it is instead if it is a block of another kind.
func checkSalt(b []byte, want uint32) string {
	salt := binary.LittleEndian.Uint32(b[0:4]) ^ blockChecksum(b)
	if salt == want {
		return ""
	}
	if name := saltName(salt); name != "" {
		return "checksum is that of " + name + ", not of " + saltName(want)
	}
	return "bad checksum"
}

// Superblock layout (struct thin_disk_superblock).
const (
	sbFlags          = 4   // u32; bit 0: needs_check
	sbBlocknr        = 8   // u64: where the superblock is
	sbMagic          = 32  // u64
	sbVersion        = 40  // u32
	sbTime           = 44  // u32: the snapshot clock
	sbTransaction    = 48  // u64: LVM's transaction id
	sbHeldRoot       = 56  // u64: the metadata snapshot's superblock copy, 0 = none
	sbDataSpaceMap   = 64  // 128 bytes; nr_blocks is its first u64
	sbMappingRoot    = 320 // u64: the top-level mapping tree
	sbDetailsRoot    = 328 // u64: the device details tree
	sbDataBlockSize  = 336 // u32, in 512-byte sectors
	sbMetaBlockSize  = 340 // u32, in sectors: always 8
	sbMetaBlocks     = 344 // u64
	sbCompatFlags    = 352 // u32
	sbCompatROFlags  = 356 // u32
	sbIncompatFlags  = 360 // u32
	superblockMagic  = 27022010
	needsCheckFlag   = 1
	minDataBlockSize = 128     // sectors (64 KiB): DATA_DEV_BLOCK_SIZE_MIN_SECTORS
	maxDataBlockSize = 2097152 // sectors (1 GiB): DATA_DEV_BLOCK_SIZE_MAX_SECTORS
)

// Superblock is what thinmeta uses of a pool's superblock, or of the copy
// a metadata snapshot keeps.
type Superblock struct {
	Block         uint64 // where it was read: 0, or the held root
	NeedsCheck    bool   // the kernel found a problem and wants thin_check run
	Version       uint32
	Time          uint32 // the pool's snapshot clock
	TransactionID uint64
	// HeldRoot is the block of the metadata snapshot's superblock copy,
	// 0 if none is held (always 0 in the copy itself).
	HeldRoot uint64
	// DataBlocks is the number of data blocks in the pool; a metadata
	// snapshot's copy does not keep it (0).
	DataBlocks        uint64
	MappingRoot       uint64 // the top-level mapping tree: thin device id -> its mapping tree
	DetailsRoot       uint64 // the device details tree: thin device id -> DeviceDetails
	DataBlockSectors  uint32 // the data block size in 512-byte sectors
	MetadataBlocks    uint64 // the metadata size in blocks, as formatted
	CompatFlags       uint32
	CompatROFlags     uint32
	IncompatFlags     uint32
	metadataBlockSize uint32
}

// parseSuperblock validates block b, read at location loc, as the kernel's
// sb_check and __check_incompat_features do (location, magic, checksum, no
// incompatible features), and what thinmeta relies on besides: a version
// the kernel writes, the metadata block size, a data block size the
// kernel accepts, and tree roots inside the metadata (nblocks blocks). It
// returns what is wrong, or "".
func parseSuperblock(b []byte, loc, nblocks uint64) (Superblock, string) {
	le := binary.LittleEndian
	sb := Superblock{
		Block:             le.Uint64(b[sbBlocknr:]),
		NeedsCheck:        le.Uint32(b[sbFlags:])&needsCheckFlag != 0,
		Version:           le.Uint32(b[sbVersion:]),
		Time:              le.Uint32(b[sbTime:]),
		TransactionID:     le.Uint64(b[sbTransaction:]),
		HeldRoot:          le.Uint64(b[sbHeldRoot:]),
		DataBlocks:        le.Uint64(b[sbDataSpaceMap:]),
		MappingRoot:       le.Uint64(b[sbMappingRoot:]),
		DetailsRoot:       le.Uint64(b[sbDetailsRoot:]),
		DataBlockSectors:  le.Uint32(b[sbDataBlockSize:]),
		metadataBlockSize: le.Uint32(b[sbMetaBlockSize:]),
		MetadataBlocks:    le.Uint64(b[sbMetaBlocks:]),
		CompatFlags:       le.Uint32(b[sbCompatFlags:]),
		CompatROFlags:     le.Uint32(b[sbCompatROFlags:]),
		IncompatFlags:     le.Uint32(b[sbIncompatFlags:]),
	}
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	switch {
	case sb.Block != loc:
		return sb, "superblock says it is block " + u(sb.Block)
	case le.Uint64(b[sbMagic:]) != superblockMagic:
		return sb, "not a thin pool superblock (bad magic " + u(le.Uint64(b[sbMagic:])) + ")"
	}
	if why := checkSalt(b, superblockSalt); why != "" {
		return sb, why
	}
	switch {
	case sb.IncompatFlags != 0:
		return sb, "unsupported incompatible features " + u(uint64(sb.IncompatFlags))
	case sb.Version != 1 && sb.Version != 2:
		return sb, "unsupported metadata version " + u(uint64(sb.Version))
	case sb.metadataBlockSize != BlockSize/512:
		return sb, "metadata block size is " + u(uint64(sb.metadataBlockSize)) + " sectors, not 8"
	case sb.DataBlockSectors < minDataBlockSize || sb.DataBlockSectors > maxDataBlockSize ||
		sb.DataBlockSectors%minDataBlockSize != 0:
		return sb, "bad data block size of " + u(uint64(sb.DataBlockSectors)) + " sectors"
	case sb.MappingRoot == 0 || sb.MappingRoot >= nblocks:
		return sb, "mapping tree root " + u(sb.MappingRoot) + " outside the metadata (" + u(nblocks) + " blocks)"
	case sb.DetailsRoot == 0 || sb.DetailsRoot >= nblocks:
		return sb, "device details tree root " + u(sb.DetailsRoot) + " outside the metadata (" + u(nblocks) + " blocks)"
	}
	return sb, ""
}

// Btree node layout (struct btree_node, dm-btree-internal.h): a 32-byte
// header, then max_entries keys, then max_entries values of value_size
// bytes. The values start after max_entries keys, not nr_entries.
const (
	nodeFlags      = 4  // u32: internalNode or leafNode
	nodeBlocknr    = 8  // u64: where the node is
	nodeNrEntries  = 16 // u32
	nodeMaxEntries = 20 // u32
	nodeValueSize  = 24 // u32
	nodeHeaderSize = 32
	internalNode   = 1
	leafNode       = 2

	// Value sizes of the trees: a block number (internal nodes, the
	// top-level mapping tree), a block_time (device mapping trees), a
	// disk_device_details (the details tree).
	blockValueSize   = 8
	mappingValueSize = 8
	detailsValueSize = 24
)

// node is a validated btree node in a block buffer.
type node struct {
	b     []byte
	leaf  bool
	n     int // nr_entries
	vals  int // offset of the values
	vsize int
}

func (n *node) key(i int) uint64 {
	return binary.LittleEndian.Uint64(n.b[nodeHeaderSize+8*i:])
}

// value64 is an 8-byte value: a child block, a device's tree root, a
// block_time.
func (n *node) value64(i int) uint64 {
	return binary.LittleEndian.Uint64(n.b[n.vals+8*i:])
}

// value is value i's bytes.
func (n *node) value(i int) []byte {
	off := n.vals + n.vsize*i
	return n.b[off : off+n.vsize]
}

// parseNode validates block b, read at location loc, as a node of a btree
// with leaf values of leafValueSize bytes, whose keys must lie in
// [lo, last]. The checks are the kernel's node_check (location, checksum,
// flags, max_entries fits the block, nr_entries <= max_entries), the
// value size of the tree (the tools check it too), keys strictly ascending
// and inside the key range the parent gives the node, and no empty node
// below the root (the kernel merges nodes that empty). It returns what is
// wrong, or "".
func parseNode(b []byte, loc uint64, leafValueSize int, lo, last uint64, root bool) (node, string) {
	le := binary.LittleEndian
	u := func(v uint64) string { return strconv.FormatUint(v, 10) }
	// The checksum first: for a block that is not a node at all it says
	// more than the location does.
	if why := checkSalt(b, nodeSalt); why != "" {
		return node{}, why
	}
	if got := le.Uint64(b[nodeBlocknr:]); got != loc {
		return node{}, "node says it is block " + u(got)
	}
	flags := le.Uint32(b[nodeFlags:])
	nr := uint64(le.Uint32(b[nodeNrEntries:]))
	max := uint64(le.Uint32(b[nodeMaxEntries:]))
	vsize := uint64(le.Uint32(b[nodeValueSize:]))
	// Computed in 64 bits from 32-bit fields: cannot overflow.
	if nodeHeaderSize+(8+vsize)*max > BlockSize {
		return node{}, "max_entries " + u(max) + " of " + u(vsize) + "-byte values do not fit in a block"
	}
	if nr > max {
		return node{}, "nr_entries " + u(nr) + " > max_entries " + u(max)
	}
	n := node{b: b, n: int(nr), vals: nodeHeaderSize + 8*int(max), vsize: int(vsize)}
	switch flags {
	case leafNode:
		n.leaf = true
		if vsize != uint64(leafValueSize) {
			return node{}, "leaf values of " + u(vsize) + " bytes, not " + u(uint64(leafValueSize))
		}
	case internalNode:
		if vsize != blockValueSize {
			return node{}, "internal node values of " + u(vsize) + " bytes, not 8"
		}
		if nr == 0 {
			return node{}, "internal node without entries"
		}
	default:
		return node{}, "bad node flags " + u(uint64(flags))
	}
	if nr == 0 && !root {
		return node{}, "empty node below the root"
	}
	prev := uint64(0)
	for i := 0; i < n.n; i++ {
		k := n.key(i)
		switch {
		case i > 0 && k <= prev:
			return node{}, "keys out of order: " + u(k) + " after " + u(prev)
		case k < lo || k > last:
			return node{}, "key " + u(k) + " outside the node's range [" + u(lo) + ", " + u(last) + "]"
		}
		prev = k
	}
	return n, ""
}

// Device details layout (struct disk_device_details).
const (
	ddMappedBlocks    = 0  // u64
	ddTransactionID   = 8  // u64
	ddCreationTime    = 16 // u32
	ddSnapshottedTime = 20 // u32
)

// DeviceDetails is a thin device's entry in the device details tree.
type DeviceDetails struct {
	ID              uint64
	MappedBlocks    uint64
	TransactionID   uint64
	CreationTime    uint32 // the pool's snapshot clock when the device was created
	SnapshottedTime uint32 // ... when it was last snapshotted
}

func parseDetails(id uint64, v []byte) DeviceDetails {
	le := binary.LittleEndian
	return DeviceDetails{
		ID:              id,
		MappedBlocks:    le.Uint64(v[ddMappedBlocks:]),
		TransactionID:   le.Uint64(v[ddTransactionID:]),
		CreationTime:    le.Uint32(v[ddCreationTime:]),
		SnapshottedTime: le.Uint32(v[ddSnapshottedTime:]),
	}
}

// A device mapping tree's value packs the data block and the time of the
// write that mapped it (pack_block_time): data_block << 24 | time.
const timeBits = 24

// Mapping is one mapped block of a thin device.
type Mapping struct {
	Block     uint64 // virtual block of the thin device
	DataBlock uint64 // block of the pool's data device
	Time      uint32 // the pool's snapshot clock when it was written
}

func unpackBlockTime(v uint64) (data uint64, time uint32) {
	return v >> timeBits, uint32(v & (1<<timeBits - 1))
}
