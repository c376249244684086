package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/thinback/thinback/lvmthin/thinxml"
)

// This file is Discover with DiscoverTools: it runs thin_delta or thin_dump
// and builds a delta's extents from their XML, which package thinxml reads.

// DeviceDetails is a thin device's entry in the pool metadata (thin_dump's
// <device> element), whichever reader found it.
type DeviceDetails = thinxml.Device

// xmlScanFunc is the signature of thinxml.Scan; tests run the same
// assembly of a delta with the encoding/xml parser it replaced.
type xmlScanFunc func(r io.Reader, opt thinxml.Options, h thinxml.Handler) error

// xmlOutputError gives an error of package thinxml this package's
// meaning: output that makes no sense is ErrMetadata, a dump without the
// device ErrNotFound. Its text is thinxml's, which names the line and
// byte of the output.
type xmlOutputError struct {
	err  error
	kind error
}

func (e *xmlOutputError) Error() string   { return e.err.Error() }
func (e *xmlOutputError) Unwrap() []error { return []error{e.kind, e.err} }

// wrapXML gives an error of thinxml.Scan its meaning here, as wrapNative
// does for thinmeta.
func wrapXML(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, thinxml.ErrMetadata):
		return &xmlOutputError{err: err, kind: ErrMetadata}
	case errors.Is(err, thinxml.ErrNoDevice):
		return &xmlOutputError{err: err, kind: ErrNotFound}
	}
	return err
}

// discoverTools is Discover with DiscoverTools.
func discoverTools(ctx context.Context, opts DiscoverOptions) (*Extents, error) {
	var prog string
	var args []string
	if opts.MetadataSnap {
		// Bare -m: 0.9 takes an attached optional value, so "-m N"
		// would read N as the device path.
		args = append(args, "-m")
	}
	if opts.Base != nil {
		prog = programs.thinDelta
		args = append(args, "--snap1", strconv.FormatUint(uint64(opts.Base.ID), 10),
			"--snap2", strconv.FormatUint(uint64(opts.Snap.ID), 10))
	} else {
		prog = programs.thinDump
		args = append(args, "--dev-id", strconv.FormatUint(uint64(opts.Snap.ID), 10))
	}
	args = append(args, opts.Metadata)

	var x *Extents
	start := time.Now()
	_, err := run(ctx, func(r io.Reader) (err error) {
		x, err = parseDelta(r, opts)
		return err
	}, prog, args...)
	toolTime := time.Since(start)
	if err != nil {
		if x != nil {
			x.Close()
		}
		if opts.Base != nil {
			return nil, fmt.Errorf("changes from thin device %d to %d in %s: %w", opts.Base.ID, opts.Snap.ID, opts.Metadata, err)
		}
		return nil, fmt.Errorf("mappings of thin device %d in %s: %w", opts.Snap.ID, opts.Metadata, err)
	}
	x.stats.Discovery = DiscoverTools
	x.stats.Tool = prog
	x.stats.ToolTime = toolTime
	return x, nil
}

// parseDelta turns thin_delta output (opts.Base set) or thin_dump output
// (opts.Base nil) into a spooled extent list.
func parseDelta(r io.Reader, opts DiscoverOptions) (*Extents, error) {
	return parseDeltaWith(thinxml.Scan, r, opts)
}

// parseDeltaWith is parseDelta with the XML parser as a parameter, so that
// tests can hold thinxml.Scan to the encoding/xml parser it replaced.
func parseDeltaWith(scan xmlScanFunc, r io.Reader, opts DiscoverOptions) (*Extents, error) {
	sp, err := newSpool(opts.TempDir)
	if err != nil {
		return nil, err
	}
	b := newExtentBuilder(opts, sp)
	opt := thinxml.Options{TempDir: opts.TempDir}
	if opts.Base != nil {
		opt.Left, opt.Right = opts.Base.ID, opts.Snap.ID
	} else {
		opt.Dump, opt.DumpDev = true, opts.Snap.ID
	}
	err = wrapXML(scan(r, opt, thinxml.Handler{Superblock: b.setBlockSize, Range: b.add}))
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
	x.stats.Ranges = b.ranges
	x.stats.BlockSize = b.unit
	return x, nil
}

// ReadDeviceDetails returns the metadata's entries of the given thin devices
// (`thin_dump [-m] --skip-mappings METADATA`): their creation times order
// snapshots when LVM's one-second lv_time cannot. A device that is not in
// the metadata is an ErrNotFound.
func ReadDeviceDetails(ctx context.Context, metadata string, metadataSnap bool, ids ...uint32) (map[uint32]DeviceDetails, error) {
	want := map[uint32]bool{}
	for _, id := range ids {
		want[id] = true
	}
	found := map[uint32]DeviceDetails{}
	args := []string{"--skip-mappings", metadata}
	if metadataSnap {
		args = append([]string{"-m"}, args...)
	}
	_, err := run(ctx, func(r io.Reader) error {
		return wrapXML(thinxml.Scan(r, thinxml.Options{Dump: true}, thinxml.Handler{Device: func(d thinxml.Device) error {
			if want[d.ID] {
				found[d.ID] = d
			}
			return nil
		}}))
	}, programs.thinDump, args...)
	if err != nil {
		return nil, fmt.Errorf("thin device details in %s: %w", metadata, err)
	}
	for _, id := range ids {
		if _, ok := found[id]; !ok {
			return nil, fmt.Errorf("thin device %d is not in the pool metadata %s: %w", id, metadata, ErrNotFound)
		}
	}
	return found, nil
}
