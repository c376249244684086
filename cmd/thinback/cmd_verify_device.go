package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/pointintime"
	"github.com/thinback/thinback/cmd/internal/verify"
)

// verify --device: a restored device or file proved equal to a snapshot
// without the snapshot's source (verify.Device compares them).

type verifyDeviceOptions struct {
	store, volume, at, snapshot string
	device                      string
	quiet                       bool
	unlock                      func(context.Context, catalog.Repository) (*archive.Key, error) // the store's key (storeKey)
}

func runVerifyDevice(ctx context.Context, e *env, o verifyDeviceOptions) error {
	start := time.Now()
	s, err := openReadStore(ctx, e, o.store, o.unlock)
	if err != nil {
		return err
	}
	defer closeStore(e, s)
	pit, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) {
		return selectSnapshot(tx, o.volume, o.at, o.snapshot)
	})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer pit.Close()
	r, err := verify.Device(ctx, pit, o.device, verify.DeviceOptions{
		Progress: func(size int64) verify.Progress { return newProgress(e.stderr, o.quiet, "verify", size) },
		Key:      s.Key,
	})
	if err != nil {
		return verifyDeviceError(s, pit, o.device, err)
	}
	took := r.Compared.Sub(start)
	for _, d := range r.Shown {
		what := "other data"
		if d.Zero {
			what = "zeroes"
		}
		fmt.Fprintf(e.stdout, "DIFF %s bytes %d to %d (%s, in blocks [%d, %d)): the device holds %s\n",
			o.device, d.First, d.Last, bytesHuman(d.Last-d.First+1), d.Off, d.End, what)
	}
	if r.Ranges > len(r.Shown) {
		fmt.Fprintf(e.stdout, "DIFF ... and %d more range(s)\n", r.Ranges-len(r.Shown))
	}
	switch {
	case r.Short():
		fmt.Fprintf(e.stdout, "SIZE %s is %d bytes, shorter than the volume's %d: bytes [%d, %d) are missing\n", o.device, r.DeviceSize, r.VolumeSize, r.DeviceSize, r.VolumeSize)
	case r.Long():
		fmt.Fprintf(e.stdout, "SIZE %s is %d bytes, longer than the volume's %d by %d bytes\n", o.device, r.DeviceSize, r.VolumeSize, r.DeviceSize-r.VolumeSize)
	case r.DeviceSize > r.VolumeSize:
		// A restore onto a larger block device leaves the rest as it was.
		fmt.Fprintf(e.stdout, "note %s is %d bytes larger than the volume: only its first %d bytes were compared\n", o.device, r.DeviceSize-r.VolumeSize, r.VolumeSize)
	}
	if !r.Equal() {
		detail := fmt.Sprintf("%d range(s) of blocks differ, %s", r.Ranges, bytesHuman(r.Differ))
		if len(r.Shown) > 0 {
			detail += fmt.Sprintf(", the first at byte %d", r.Shown[0].First)
		}
		if r.Short() || r.Long() {
			detail += ", and the size differs"
		}
		verdict(e, false, false, fmt.Sprintf("%s against %s", o.device, pit.Describe()), r.Size, took, ": "+detail)
		return fmt.Errorf("%s differs from %s of store %s: %w", o.device, pit.Describe(), o.store, errVerify)
	}
	verdict(e, o.quiet, true, fmt.Sprintf("%s is %s", o.device, pit.Describe()), r.Size, took, "")
	return nil
}

// verifyDeviceError words an error of verify.Device after the stage it
// failed in: one of the store's files says what to do about it
// (Damaged), one while comparing names the device and the snapshot.
func verifyDeviceError(s *readStore, pit *pointintime.PointInTime, device string, err error) error {
	var de *verify.DeviceError
	if !errors.As(err, &de) {
		return fmt.Errorf("verify: %w", err)
	}
	switch de.Stage {
	case verify.StageDigests:
		return fmt.Errorf("verify: %w", s.Damaged(de.Err))
	case verify.StageDevice:
		return fmt.Errorf("verify: %w", de.Err)
	default:
		return fmt.Errorf("verify %s against %s: %w", device, pit.Describe(), s.Damaged(de.Err))
	}
}
