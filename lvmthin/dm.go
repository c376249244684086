package lvmthin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/thinback/thinback/lvmthin/internal/dmioctl"
)

// DMEnv names the environment variable that chooses how this package
// talks to device-mapper: unset or "ioctl", through the ioctls on
// /dev/mapper/control; "dmsetup", through dmsetup processes, as thinback
// did before (the tests compare the two on the same pools, and it is a
// way out should a kernel answer an ioctl in a way we misread).
const DMEnv = "THINBACK_DM"

// ErrDMReply: device-mapper answered an ioctl with a reply this package
// cannot read (a malformed buffer, or one larger than it accepts). The
// error names the ioctl and the device; setting THINBACK_DM=dmsetup asks
// the same question through dmsetup instead.
var ErrDMReply = dmioctl.ErrBadReply

// useDMSetup reports whether device-mapper is asked through dmsetup.
func useDMSetup() bool { return os.Getenv(DMEnv) == "dmsetup" }

// ioctlName is what CommandStats.ByProgram counts the ioctls under.
const ioctlName = "dm-ioctl"

// dmStatus returns device name's status as `dmsetup status NAME` prints
// it: one "START LENGTH TYPE WORDS..." line per target.
func dmStatus(ctx context.Context, name string) (string, error) {
	if useDMSetup() {
		out, err := run(ctx, nil, programs.dmsetup, "status", name)
		return string(out), err
	}
	return dmTargets(ctx, name, "status", dmioctl.Status)
}

// DMTable returns the live table of the device-mapper device name as
// `dmsetup table NAME` prints it, one "START LENGTH TYPE PARAMS" line
// per target.
func DMTable(ctx context.Context, name string) (string, error) {
	if useDMSetup() {
		out, err := run(ctx, nil, programs.dmsetup, "table", name)
		return string(out), err
	}
	return dmTargets(ctx, name, "table", dmioctl.Table)
}

func dmTargets(ctx context.Context, name, what string, query func(string) ([]dmioctl.Target, error)) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("device-mapper %s of %s: stopped: %w", what, name, err)
	}
	started := time.Now()
	targets, err := query(name)
	count(ctx, ioctlName, time.Since(started))
	if err != nil {
		return "", dmIoctlError(err, "")
	}
	var b strings.Builder
	for _, t := range targets {
		b.WriteString(t.String())
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// dmMessage sends a message to sector 0's target of device name
// (`dmsetup message NAME 0 MSG`). Callers that must not be interrupted
// pass a context without cancellation; an ioctl, once made, is never
// interrupted anyway.
func dmMessage(ctx context.Context, name, msg string) error {
	if useDMSetup() {
		_, err := run(ctx, nil, programs.dmsetup, "message", name, "0", msg)
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("device-mapper message %s to %s: stopped: %w", msg, name, err)
	}
	started := time.Now()
	_, err := dmioctl.Message(name, 0, msg)
	count(ctx, ioctlName, time.Since(started))
	if err != nil {
		return dmIoctlError(err, msg)
	}
	return nil
}

// dmIoctlError classifies a failed ioctl as classify does dmsetup's
// messages for the same errno, so that callers see the same sentinels
// whichever path asked.
func dmIoctlError(err error, msg string) error {
	var kind error
	switch {
	case errors.Is(err, syscall.ENXIO):
		kind = ErrNotFound
	case msg == "reserve_metadata_snap" && errors.Is(err, syscall.EBUSY):
		kind = ErrMetadataSnapBusy
	case msg == "release_metadata_snap" && errors.Is(err, syscall.EINVAL):
		kind = errNoMetadataSnap
	case msg != "" && errors.Is(err, syscall.EOPNOTSUPP):
		kind = errMessageRefused
	}
	if kind == nil {
		return err
	}
	return &dmError{err: err, kind: kind}
}

// dmError is a classified ioctl error: its text is the ioctl's (naming
// the device), it matches the sentinel and the errno.
type dmError struct {
	err  error
	kind error
}

func (e *dmError) Error() string   { return e.err.Error() }
func (e *dmError) Unwrap() []error { return []error{e.kind, e.err} }
