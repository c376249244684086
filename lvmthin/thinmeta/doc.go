// Package thinmeta reads dm-thin pool metadata (the kernel's on-disk
// format, as dm-thin-metadata.c and persistent-data/ write it) and finds
// what changed between two thin devices without reading what did not.
//
// # Basics
//
// Open opens a pool's metadata device, or a file holding metadata, and
// reads its superblock; with Options.Snapshot it reads the held metadata
// snapshot's copy instead, the only consistent view of an active pool.
// Device and Devices read the device details tree; Mappings and
// MappedRanges walk one device's mapping tree (what thin_dump --dev-id
// prints); Diff compares two devices' mapping trees (what thin_delta
// prints), passing over every subtree the two share without reading it,
// so a diff costs the changed leaves and the paths to them, not the
// volume. Stats counts the metadata read.
//
// # Caveats
//
//   - Every block read is validated as the kernel validates it (checksum
//     with the salt of its kind, its self-recorded location, node flags,
//     nr_entries <= max_entries, the entries fit the block) and more: the
//     value size of the tree, keys strictly ascending and inside the range
//     the parent gives, no empty node below a root, all leaves at one
//     depth, no node its own ancestor, no tree deeper than 16 levels.
//     Nothing read from disk sizes an allocation or bounds a loop without
//     a check. A block that fails is a *MetadataError (ErrMetadata)
//     naming it; memory is a few dozen blocks whatever the pool's size.
//   - Diff trusts what the format promises: within one consistent view, a
//     block that two trees both reference is the same subtree in both. So
//     it never reads such a block, and damage inside one goes unnoticed
//     by a diff (it changes both devices alike); a full read
//     (MappedRanges) reads and checks every block.
//   - A leaf is read together with the other leaves of its parent that
//     the walk will need (all in a full walk; in a diff, those the other
//     tree's parent does not share), in concurrent reads of consecutive
//     runs, so a walk does not wait for every read in turn.
//   - The live metadata of an active pool changes while it is read: read
//     it through a held metadata snapshot, or with the pool inactive.
//   - A Metadata is not safe for concurrent use.
package thinmeta
