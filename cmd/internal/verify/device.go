package verify

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/pointintime"
)

// Device compares a device or file with a point in time without the
// snapshot's source: it hashes the device's blocks and compares them with
// the digests the snapshot's chain carries, then reads the snapshot's
// data at the ends of the first differing ranges to find the exact bytes.

// MaxShownDiffs is how many differing ranges Device refines and returns;
// DeviceResult.Ranges counts all of them.
const MaxShownDiffs = 10

// DiffRange is a run of blocks of the device that differ from the
// snapshot: [Off, End), with First and Last the first and last byte in it
// that differ.
type DiffRange struct {
	Off, End    int64
	First, Last int64
	Zero        bool // the device holds zeroes there
}

// DeviceResult is what Device found.
type DeviceResult struct {
	DeviceSize int64 // the device's size
	VolumeSize int64 // the snapshot's volume size
	Block      bool  // the device is a block device
	Size       int64 // the bytes compared: the smaller of the two sizes

	Ranges int         // ranges of blocks that differ
	Differ int64       // bytes in them
	Shown  []DiffRange // the first MaxShownDiffs of them, refined

	// Compared is when the comparison of digests ended, before the
	// differing ranges were refined.
	Compared time.Time
}

// Short reports a device shorter than the volume.
func (r *DeviceResult) Short() bool { return r.DeviceSize < r.VolumeSize }

// Long reports a file longer than the volume. A block device larger than
// the volume is not: a restore onto it leaves the rest as it was.
func (r *DeviceResult) Long() bool { return r.DeviceSize > r.VolumeSize && !r.Block }

// Equal reports whether the device holds the point in time: no block
// differs and its size is the volume's (or, for a block device, larger).
func (r *DeviceResult) Equal() bool { return r.Ranges == 0 && !r.Short() && !r.Long() }

// Progress is told how many bytes of the device were compared.
type Progress interface {
	Add(n int64)
	Done()
}

// DeviceOptions are Device's options.
type DeviceOptions struct {
	// Progress, if set, is called once the size to compare is known; the
	// Progress it returns is told of the bytes compared, and Done when
	// the comparison of digests ends.
	Progress func(size int64) Progress
	// Key reads a chain of files encrypted under it: its digests are
	// keyed, and the device's blocks are hashed under the key to compare
	// them. Without it an encrypted chain fails with
	// archive.ErrKeyRequired (in StageCompare: the headers are read
	// without the key, the first record is not).
	Key *archive.Key
}

// DeviceStage is the stage in which Device failed.
type DeviceStage int

const (
	// StageDigests: opening the digests of the snapshot's chain, from the
	// store's delta files.
	StageDigests DeviceStage = iota
	// StageDevice: opening the device and finding its size.
	StageDevice
	// StageCompare: reading the device's blocks or the snapshot's data.
	StageCompare
)

// A DeviceError is an error of Device with the stage it failed in, by
// which a command words its message.
type DeviceError struct {
	Stage DeviceStage
	Err   error
}

func (e *DeviceError) Error() string { return e.Err.Error() }
func (e *DeviceError) Unwrap() error { return e.Err }

// Device compares the device or file at path with the point in time pit,
// block by block. Its errors are *DeviceError. It reads pit's files from
// their start (it rewinds them once) and never writes to the device.
func Device(ctx context.Context, pit *pointintime.PointInTime, path string, opts DeviceOptions) (*DeviceResult, error) {
	fail := func(stage DeviceStage, err error) (*DeviceResult, error) {
		return nil, &DeviceError{Stage: stage, Err: err}
	}
	cd, err := archive.OpenChainDigests(pit.Inputs, archive.WithKey(opts.Key))
	if err != nil {
		return fail(StageDigests, err)
	}
	dev, err := archive.OpenFile(path) // a FIFO would block the open
	if err != nil {
		return fail(StageDevice, err)
	}
	defer dev.Close()
	r := &DeviceResult{VolumeSize: cd.Header().VolumeSize}
	if r.DeviceSize, r.Block, err = archive.FileSize(dev); err != nil {
		return fail(StageDevice, err)
	}
	r.Size = min(r.DeviceSize, r.VolumeSize)
	var prog Progress = noProgress{}
	if opts.Progress != nil {
		prog = opts.Progress(r.Size)
	}
	defer prog.Done()
	ds, err := archive.NewDigestSource(dev, r.Size, cd.BlockSize(), cd, archive.DigestSourceOptions{Progress: prog.Add, Key: opts.Key})
	if err != nil {
		return fail(StageDevice, err)
	}
	defer ds.Close()
	if err := r.collect(ds); err != nil {
		return fail(StageCompare, err)
	}
	prog.Done()
	r.Compared = time.Now()

	// Find the exact bytes that differ at the ends of the ranges shown,
	// from the snapshot's data: the digests say which blocks differ.
	if len(r.Shown) > 0 {
		if err := refineDiffs(ctx, pit, dev, r.Size, r.Shown, cd.BlockSize(), opts.Key); err != nil {
			return fail(StageCompare, err)
		}
	}
	return r, nil
}

// collect reads the runs of differing blocks ds finds into r: it counts
// them and keeps the first MaxShownDiffs, adjacent runs joined into one
// range.
func (r *DeviceResult) collect(ds *archive.DigestSource) error {
	var lastEnd int64 = -1
	for {
		x, err := ds.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		r.Differ += x.Length
		zero := x.Kind == archive.KindZero
		if x.Offset == lastEnd {
			// One range, whatever the device holds in each part of it.
			if n := len(r.Shown); n > 0 && r.Shown[n-1].End == x.Offset {
				r.Shown[n-1].End = x.End()
				r.Shown[n-1].Zero = r.Shown[n-1].Zero && zero
			}
			lastEnd = x.End()
			continue
		}
		r.Ranges++
		if len(r.Shown) < MaxShownDiffs {
			r.Shown = append(r.Shown, DiffRange{Off: x.Offset, End: x.End(), First: -1, Last: -1, Zero: zero})
		}
		lastEnd = x.End()
	}
}

type noProgress struct{}

func (noProgress) Add(int64) {}
func (noProgress) Done()     {}

// refineDiffs finds, for each range of differing blocks, the first byte
// of its first block and the last byte of its last block that differ
// from the snapshot, read through a SnapshotReader of the same files. A
// block that differs only in length (the device ends inside it) keeps its
// bounds.
func refineDiffs(ctx context.Context, pit *pointintime.PointInTime, dev *os.File, size int64, ranges []DiffRange, bs int64, key *archive.Key) error {
	if err := pit.Rewind(); err != nil {
		return err
	}
	sr, err := archive.OpenSnapshot(ctx, pit.Inputs, archive.SnapshotOptions{ReadAhead: -1, Key: key})
	if err != nil {
		return err
	}
	defer sr.Close()
	want, got := make([]byte, bs), make([]byte, bs)
	read := func(off int64) (int, error) {
		n := int(min(bs, size-off))
		if _, err := sr.ReadAt(want[:n], off); err != nil && err != io.EOF {
			return 0, err
		}
		if k, err := dev.ReadAt(got[:n], off); k < n {
			return 0, fmt.Errorf("%s: reading %d bytes at %d: %v", dev.Name(), n, off, err)
		}
		return n, nil
	}
	for i := range ranges {
		d := &ranges[i]
		n, err := read(d.Off)
		if err != nil {
			return err
		}
		d.First = d.Off
		for k := 0; k < n; k++ {
			if want[k] != got[k] {
				d.First = d.Off + int64(k)
				break
			}
		}
		lastBlock := (d.End - 1) / bs * bs
		if n, err = read(lastBlock); err != nil {
			return err
		}
		d.Last = d.End - 1
		for k := n - 1; k >= 0; k-- {
			if want[k] != got[k] {
				d.Last = lastBlock + int64(k)
				break
			}
		}
	}
	return nil
}
