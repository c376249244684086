package lvmthin

import (
	"errors"
	"strconv"
	"strings"
)

// Known failures. Callers test for them with errors.Is; the errors returned
// carry the LV or pool name, the command that failed and what to do.
var (
	// ErrNotFound: the volume group, logical volume, device-mapper device
	// or thin device does not exist.
	ErrNotFound = errors.New("lvmthin: not found")
	// ErrNotThin: the LV is not a thin volume, or not a thin snapshot where
	// one is required.
	ErrNotThin = errors.New("lvmthin: not a thin volume")
	// ErrMetadataSnapBusy: the kernel refused to reserve a metadata
	// snapshot because one is already held (EBUSY).
	ErrMetadataSnapBusy = errors.New("lvmthin: metadata snapshot busy")
	// ErrStaleMetadataSnap: the pool holds a metadata snapshot that this
	// process did not take (a killed run or another program left it).
	ErrStaleMetadataSnap = errors.New("lvmthin: stale metadata snapshot")
	// ErrPoolFailed: the thin pool is in failure mode.
	ErrPoolFailed = errors.New("lvmthin: thin pool failed")
	// ErrPoolReadOnly: the thin pool is read-only (metadata out of space,
	// or needs a check).
	ErrPoolReadOnly = errors.New("lvmthin: thin pool read-only")
	// ErrPoolOutOfSpace: the thin pool's data device is full.
	ErrPoolOutOfSpace = errors.New("lvmthin: thin pool out of data space")
	// ErrLocked: another process holds the pool's metadata-snapshot lock
	// and the caller asked not to wait.
	ErrLocked = errors.New("lvmthin: pool locked by another process")
	// ErrMetadata: the thin tools' output does not make sense (ranges out
	// of order, overflowing, wrong device, missing block size, bad XML),
	// or a classic snapshot's COW store is corrupt (errors from
	// lvmthin/cow also match cow.ErrCorrupt or cow.ErrVersion).
	ErrMetadata = errors.New("lvmthin: bad thin metadata output")

	// ErrExists: an LV of that name already exists.
	ErrExists = errors.New("lvmthin: logical volume exists")
	// ErrNoSpace: the volume group has too few free extents.
	ErrNoSpace = errors.New("lvmthin: volume group has too little free space")
	// ErrNotSnapshot: the LV is not a snapshot (thin or classic) where
	// one is required.
	ErrNotSnapshot = errors.New("lvmthin: not a snapshot")
	// ErrInactive: a classic snapshot is not active; classic snapshots
	// are active exactly when their origin is.
	ErrInactive = errors.New("lvmthin: snapshot not active")
	// ErrBaseInvalid: the base classic snapshot of an incremental was
	// invalidated by the kernel (its COW space overflowed, or an I/O
	// error), so its exception table no longer lists every changed chunk.
	// The new snapshot is fine: compare it with the previous backup's
	// block digests instead.
	ErrBaseInvalid = errors.New("lvmthin: base snapshot invalidated")
	// ErrSnapshotInvalid: the classic snapshot to send was invalidated:
	// nothing can be read from it any more.
	ErrSnapshotInvalid = errors.New("lvmthin: snapshot invalidated")
	// ErrSnapshotMerging: a classic snapshot is merging into its origin
	// (lvconvert --merge), or its merge failed; its contents and table are
	// moving.
	ErrSnapshotMerging = errors.New("lvmthin: snapshot merging")

	// ErrModified: the replica target was written to since its newest replica
	// snapshot (ZFS: "destination has been modified since most recent
	// snapshot").
	ErrModified = errors.New("lvmthin: destination has been modified since most recent snapshot")

	// ErrOpen: the LV is open (mounted, or held by a process or another
	// device) where thinback must replace it.
	ErrOpen = errors.New("lvmthin: logical volume is open")
)

// metadataError is a COW store error from lvmthin/cow that also matches
// ErrMetadata, so that callers mapping errors to exit codes need not know
// the subpackage. Its text is the original's.
type metadataError struct{ err error }

func (e metadataError) Error() string   { return e.err.Error() }
func (e metadataError) Unwrap() []error { return []error{ErrMetadata, e.err} }

// errNoMetadataSnap is what the kernel and the thin tools say when no
// metadata snapshot is held; it stays internal because only this package
// reserves and releases.
var errNoMetadataSnap = errors.New("lvmthin: no metadata snapshot held")

// errMessageRefused: the pool refused a message (EOPNOTSUPP), which the
// kernel does in read-only, failed and out-of-metadata-space modes; the
// pool status then says which.
var errMessageRefused = errors.New("lvmthin: pool refused the message")

// CommandError is the error of an external command that failed or could not
// run. It unwraps to the classified sentinel (ErrNotFound, ...), if any, and
// to the underlying exec error.
type CommandError struct {
	Args     []string // the full command line; Args[0] is the program
	ExitCode int      // exit status, or -1 if it did not exit normally
	Stderr   string   // trimmed standard error
	Err      error    // the exec error (exit status, signal, not found)
	kind     error
}

func (e *CommandError) Error() string {
	var b strings.Builder
	b.WriteString(quoteArgs(e.Args))
	b.WriteString(": ")
	switch {
	case e.ExitCode >= 0:
		b.WriteString("exit status ")
		b.WriteString(strconv.Itoa(e.ExitCode))
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	if e.Stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.Stderr)
	}
	return b.String()
}

// Unwrap returns the classified sentinel and the exec error.
func (e *CommandError) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// classify maps what a failed command printed to a sentinel. It is the one
// place that looks at error text, so call sites only use errors.Is; the
// texts are those of lvm2 2.03, dmsetup and thin-provisioning-tools 0.9/1.x
// under LC_ALL=C (the runner sets it).
func classify(args []string, stderr string) error {
	prog := args[0]
	if i := strings.LastIndexByte(prog, '/'); i >= 0 {
		prog = prog[i+1:]
	}
	has := func(s string) bool { return strings.Contains(stderr, s) }
	switch prog {
	case "dmsetup":
		isMessage := len(args) > 1 && args[1] == "message"
		last := args[len(args)-1]
		switch {
		case has("Device does not exist") || has("No such device or address"):
			return ErrNotFound
		case isMessage && last == "reserve_metadata_snap" && has("Device or resource busy"):
			return ErrMetadataSnapBusy
		case isMessage && last == "release_metadata_snap" && has("Invalid argument"):
			return errNoMetadataSnap
		case isMessage && has("Operation not supported"):
			return errMessageRefused
		}
	case "thin_delta", "thin_dump", "thin_ls":
		switch {
		case has("no current metadata snap"):
			return errNoMetadataSnap
		case has("Unable to find mapping tree") || has("couldn't find device") ||
			has("Couldn't find") || has("unknown device"):
			return ErrNotFound
		}
	default: // lvm tools: lvs, vgs, lvcreate, lvchange, lvremove, lvrename
		switch {
		case has("Failed to find logical volume") ||
			(has("Volume group") && has("not found")) ||
			(has("origin LV") && has("not found")):
			return ErrNotFound
		case has("already exists in volume group"):
			return ErrExists
		case has("insufficient free space") || has("Insufficient free space") ||
			has("Insufficient suitable allocatable extents"):
			return ErrNoSpace
		case has("Can't remove merging snapshot"):
			return ErrSnapshotMerging
		case has("Can't remove open logical volume") || (has("Logical volume") && has(" in use")):
			return ErrOpen
		}
	}
	return nil
}

// quoteArgs renders a command line so that it can be pasted into a shell.
func quoteArgs(args []string) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.IndexFunc(a, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' ||
				strings.ContainsRune("-_./=:,+@%", r))
		}) < 0 {
			b.WriteString(a)
			continue
		}
		b.WriteByte('\'')
		b.WriteString(strings.ReplaceAll(a, "'", `'\''`))
		b.WriteByte('\'')
	}
	return b.String()
}
