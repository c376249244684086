package cow

import (
	"encoding/binary"
	"fmt"
)

// The persistent exception store of dm-snapshot (the kernel's
// drivers/md/dm-snap-persistent.c), in units of chunks of ChunkSectors
// 512-byte sectors. Everything is little-endian.
//
//	chunk 0            header: magic u32 || valid u32 || version u32 ||
//	                   chunk_size u32 (sectors) || zeroes to the chunk's end
//	chunk 1            metadata area 0: E exceptions of 16 bytes,
//	                   old_chunk u64 || new_chunk u64
//	chunks 2 .. E+1    the data chunks area 0's exceptions point to
//	chunk 1 + a·(E+1)  metadata area a, and so on to the device's end
//
// with E = ChunkSectors·512/16 exceptions per area. old_chunk is a chunk of
// the origin, new_chunk the chunk of the COW device that holds its data as
// it was when the snapshot was taken. The list ends at the first exception
// whose new_chunk is 0 (chunk 0 is the header, so no exception points
// there); an area whose E exceptions are all in use continues in the next
// one, which the kernel zeroes before it fills the previous one up.
const (
	// Magic is "SnAp" read as a little-endian u32.
	Magic = 0x70416E53
	// Version is the only on-disk version there is.
	Version = 1
	// SectorSize is the unit of the header's chunk size.
	SectorSize = 512
	// headerSize is what the header's four fields take.
	headerSize = 16
	// exceptionSize is one exception's two u64.
	exceptionSize = 16
)

// Chunk sizes accepted, in sectors. LVM creates 8 (4 KiB) to 1024
// (512 KiB); the kernel's default is 32. Anything larger than 1 MiB has no
// maker and would only make the area buffers big; a chunk size that is not
// a power of two is refused by the kernel itself.
const (
	MinChunkSectors = 1
	MaxChunkSectors = 2048
)

// Header is the first chunk of a COW store.
type Header struct {
	Magic        uint32
	Valid        uint32 // 1 while the snapshot is valid, 0 once the kernel invalidated it
	Version      uint32
	ChunkSectors uint32 // chunk size in 512-byte sectors
}

// ChunkSize returns the chunk size in bytes.
func (h Header) ChunkSize() int64 { return int64(h.ChunkSectors) * SectorSize }

// ExceptionsPerArea returns E, the exceptions one metadata area holds.
func (h Header) ExceptionsPerArea() int64 { return h.ChunkSize() / exceptionSize }

// parseHeader decodes and checks a header from b, the first bytes of the
// device (at least headerSize; more are checked to be zero, up to the end
// of chunk 0). The header is returned even when the error is
// ErrInvalidated, so callers can say what they found.
func parseHeader(b []byte, name string) (Header, error) {
	if len(b) < headerSize {
		return Header{}, corrupt(name, 0, "%d bytes are too few for a snapshot header (%d)", len(b), headerSize)
	}
	h := Header{
		Magic:        binary.LittleEndian.Uint32(b[0:]),
		Valid:        binary.LittleEndian.Uint32(b[4:]),
		Version:      binary.LittleEndian.Uint32(b[8:]),
		ChunkSectors: binary.LittleEndian.Uint32(b[12:]),
	}
	switch {
	case h.Magic == 0:
		// The kernel takes a zero magic for a new store and writes a
		// header; an active snapshot always has one.
		return h, corrupt(name, 0, "no snapshot header (magic is 0): not a COW device, or a snapshot that was never activated")
	case h.Magic != Magic:
		return h, corrupt(name, 0, "bad magic 0x%08x, want 0x%08x (\"SnAp\")", h.Magic, uint32(Magic))
	case h.Version != Version:
		return h, &Error{Name: name, Offset: 8, Err: ErrVersion, Detail: fmt.Sprintf("version %d, want %d", h.Version, Version)}
	case h.ChunkSectors < MinChunkSectors || h.ChunkSectors > MaxChunkSectors || h.ChunkSectors&(h.ChunkSectors-1) != 0:
		return h, corrupt(name, 12, "chunk size of %d sectors: want a power of two from %d to %d", h.ChunkSectors, MinChunkSectors, MaxChunkSectors)
	case h.Valid > 1:
		return h, corrupt(name, 4, "valid flag is %d, want 0 or 1", h.Valid)
	}
	// The kernel writes the header from a zeroed chunk: anything else
	// after the four fields means this is not what it wrote.
	rest := b[headerSize:min(int64(len(b)), h.ChunkSize())]
	for i, c := range rest {
		if c != 0 {
			return h, corrupt(name, int64(headerSize+i), "byte 0x%02x after the header fields, where the kernel writes zeroes", c)
		}
	}
	if h.Valid == 0 {
		return h, &Error{Name: name, Offset: 4, Err: ErrInvalidated,
			Detail: "valid flag is 0: the kernel invalidated the snapshot (its COW space filled up, or an I/O error); its exception table is incomplete"}
	}
	return h, nil
}
