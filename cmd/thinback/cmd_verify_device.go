package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/pointintime"
)

// verify --device: a restored device or file proved equal to a snapshot
// without the snapshot's source, by hashing its blocks and comparing them
// with the digests the snapshot's chain carries.

type verifyDeviceOptions struct {
	store, volume, at, snapshot string
	device                      string
	quiet                       bool
}

// maxShownDiffs is how many differing ranges verify --device prints; the
// count covers all of them.
const maxShownDiffs = 10

// diffRange is a run of blocks of the device that differ from the
// snapshot; first and last are the exact bytes, once refined.
type diffRange struct {
	off, end    int64
	first, last int64 // the first and last byte that differ; -1 until known
	zero        bool  // the device holds zeroes there
}

func runVerifyDevice(ctx context.Context, e *env, o verifyDeviceOptions) error {
	start := time.Now()
	s, err := openReadStore(o.store)
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
	cd, err := archive.OpenChainDigests(pit.Inputs)
	if err != nil {
		return fmt.Errorf("verify: %w", s.Damaged(err))
	}
	dev, err := archive.OpenFile(o.device) // a FIFO would block the open
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer dev.Close()
	devSize, block, err := archive.FileSize(dev)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	volSize := cd.Header().VolumeSize
	size := min(devSize, volSize)
	prog := newProgress(e.stderr, o.quiet, "verify", size)
	defer prog.Done()
	ds, err := archive.NewDigestSource(dev, size, cd.BlockSize(), cd, archive.DigestSourceOptions{Progress: prog.Add})
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	defer ds.Close()
	var (
		shown   []diffRange
		ranges  int
		differ  int64
		lastEnd int64 = -1
	)
	for {
		x, err := ds.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("verify %s against %s: %w", o.device, pit.Describe(), s.Damaged(err))
		}
		differ += x.Length
		zero := x.Kind == archive.KindZero
		if x.Offset == lastEnd {
			// One range, whatever the device holds in each part of it.
			if n := len(shown); n > 0 && shown[n-1].end == x.Offset {
				shown[n-1].end = x.End()
				shown[n-1].zero = shown[n-1].zero && zero
			}
			lastEnd = x.End()
			continue
		}
		ranges++
		if len(shown) < maxShownDiffs {
			shown = append(shown, diffRange{off: x.Offset, end: x.End(), first: -1, last: -1, zero: zero})
		}
		lastEnd = x.End()
	}
	prog.Done()
	took := time.Since(start)

	// Find the exact bytes that differ at the ends of the ranges shown,
	// from the snapshot's data: the digests say which blocks differ.
	if len(shown) > 0 {
		if err := refineDiffs(ctx, pit, dev, size, shown, cd.BlockSize()); err != nil {
			return fmt.Errorf("verify %s against %s: %w", o.device, pit.Describe(), s.Damaged(err))
		}
	}
	bad := ranges > 0
	for _, d := range shown {
		what := "other data"
		if d.zero {
			what = "zeroes"
		}
		fmt.Fprintf(e.stdout, "DIFF %s bytes %d to %d (%s, in blocks [%d, %d)): the device holds %s\n",
			o.device, d.first, d.last, bytesHuman(d.last-d.first+1), d.off, d.end, what)
	}
	if ranges > len(shown) {
		fmt.Fprintf(e.stdout, "DIFF ... and %d more range(s)\n", ranges-len(shown))
	}
	switch {
	case devSize < volSize:
		bad = true
		fmt.Fprintf(e.stdout, "SIZE %s is %d bytes, shorter than the volume's %d: bytes [%d, %d) are missing\n", o.device, devSize, volSize, devSize, volSize)
	case devSize > volSize && !block:
		bad = true
		fmt.Fprintf(e.stdout, "SIZE %s is %d bytes, longer than the volume's %d by %d bytes\n", o.device, devSize, volSize, devSize-volSize)
	case devSize > volSize:
		// A restore onto a larger block device leaves the rest as it was.
		fmt.Fprintf(e.stdout, "note %s is %d bytes larger than the volume: only its first %d bytes were compared\n", o.device, devSize-volSize, volSize)
	}
	if bad {
		detail := fmt.Sprintf("%d range(s) of blocks differ, %s", ranges, bytesHuman(differ))
		if len(shown) > 0 {
			detail += fmt.Sprintf(", the first at byte %d", shown[0].first)
		}
		if devSize != volSize && (devSize < volSize || !block) {
			detail += ", and the size differs"
		}
		verdict(e, false, false, fmt.Sprintf("%s against %s", o.device, pit.Describe()), size, took, ": "+detail)
		return fmt.Errorf("%s differs from %s of store %s: %w", o.device, pit.Describe(), o.store, errVerify)
	}
	verdict(e, o.quiet, true, fmt.Sprintf("%s is %s", o.device, pit.Describe()), size, took, "")
	return nil
}

// refineDiffs finds, for each range of differing blocks, the first byte
// of its first block and the last byte of its last block that differ
// from the snapshot, read through a SnapshotReader of the same files. A
// block that differs only in length (the device ends inside it) keeps its
// bounds.
func refineDiffs(ctx context.Context, pit *pointintime.PointInTime, dev *os.File, size int64, ranges []diffRange, bs int64) error {
	if err := pit.Rewind(); err != nil {
		return err
	}
	sr, err := archive.OpenSnapshot(ctx, pit.Inputs, archive.SnapshotOptions{ReadAhead: -1})
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
		n, err := read(d.off)
		if err != nil {
			return err
		}
		d.first = d.off
		for k := 0; k < n; k++ {
			if want[k] != got[k] {
				d.first = d.off + int64(k)
				break
			}
		}
		lastBlock := (d.end - 1) / bs * bs
		if n, err = read(lastBlock); err != nil {
			return err
		}
		d.last = d.end - 1
		for k := n - 1; k >= 0; k-- {
			if want[k] != got[k] {
				d.last = lastBlock + int64(k)
				break
			}
		}
	}
	return nil
}
