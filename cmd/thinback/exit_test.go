package main

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
)

// TestExitCodes pins the documented exit codes: scripts depend on them.
func TestExitCodes(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("apply: x.tbk: %w", err) }
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("anything"), 1},
		{usageError{"bad flag"}, 2},
		{wrap(&archive.FormatError{Err: archive.ErrChecksum}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrTruncated}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrHeader}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrTrailingData}), 3},
		{wrap(&archive.FormatError{Err: archive.ErrVersion}), 4},
		{wrap(restore.ErrMismatch), 5},
		{wrap(restore.ErrNotChain), 5},
		{wrap(restore.ErrVolumeMismatch), 5},
		{wrap(restore.ErrInterrupted), 5},
		{wrap(restore.ErrTargetTooSmall), 6},
		{wrap(restore.ErrTargetReadOnly), 6},
		{wrap(restore.ErrTargetBusy), 6},
		{wrap(lvmthin.ErrNotFound), 7},
		{wrap(lvmthin.ErrNotThin), 7},
		{wrap(lvmthin.ErrPoolFailed), 7},
		{wrap(lvmthin.ErrStaleMetadataSnap), 8},
		{wrap(lvmthin.ErrMetadataSnapBusy), 8},
		{wrap(catalog.ErrLocked), 9},
		{wrap(catalog.ErrBusy), 9},
		{wrap(lvmthin.ErrLocked), 9},
		{wrap(errVerify), 10},
		{wrap(syscall.ENOSPC), 11},
		{wrap(catalog.ErrNoSpace), 11},
		{wrap(context.Canceled), 130},
	} {
		if got := exitCode(tc.err); got != tc.want {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
