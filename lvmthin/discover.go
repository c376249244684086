package lvmthin

import (
	"context"
	"fmt"
)

// ThinDevice is a thin device of a pool's metadata and the size of its LV.
type ThinDevice struct {
	ID   uint32 // thin device id (LV's ThinID)
	Size int64  // LV size in bytes; extents are clipped to it
}

// Discovery is how Discover reads the pool's metadata.
type Discovery string

const (
	// DiscoverNative reads the metadata in process (package thinmeta):
	// a diff passes over every subtree the two devices share, so it
	// reads what changed, not the volume. It is the default (the zero
	// value).
	DiscoverNative Discovery = "native"
	// DiscoverTools runs thin_delta or thin_dump and parses their XML:
	// the fallback, and the oracle the native reader is tested against.
	DiscoverTools Discovery = "tools"
)

// ParseDiscovery parses a Discovery name ("native" or "tools").
func ParseDiscovery(s string) (Discovery, error) {
	switch d := Discovery(s); d {
	case DiscoverNative, DiscoverTools:
		return d, nil
	}
	return "", fmt.Errorf("unknown discovery %q: use native or tools", s)
}

func (d Discovery) orDefault() Discovery {
	if d == "" {
		return DiscoverNative
	}
	return d
}

// DiscoverOptions say which metadata Discover reads and which delta it
// computes.
type DiscoverOptions struct {
	// Discovery says how ("" = DiscoverNative).
	Discovery Discovery
	// Metadata is the pool's metadata device (MetadataDevice(pool)) or a
	// file holding metadata (as thin_restore writes).
	Metadata string
	// MetadataSnap makes the tools read the pool's held metadata snapshot
	// (-m), which is required while the pool is active: the live
	// metadata changes under the reader and the kernel holds the device.
	MetadataSnap bool
	// HeldRoot, with MetadataSnap, is the held root of the metadata
	// snapshot the caller reserved (MetadataSnap.Root); the native reader
	// refuses to read another. 0 accepts any.
	HeldRoot uint64
	// Base is the older device of an incremental; nil asks for a full.
	Base *ThinDevice
	// Snap is the newer device, whose data the delta describes.
	Snap ThinDevice
	// BlockSize is the pool's data block size in bytes as LVM reports it
	// (LV.ChunkSize), checked against the metadata's; 0 skips the check.
	BlockSize int64
	// TempDir is where the extent list is spooled ("" = os.TempDir()).
	TempDir string
}

// Discover computes the extents of a delta from thin pool metadata:
//   - incremental (Base set): what changed from BASE to SNAP (`thin_delta
//     [-m] --snap1 BASE --snap2 SNAP METADATA`); changed and new ranges
//     are KindData, ranges unmapped since the base are KindZero; if the
//     volume grew, the part past the base's size is described completely
//     (data where mapped, zero elsewhere);
//   - full (Base nil): SNAP's mappings (`thin_dump [-m] --dev-id SNAP
//     METADATA`); mapped ranges are KindData, the rest of [0, Snap.Size)
//     KindZero.
//
// Ranges are clipped to Snap.Size and adjacent extents of one kind merged.
// DiscoverNative reads the metadata itself (see package thinmeta);
// DiscoverTools runs the tool named above and parses its output as it
// streams. Both give the same extents. They are spooled to an unlinked
// temporary file, so memory stays bounded however many ranges there are,
// and the caller can release the metadata snapshot before it reads a
// single extent. The caller must Close the result.
func Discover(ctx context.Context, opts DiscoverOptions) (*Extents, error) {
	if opts.Snap.ID == 0 {
		return nil, fmt.Errorf("discover: no thin device id for the snapshot")
	}
	if opts.Snap.Size <= 0 {
		return nil, fmt.Errorf("discover: thin device %d: size %d", opts.Snap.ID, opts.Snap.Size)
	}
	if opts.Base != nil && (opts.Base.ID == 0 || opts.Base.ID == opts.Snap.ID || opts.Base.Size < 0) {
		return nil, fmt.Errorf("discover: bad base thin device %d (snapshot is %d)", opts.Base.ID, opts.Snap.ID)
	}
	switch opts.Discovery.orDefault() {
	case DiscoverNative:
		return discoverNative(ctx, opts)
	case DiscoverTools:
		return discoverTools(ctx, opts)
	}
	return nil, fmt.Errorf("discover: unknown discovery %q", opts.Discovery)
}

// newExtentBuilder returns the builder of a delta's extents, writing to
// sp.
func newExtentBuilder(opts DiscoverOptions, sp *spool) *extentBuilder {
	b := &extentBuilder{wantUnit: opts.BlockSize, size: opts.Snap.Size, out: sp.write}
	if opts.Base != nil {
		// Only a grown volume has a region the base cannot describe.
		b.fillFrom = opts.Snap.Size
		if opts.Snap.Size > opts.Base.Size {
			b.fillFrom = opts.Base.Size
		}
	} else {
		b.fillFrom = 0
	}
	return b
}
