package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/thinback/thinback/lvmthin/thinmeta"
)

// nativeError gives an error of package thinmeta this package's meaning:
// damaged metadata is ErrMetadata, a missing device ErrNotFound, no held
// metadata snapshot errNoMetadataSnap. Its text is thinmeta's, which
// names the metadata and the block.
type nativeError struct {
	err  error
	kind error
}

func (e *nativeError) Error() string {
	if e.kind == ErrMetadata {
		return e.err.Error() + " (thin_check on the inactive pool can confirm the damage; the thin tools, thin_delta and thin_dump, may still read it)"
	}
	return e.err.Error()
}

func (e *nativeError) Unwrap() []error { return []error{e.kind, e.err} }

func wrapNative(err error) error {
	var kind error
	switch {
	case errors.Is(err, thinmeta.ErrMetadata):
		kind = ErrMetadata
	case errors.Is(err, thinmeta.ErrNoDevice):
		kind = ErrNotFound
	case errors.Is(err, thinmeta.ErrNoSnapshot):
		kind = errNoMetadataSnap
	default:
		return err
	}
	return &nativeError{err: err, kind: kind}
}

// openMetadata opens pool metadata for the native reader.
func openMetadata(path string, snap bool, heldRoot uint64) (*thinmeta.Metadata, error) {
	m, err := thinmeta.Open(path, thinmeta.Options{Snapshot: snap, HeldRoot: heldRoot})
	if err != nil {
		return nil, wrapNative(err)
	}
	return m, nil
}

// discoverNative is Discover with DiscoverNative.
func discoverNative(ctx context.Context, opts DiscoverOptions) (*Extents, error) {
	m, err := openMetadata(opts.Metadata, opts.MetadataSnap, opts.HeldRoot)
	if err != nil {
		return nil, err
	}
	x, err := discoverIn(ctx, m, opts)
	if cerr := m.Close(); err == nil && cerr != nil {
		x.Close()
		return nil, cerr
	}
	return x, err
}

var thinmetaKinds = [...]rangeKind{
	thinmeta.Same:      rangeSame,
	thinmeta.Different: rangeDifferent,
	thinmeta.LeftOnly:  rangeLeftOnly,
	thinmeta.RightOnly: rangeRightOnly,
	thinmeta.Mapped:    rangeMapped,
}

// discoverIn computes a delta's extents from open metadata. The ranges
// the reader reports go through the same extent building as the tools'
// ranges, so the extents are the same; the reader is only asked for what
// that building uses: shared ("same") ranges only in the region a grown
// volume must describe completely, nothing past the volume's end.
func discoverIn(ctx context.Context, m *thinmeta.Metadata, opts DiscoverOptions) (*Extents, error) {
	start := time.Now()
	before := m.Stats().BytesRead
	sp, err := newSpool(opts.TempDir)
	if err != nil {
		return nil, err
	}
	b := newExtentBuilder(opts, sp)
	var ranges int64
	add := func(r thinmeta.Range) error {
		ranges++
		if int(r.Kind) >= len(thinmetaKinds) || thinmetaKinds[r.Kind] == 0 {
			return badf("native reader: unknown range kind %v", r.Kind)
		}
		return b.add(thinmetaKinds[r.Kind], r.Begin, r.Length)
	}
	err = b.setBlockSize(uint64(m.Superblock().DataBlockSectors))
	if err == nil {
		unit := b.unit
		end := uint64((opts.Snap.Size + unit - 1) / unit)
		if opts.Base != nil {
			sameFrom := uint64(math.MaxUint64) // no region to fill: no same ranges needed
			if b.fillFrom < opts.Snap.Size {
				sameFrom = uint64(b.fillFrom / unit)
			}
			err = m.Diff(ctx, uint64(opts.Base.ID), uint64(opts.Snap.ID),
				thinmeta.DiffOptions{SameFrom: sameFrom, End: end}, add)
			if err != nil {
				err = fmt.Errorf("changes from thin device %d to %d in %s: %w", opts.Base.ID, opts.Snap.ID, opts.Metadata, wrapNative(err))
			}
		} else {
			err = m.MappedRanges(ctx, uint64(opts.Snap.ID), end, add)
			if err != nil {
				err = fmt.Errorf("mappings of thin device %d in %s: %w", opts.Snap.ID, opts.Metadata, wrapNative(err))
			}
		}
	}
	if err == nil {
		err = b.finish()
	}
	var x *Extents
	if err == nil {
		x, err = sp.finish()
	}
	if err != nil {
		sp.abort()
		return nil, err
	}
	x.stats.Discovery = DiscoverNative
	x.stats.Ranges = ranges
	x.stats.BlockSize = b.unit
	x.stats.MetadataBytes = m.Stats().BytesRead - before
	x.stats.ToolTime = time.Since(start)
	return x, nil
}

// deviceDetailsIn returns the details of the given thin devices from open
// metadata, as ReadDeviceDetails does with thin_dump.
func deviceDetailsIn(m *thinmeta.Metadata, ids ...uint32) (map[uint32]DeviceDetails, error) {
	found := map[uint32]DeviceDetails{}
	for _, id := range ids {
		d, err := m.Device(uint64(id))
		if err != nil {
			return nil, fmt.Errorf("thin device %d in the pool metadata %s: %w", id, m.Path(), wrapNative(err))
		}
		found[id] = DeviceDetails{ID: id, MappedBlocks: d.MappedBlocks, Transaction: d.TransactionID,
			CreationTime: uint64(d.CreationTime), SnapshotTime: uint64(d.SnapshottedTime)}
	}
	return found, nil
}
