// Command classicbench measures a send of a classic (thick) LVM snapshot:
// an incremental from an older snapshot's exception table, or a full read
// of the whole snapshot. It runs as root where LVM and dm-snapshot are,
// such as a scripts/uml/run guest; scripts/bench-classic.sh drives it.
//
//	classicbench -snap VG/S1 [-base VG/S0] [-workers N]
//
// It opens the source with lvmthin.OpenClassic, sends it through
// archive.Send into a writer that discards the delta file, and prints one
// line: what was sent, the exceptions read, the time to read the tables,
// the bytes read from the snapshot and the time and rate of the send, and
// the peak resident memory of the process.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin"
)

func main() {
	snapName := flag.String("snap", "", "classic snapshot to send (VG/LV)")
	baseName := flag.String("base", "", "older classic snapshot of the same origin (VG/LV); none for a full")
	workers := flag.Int("workers", 0, "send workers (0: one per CPU)")
	flag.Parse()
	if err := run(*snapName, *baseName, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "classicbench:", err)
		os.Exit(1)
	}
}

// counting counts the bytes the send reads from the snapshot.
type counting struct {
	archive.Source
	n atomic.Int64
}

func (c *counting) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.Source.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

// countWriter counts the bytes of the delta file.
type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func run(snapName, baseName string, workers int) error {
	ctx := context.Background()
	sn, err := lvmthin.ParseName(snapName)
	if err != nil {
		return err
	}
	snap, err := lvmthin.Lookup(ctx, sn)
	if err != nil {
		return err
	}
	opts := lvmthin.ClassicOptions{Snap: snap}
	if baseName != "" {
		bn, err := lvmthin.ParseName(baseName)
		if err != nil {
			return err
		}
		if opts.Base, err = lvmthin.Lookup(ctx, bn); err != nil {
			return err
		}
	}
	start := time.Now()
	c, err := lvmthin.OpenClassic(ctx, opts)
	if err != nil {
		return err
	}
	defer c.Close()
	opened := time.Since(start)
	h := &archive.Header{BlockSize: 4096, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: snap.VG + "/" + snap.Origin, VolumeSize: c.Size(), Tool: "classicbench",
		Snapshot: archive.Snapshot{ID: archive.DeriveID("lvm", snap.UUID), Name: snapName, Time: snap.Time}}
	if opts.Base != nil {
		h.Parent = archive.Snapshot{ID: archive.DeriveID("lvm", opts.Base.UUID), Name: baseName, Time: opts.Base.Time}
		h.ParentSize = c.Size()
	}
	out := &countWriter{}
	w := archive.NewWriter(out)
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	src := &counting{Source: c}
	sendStart := time.Now()
	if err := archive.Send(ctx, w, src, archive.SendOptions{Workers: workers}); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	took := time.Since(sendStart)
	st := c.Stats()
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	fmt.Printf("%s: volume %d MiB, %d+%d exceptions, tables read in %v (open %v), read %d MiB (%.2f%% of the volume) "+
		"in %v = %.0f MB/s, delta file %d MiB, peak RSS %d MiB\n",
		st.Tool, c.Size()>>20, st.BaseExceptions, st.SnapExceptions, st.ToolTime.Round(time.Microsecond),
		opened.Round(time.Millisecond), src.n.Load()>>20, 100*float64(src.n.Load())/float64(c.Size()),
		took.Round(time.Millisecond), float64(src.n.Load())/took.Seconds()/1e6, out.n>>20, ru.Maxrss>>10)
	return nil
}
