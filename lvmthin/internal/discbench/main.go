// Command discbench measures thinback's delta discovery against the thin
// tool it runs, on pool metadata built with thin_restore (no kernel, no
// root needed). scripts/bench-discovery.sh drives it.
//
//	discbench gen -mappings N -changed F [-seed S] -o pool.xml
//	discbench run -meta meta.bin [-reps R]
//
// gen writes thin_restore XML for two thin devices of N mappings each that
// share all but a fraction F of them (rewritten blocks spread at random),
// as a snapshot and its successor look. run times, side by side and
// alternating, thin_delta alone (output to /dev/null) and lvmthin.Discover
// (thin_delta + streaming parse + extent building + spool), and the same
// for a full (thin_dump --dev-id), then reports the peak resident memory
// of this process (the parsing) and of the largest tool run.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"time"

	"github.com/thinback/thinback/lvmthin"
)

// blockSectors is the data block size of the generated pool (64 KiB).
const blockSectors = 128

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: discbench gen|run [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "gen":
		err = gen(os.Args[2:])
	case "run":
		err = runBench(os.Args[2:])
	case "gen1":
		err = gen1(os.Args[2:])
	case "write":
		err = writeBlocks(os.Args[2:])
	case "shared":
		err = sharedBench(os.Args[2:])
	case "measure":
		err = measure(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "discbench:", err)
		os.Exit(1)
	}
}

func gen(args []string) error {
	fs := flag.NewFlagSet("gen", flag.ExitOnError)
	n := fs.Int("mappings", 3000000, "mappings per device")
	changed := fs.Float64("changed", 0.01, "fraction of blocks rewritten in the newer device")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("o", "pool.xml", "output file")
	_ = fs.Parse(args)

	r := rand.New(rand.NewPCG(*seed, *seed))
	// Which blocks the newer device rewrote, in ascending order.
	nChanged := int(float64(*n) * *changed)
	set := make(map[int]bool, nChanged)
	for len(set) < nChanged {
		set[r.IntN(*n)] = true
	}
	changedBlocks := make([]int, 0, nChanged)
	for b := range set {
		changedBlocks = append(changedBlocks, b)
	}
	slices.Sort(changedBlocks)

	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	fmt.Fprintf(w, "<superblock uuid=\"\" time=\"2\" transaction=\"2\" flags=\"0\" version=\"2\" data_block_size=\"%d\" nr_data_blocks=\"%d\">\n",
		blockSectors, *n+nChanged+1024)
	// Device 1: blocks 0..n-1 on data blocks 0..n-1.
	fmt.Fprintf(w, "  <device dev_id=\"1\" mapped_blocks=\"%d\" transaction=\"0\" creation_time=\"1\" snap_time=\"2\">\n", *n)
	fmt.Fprintf(w, "    <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"%d\" time=\"0\"/>\n", *n)
	w.WriteString("  </device>\n")
	// Device 2: the same, except the rewritten blocks, which moved to
	// fresh data blocks past n.
	fmt.Fprintf(w, "  <device dev_id=\"2\" mapped_blocks=\"%d\" transaction=\"1\" creation_time=\"2\" snap_time=\"2\">\n", *n)
	pos := 0
	for i, b := range changedBlocks {
		if b > pos {
			fmt.Fprintf(w, "    <range_mapping origin_begin=\"%d\" data_begin=\"%d\" length=\"%d\" time=\"0\"/>\n", pos, pos, b-pos)
		}
		fmt.Fprintf(w, "    <single_mapping origin_block=\"%d\" data_block=\"%d\" time=\"1\"/>\n", b, *n+i)
		pos = b + 1
	}
	if pos < *n {
		fmt.Fprintf(w, "    <range_mapping origin_begin=\"%d\" data_begin=\"%d\" length=\"%d\" time=\"0\"/>\n", pos, pos, *n-pos)
	}
	w.WriteString("  </device>\n</superblock>\n")
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Printf("generated %s: 2 devices of %d mappings, %d rewritten (%.2f%%)\n", *out, *n, nChanged, 100**changed)
	return f.Close()
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	meta := fs.String("meta", "meta.bin", "metadata file written by thin_restore")
	reps := fs.Int("reps", 3, "measured runs of each")
	_ = fs.Parse(args)

	details, err := lvmthin.ReadDeviceDetails(context.Background(), *meta, false, 1, 2)
	if err != nil {
		return err
	}
	// A volume exactly as large as the mapped blocks.
	size := int64(details[1].MappedBlocks) * blockSectors * 512
	tmp, err := os.MkdirTemp("", "discbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	for _, full := range []bool{false, true} {
		tool := []string{"thin_delta", "--snap1", "1", "--snap2", "2", *meta}
		opts := lvmthin.DiscoverOptions{Discovery: lvmthin.DiscoverTools, Metadata: *meta, Snap: lvmthin.ThinDevice{ID: 2, Size: size},
			Base: &lvmthin.ThinDevice{ID: 1, Size: size}, BlockSize: blockSectors * 512, TempDir: tmp}
		name := "incremental"
		if full {
			tool = []string{"thin_dump", "--dev-id", "2", *meta}
			opts.Base = nil
			name = "full"
		}
		var alone, whole, native []time.Duration
		var st, nst lvmthin.DiscoverStats
		for i := 0; i <= *reps; i++ { // run 0 warms the page cache
			t0 := time.Now()
			cmd := exec.Command(tool[0], tool[1:]...)
			if cmd.Stdout, err = os.OpenFile(os.DevNull, os.O_WRONLY, 0); err != nil {
				return err
			}
			if err := cmd.Run(); err != nil {
				return fmt.Errorf("%v: %w", tool, err)
			}
			d1 := time.Since(t0)
			t0 = time.Now()
			x, err := lvmthin.Discover(context.Background(), opts)
			if err != nil {
				return err
			}
			d2 := time.Since(t0)
			st = x.Stats()
			if err := x.Close(); err != nil {
				return err
			}
			nopts := opts
			nopts.Discovery = lvmthin.DiscoverNative
			t0 = time.Now()
			if x, err = lvmthin.Discover(context.Background(), nopts); err != nil {
				return err
			}
			d3 := time.Since(t0)
			nst = x.Stats()
			if err := x.Close(); err != nil {
				return err
			}
			if i > 0 {
				alone, whole, native = append(alone, d1), append(whole, d2), append(native, d3)
			}
		}
		slices.Sort(alone)
		slices.Sort(whole)
		slices.Sort(native)
		ma, mw := alone[len(alone)/2], whole[len(whole)/2]
		fmt.Printf("%s: %d ranges from %s -> %d extents (%d data, %d zero; %.1f MiB data), spool %d bytes\n",
			name, st.Ranges, st.Tool, st.Extents, st.DataExtents, st.ZeroExtents, float64(st.DataBytes)/(1<<20), st.SpoolBytes)
		fmt.Printf("  %-10s alone:         median %8.3fs  min %8.3fs  (%d runs)\n", st.Tool, ma.Seconds(), alone[0].Seconds(), len(alone))
		// The minimum is the run least disturbed by other work on the
		// machine; the median says what to expect.
		fmt.Printf("  whole discovery:          median %8.3fs  min %8.3fs  overhead %+.1f%% (median), %+.1f%% (min)\n",
			mw.Seconds(), whole[0].Seconds(), 100*(mw.Seconds()-ma.Seconds())/ma.Seconds(),
			100*(whole[0].Seconds()-alone[0].Seconds())/alone[0].Seconds())
		fmt.Printf("  native discovery:         median %8.3fs  min %8.3fs  (%.1f MiB of metadata read; no node shared: it reads both trees)\n",
			native[len(native)/2].Seconds(), native[0].Seconds(), float64(nst.MetadataBytes)/(1<<20))
		if nst.Extents != st.Extents || nst.DataBytes != st.DataBytes || nst.ZeroBytes != st.ZeroBytes {
			return fmt.Errorf("%s: native discovery found %d extents (%d data, %d zero bytes), the tools %d (%d, %d)",
				name, nst.Extents, nst.DataBytes, nst.ZeroBytes, st.Extents, st.DataBytes, st.ZeroBytes)
		}
	}
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return err
	}
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err != nil {
		return err
	}
	fmt.Printf("peak RSS: this process (parsing, extents, spool) %.1f MiB; largest tool run %.1f MiB\n",
		float64(self.Maxrss)/1024, float64(children.Maxrss)/1024)
	return nil
}
