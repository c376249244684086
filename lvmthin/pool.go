package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// PoolMode is the operating mode a thin pool reports in its status.
type PoolMode string

const (
	PoolWrite          PoolMode = "rw"
	PoolReadOnly       PoolMode = "ro"
	PoolOutOfDataSpace PoolMode = "out_of_data_space"
	// PoolFail stands for the whole status "Fail" (failure mode) or
	// "Error" (the kernel could not read its own metadata for the status).
	PoolFail PoolMode = "Fail"
)

// PoolStatus is a thin pool's `dmsetup status` line:
//
//	<start> <len> thin-pool <transaction id> <used>/<total metadata blocks>
//	<used>/<total data blocks> <held metadata root|-> rw|ro|out_of_data_space
//	[no_]discard_passdown|ignore_discard error|queue_if_no_space
//	needs_check|- [<metadata low watermark>]
//
// (kernel Documentation/admin-guide/device-mapper/thin-provisioning.rst).
type PoolStatus struct {
	TransactionID  uint64
	MetadataUsed   uint64 // metadata blocks (4 KiB) in use
	MetadataTotal  uint64
	DataUsed       uint64 // data blocks (of the pool's chunk size) in use
	DataTotal      uint64
	HeldRoot       uint64 // block of the held metadata snapshot, 0 if none
	Mode           PoolMode
	NeedsCheck     bool
	DiscardMode    string
	NoSpacePolicy  string
	RawStatusWords []string // the target's status words, for messages
}

// MetadataSnapHeld reports whether a metadata snapshot is held.
func (s *PoolStatus) MetadataSnapHeld() bool { return s.HeldRoot != 0 }

// ParsePoolStatus parses one line of `dmsetup status` output of a thin-pool
// device. Unknown trailing words (features of later kernels) are ignored.
func ParsePoolStatus(line string) (*PoolStatus, error) {
	f := strings.Fields(line)
	bad := func(why string) (*PoolStatus, error) {
		return nil, fmt.Errorf("%w: thin-pool status %q: %s", ErrMetadata, line, why)
	}
	if len(f) < 3 {
		return bad("too short")
	}
	if f[2] != "thin-pool" {
		return bad("target is " + strconv.Quote(f[2]) + ", not thin-pool")
	}
	w := f[3:]
	st := &PoolStatus{RawStatusWords: w}
	if len(w) >= 1 && (w[0] == "Fail" || w[0] == "Error") {
		st.Mode = PoolFail
		return st, nil
	}
	if len(w) < 8 {
		return bad("want at least 8 status words")
	}
	var err error
	if st.TransactionID, err = strconv.ParseUint(w[0], 10, 64); err != nil {
		return bad("transaction id: " + err.Error())
	}
	if st.MetadataUsed, st.MetadataTotal, err = parseUsage(w[1]); err != nil {
		return bad("metadata usage: " + err.Error())
	}
	if st.DataUsed, st.DataTotal, err = parseUsage(w[2]); err != nil {
		return bad("data usage: " + err.Error())
	}
	if w[3] != "-" {
		if st.HeldRoot, err = strconv.ParseUint(w[3], 10, 64); err != nil || st.HeldRoot == 0 {
			return bad("held metadata root " + strconv.Quote(w[3]))
		}
	}
	switch m := PoolMode(w[4]); m {
	case PoolWrite, PoolReadOnly, PoolOutOfDataSpace:
		st.Mode = m
	default:
		return bad("unknown mode " + strconv.Quote(w[4]))
	}
	st.DiscardMode = w[5]
	st.NoSpacePolicy = w[6]
	switch w[7] {
	case "needs_check":
		st.NeedsCheck = true
	case "-":
	default:
		return bad("needs_check field " + strconv.Quote(w[7]))
	}
	return st, nil
}

func parseUsage(s string) (used, total uint64, err error) {
	u, t, ok := strings.Cut(s, "/")
	if !ok {
		return 0, 0, fmt.Errorf("%q is not used/total", s)
	}
	if used, err = strconv.ParseUint(u, 10, 64); err != nil {
		return 0, 0, err
	}
	if total, err = strconv.ParseUint(t, 10, 64); err != nil {
		return 0, 0, err
	}
	if used > total {
		return 0, 0, fmt.Errorf("%q: more used than total", s)
	}
	return used, total, nil
}

// usable returns a typed error, naming the pool and what to do, if a pool in
// this state must not be given a metadata snapshot: the kernel refuses pool
// messages in read-only and failure modes, and holding one while out of
// data space keeps blocks allocated that the pool needs.
func (s *PoolStatus) usable(pool Name) error {
	switch {
	case s.Mode == PoolFail:
		return fmt.Errorf("thin pool %s is in failure mode (status %q); repair it (lvconvert --repair %s) before backing up: %w",
			pool, strings.Join(s.RawStatusWords, " "), pool, ErrPoolFailed)
	case s.NeedsCheck:
		return fmt.Errorf("thin pool %s needs a metadata check; deactivate it and run lvconvert --repair %s: %w",
			pool, pool, ErrPoolReadOnly)
	case s.Mode == PoolReadOnly:
		return fmt.Errorf("thin pool %s is read-only (metadata full or damaged); extend its metadata (lvextend --poolmetadatasize) or repair it: %w",
			pool, ErrPoolReadOnly)
	case s.Mode == PoolOutOfDataSpace:
		return fmt.Errorf("thin pool %s is out of data space (%d/%d blocks used); extend it (lvextend -L +SIZE %s) before backing up: %w",
			pool, s.DataUsed, s.DataTotal, pool, ErrPoolOutOfSpace)
	}
	return nil
}

// poolDMName is the device-mapper name of a pool's thin-pool target, the
// device that takes messages and reports status ("<vg>-<pool>-tpool").
func poolDMName(pool Name) string { return DMName(pool.VG, pool.LV, "tpool") }

// MetadataDevice returns the path of a thin pool's metadata device, the
// hidden LV <pool>_tmeta, which thin_delta and thin_dump read.
func MetadataDevice(pool Name) string { return "/dev/mapper/" + DMName(pool.VG, pool.LV+"_tmeta", "") }

// GetPoolStatus asks device-mapper for the status of <vg>-<pool>-tpool
// (`dmsetup status`, through the ioctl unless THINBACK_DM=dmsetup). The
// pool must be active (some thin volume of it active); ErrNotFound
// otherwise.
func GetPoolStatus(ctx context.Context, pool Name) (*PoolStatus, error) {
	out, err := dmStatus(ctx, poolDMName(pool))
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("status of thin pool %s (it must be active): %w", pool, err)
		}
		return nil, fmt.Errorf("status of thin pool %s: %w", pool, err)
	}
	line := strings.TrimSpace(string(out))
	if strings.Contains(line, "\n") {
		return nil, fmt.Errorf("status of thin pool %s: %w: more than one table line: %q", pool, ErrMetadata, line)
	}
	st, err := ParsePoolStatus(line)
	if err != nil {
		return nil, fmt.Errorf("status of thin pool %s: %w", pool, err)
	}
	return st, nil
}
