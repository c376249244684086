package main

import (
	"context"
	"errors"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// Exit codes. They are documented in the README and in --help; scripts and
// cron jobs depend on them, so their meanings never change.
const (
	exitOK          = 0
	exitError       = 1  // anything not listed below
	exitUsage       = 2  // bad command line
	exitCorrupt     = 3  // a delta file is damaged, truncated or not a delta file
	exitVersion     = 4  // a delta file needs a newer thinback
	exitChain       = 5  // wrong base / not a chain / other volume / interrupted apply
	exitTarget      = 6  // target too small, read-only, busy or not a file/device
	exitLVM         = 7  // LV or pool missing, not thin, pool failed
	exitMetaSnap    = 8  // the pool's metadata snapshot is held by someone else
	exitLocked      = 9  // another thinback holds the volume or catalog
	exitVerify      = 10 // verify found problems
	exitNoSpace     = 11 // a disk filled up
	exitInterrupted = 130
)

const exitCodesHelp = `EXIT CODES:
   0    success
   1    error not listed below (I/O error, missing file...)
   2    bad command line
   3    a delta file is damaged, truncated or not a delta file
   4    a delta file needs a newer thinback
   5    the files do not apply to the target: wrong base snapshot, not a
        chain, another volume, or an earlier apply was interrupted
   6    the target is too small, read-only, in use, or not a file or device
   7    LVM: volume or pool not found, not a thin volume, pool failed
   8    the thin pool's metadata snapshot is held by another program or a
        killed run (see --release-stale-metadata-snap)
   9    another thinback is working on the same volume or catalog
   10   verify found problems
   11   no space left on a device
   130  interrupted (SIGINT or SIGTERM); nothing is left half-done that
        the next run does not finish or clean up
`

// usageError marks errors in the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode maps an error to its exit code: the one place where that is
// decided.
func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, context.Canceled):
		return exitInterrupted
	}
	if code, ok := lvmExitCode(err); ok {
		return code
	}
	switch {
	case errors.Is(err, archive.ErrVersion):
		return exitVersion
	case errors.Is(err, archive.ErrChecksum), errors.Is(err, archive.ErrTruncated),
		errors.Is(err, archive.ErrHeader), errors.Is(err, archive.ErrTrailingData):
		return exitCorrupt
	case errors.Is(err, restore.ErrMismatch), errors.Is(err, restore.ErrNotChain),
		errors.Is(err, restore.ErrVolumeMismatch), errors.Is(err, restore.ErrInterrupted):
		return exitChain
	case errors.Is(err, restore.ErrTargetTooSmall), errors.Is(err, restore.ErrTargetReadOnly),
		errors.Is(err, restore.ErrTargetBusy), errors.Is(err, restore.ErrTargetKind):
		return exitTarget
	case errors.Is(err, errVerify):
		return exitVerify
	case errors.Is(err, catalog.ErrLocked), errors.Is(err, catalog.ErrBusy):
		return exitLocked
	case errors.Is(err, catalog.ErrNoSpace), errors.Is(err, syscall.ENOSPC):
		return exitNoSpace
	}
	return exitError
}
