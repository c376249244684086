// Package thinxml reads the XML that thin-provisioning-tools write about
// a thin pool's metadata: thin_delta's ranges between two thin devices,
// and thin_dump's devices and mappings (0.9 and 1.x, <def>/<ref> runs
// expanded). Scan streams the output of a pipe to a Handler, in memory
// bounded by one tag, and refuses XML outside the subset the tools write
// (ErrUnsupported) rather than guess at it.
//
// It is one of the two ways thinback finds the blocks that changed in a
// thin pool: package lvmthin runs the tools (Discover with DiscoverTools)
// and builds a delta's extents from what Scan reports, the same way it
// builds them from the native reader, package thinmeta. This package runs
// nothing and knows no LV; it imports nothing of thinback's.
package thinxml
