package thinmeta

import (
	"errors"
	"fmt"
)

var (
	// ErrMetadata: a metadata block fails validation (checksum, location,
	// header, key order, tree shape) or lies outside the metadata. Every
	// such error is a *MetadataError naming the block.
	ErrMetadata = errors.New("thinmeta: bad thin pool metadata")
	// ErrNoSnapshot: the superblock holds no metadata snapshot (held_root
	// is 0), or not the one the caller reserved.
	ErrNoSnapshot = errors.New("thinmeta: no metadata snapshot held")
	// ErrNoDevice: the thin device is not in the metadata.
	ErrNoDevice = errors.New("thinmeta: thin device not found")
)

// MetadataError says which metadata block is wrong and how. It unwraps to
// ErrMetadata.
type MetadataError struct {
	Path  string // the metadata device or file
	Block uint64 // the metadata block (4 KiB) at fault
	What  string // the structure being read: "superblock", "mapping tree of thin device 3", ...
	Err   string // what is wrong with it
}

func (e *MetadataError) Error() string {
	return fmt.Sprintf("thin pool metadata %s: block %d (%s): %s", e.Path, e.Block, e.What, e.Err)
}

// Unwrap returns ErrMetadata.
func (e *MetadataError) Unwrap() error { return ErrMetadata }
