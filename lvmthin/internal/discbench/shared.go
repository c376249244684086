package main

// Kernel-style shared metadata at scale (scripts/bench-thinmeta.sh):
//
//	discbench gen1 -mappings N [-block-sectors S] [-slack F] -o pool.xml
//	discbench write -dev DEV -blocks N -block-bytes B -fraction F [-clustered] [-seed S]   (in the guest)
//	discbench shared -meta FILE -blocks N -block-bytes B [-reps R]
//	discbench measure -kind diff|full -meta DEV -blocks N -block-bytes B
//
// gen1 writes thin_restore XML of one thin device mapping N blocks. write
// runs in the User-Mode Linux guest, after the kernel made device 2 a
// snapshot of device 1: it writes to device 1 a fraction F of its blocks,
// at random or in runs of 1 to 16 MiB, so that the kernel shares every
// untouched subtree between the two, as it does for real. shared then
// attaches the metadata file read-only to a loop device and times, side by
// side and alternating, thin_delta -m --snap1 2 --snap2 1 against
// thinback's native discovery of the same delta (Discover, with extent
// building and spool), and thin_dump -m --dev-id 1 against the native
// full, each run in a child process whose peak RSS and block input the
// kernel reports (both read the loop device with O_DIRECT).

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"github.com/thinback/thinback/lvmthin"
)

func gen1(args []string) error {
	fs := flag.NewFlagSet("gen1", flag.ExitOnError)
	n := fs.Int64("mappings", 1<<25, "mappings of the device")
	sectors := fs.Int("block-sectors", blockSectors, "data block size in 512-byte sectors")
	slack := fs.Float64("slack", 0.03, "free data blocks, as a fraction of the mappings, for the copies the writes make")
	out := fs.String("o", "pool.xml", "output file")
	_ = fs.Parse(args)
	f, err := os.Create(*out)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	dataBlocks := *n + int64(float64(*n)**slack) + 4096
	fmt.Fprintf(w, "<superblock uuid=\"\" time=\"0\" transaction=\"1\" flags=\"0\" version=\"2\" data_block_size=\"%d\" nr_data_blocks=\"%d\">\n",
		*sectors, dataBlocks)
	fmt.Fprintf(w, "  <device dev_id=\"1\" mapped_blocks=\"%d\" transaction=\"0\" creation_time=\"0\" snap_time=\"0\">\n", *n)
	fmt.Fprintf(w, "    <range_mapping origin_begin=\"0\" data_begin=\"0\" length=\"%d\" time=\"0\"/>\n", *n)
	w.WriteString("  </device>\n</superblock>\n")
	if err := w.Flush(); err != nil {
		return err
	}
	fmt.Println(dataBlocks) // the pool's data blocks, for the table
	return f.Close()
}

// alignedBuf is n bytes aligned for O_DIRECT.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[skip : skip+n]
}

func writeBlocks(args []string) error {
	fs := flag.NewFlagSet("write", flag.ExitOnError)
	dev := fs.String("dev", "", "thin device to write")
	blocks := fs.Int64("blocks", 0, "blocks of the device")
	bb := fs.Int64("block-bytes", blockSectors*512, "data block size in bytes")
	fraction := fs.Float64("fraction", 0.001, "fraction of the blocks to write")
	clustered := fs.Bool("clustered", false, "write runs of 1 to 16 MiB instead of single blocks")
	seed := fs.Uint64("seed", 1, "random seed")
	_ = fs.Parse(args)
	f, err := os.OpenFile(*dev, os.O_WRONLY|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	r := rand.New(rand.NewPCG(*seed, *seed))
	want := int64(float64(*blocks) * *fraction)
	written := make([]uint64, (*blocks+63)/64)
	isSet := func(b int64) bool { return written[b/64]&(1<<(b%64)) != 0 }
	set := func(b int64) { written[b/64] |= 1 << (b % 64) }
	buf := alignedBuf(16 << 20)
	start := time.Now()
	var done, writes int64
	for done < want {
		if !*clustered {
			b := r.Int64N(*blocks)
			if isSet(b) {
				continue
			}
			set(b)
			// 4 KiB into a block shared with the snapshot: the kernel
			// copies the block and the path of nodes to its leaf.
			if _, err := f.WriteAt(buf[:4096], b**bb); err != nil {
				return err
			}
			done++
			writes++
			continue
		}
		n := max(1, ((1<<20)+r.Int64N(15<<20))/(*bb))
		n = min(n, want-done, *blocks)
		b := r.Int64N(*blocks - n + 1)
		fresh := int64(0)
		for i := b; i < b+n; i++ {
			if !isSet(i) {
				set(i)
				fresh++
			}
		}
		if _, err := f.WriteAt(buf[:n**bb], b**bb); err != nil {
			return err
		}
		done += fresh
		writes++
	}
	if err := f.Sync(); err != nil {
		return err
	}
	fmt.Printf("wrote %d of %d blocks (%.3f%%) in %d writes in %v\n", done, *blocks, 100*float64(done)/float64(*blocks), writes,
		time.Since(start).Round(time.Millisecond))
	return nil
}

// measure is a measured child: one native discovery, its stats on stdout.
func measure(args []string) error {
	fs := flag.NewFlagSet("measure", flag.ExitOnError)
	kind := fs.String("kind", "diff", "diff or full")
	meta := fs.String("meta", "", "metadata device or file, holding a metadata snapshot")
	blocks := fs.Int64("blocks", 0, "blocks of the volume")
	bb := fs.Int64("block-bytes", blockSectors*512, "data block size in bytes")
	disc := fs.String("discovery", "native", "native or tools")
	tmp := fs.String("tmp", "", "directory of the extent spool")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	_ = fs.Parse(args)
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	d, err := lvmthin.ParseDiscovery(*disc)
	if err != nil {
		return err
	}
	size := *blocks * *bb
	opts := lvmthin.DiscoverOptions{Discovery: d, Metadata: *meta, MetadataSnap: true, BlockSize: *bb,
		Snap: lvmthin.ThinDevice{ID: 1, Size: size}, TempDir: *tmp}
	if *kind == "diff" {
		opts.Base = &lvmthin.ThinDevice{ID: 2, Size: size}
	}
	x, err := lvmthin.Discover(context.Background(), opts)
	if err != nil {
		return err
	}
	st := x.Stats()
	fmt.Printf("metadata_bytes=%d extents=%d data_bytes=%d zero_bytes=%d\n", st.MetadataBytes, st.Extents, st.DataBytes, st.ZeroBytes)
	return x.Close()
}

type run struct {
	wall   time.Duration
	rss    int64 // KiB
	inblk  int64 // bytes the kernel counted as block input
	output string
}

func timed(name string, args ...string) (run, error) {
	cmd := exec.Command(name, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if strings.HasPrefix(name, "thin_") {
		cmd.Stdout = nil // to /dev/null: the tool alone
	}
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	if err != nil {
		return run{}, fmt.Errorf("%s %v: %w: %s", name, args, err, stderr.String())
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return run{wall: wall, rss: ru.Maxrss, inblk: ru.Inblock * 512, output: strings.TrimSpace(out.String())}, nil
}

func stat(line, key string) int64 {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return -1
}

func sharedBench(args []string) error {
	fs := flag.NewFlagSet("shared", flag.ExitOnError)
	meta := fs.String("meta", "", "metadata file holding a metadata snapshot (device 2: snapshot of device 1 before the writes)")
	blocks := fs.Int64("blocks", 0, "blocks of the volume")
	bb := fs.Int64("block-bytes", blockSectors*512, "data block size in bytes")
	reps := fs.Int("reps", 3, "measured runs of each")
	cold := fs.Bool("cold", false, "attach the loop device with direct I/O, so that every read reaches the disk (the metadata is never in the host's page cache)")
	_ = fs.Parse(args)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	losetup := []string{"-r", "-f", "--show", *meta}
	if *cold {
		losetup = append([]string{"--direct-io=on"}, losetup...)
	}
	out, err := exec.Command("losetup", losetup...).Output()
	if err != nil {
		return fmt.Errorf("losetup %s: %w", strings.Join(losetup, " "), err)
	}
	if *cold {
		// losetup falls back to buffered I/O where the file system
		// refuses direct I/O: then the run would not be cold.
		name := strings.TrimPrefix(strings.TrimSpace(string(out)), "/dev/")
		dio, err := os.ReadFile("/sys/block/" + name + "/loop/dio")
		if err != nil || strings.TrimSpace(string(dio)) != "1" {
			exec.Command("losetup", "-d", "/dev/"+name).Run()
			return fmt.Errorf("losetup --direct-io=on %s: the loop device does not use direct I/O (%q, %v)", *meta, dio, err)
		}
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()
	tmp, err := os.MkdirTemp("", "discbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	common := []string{"-meta", dev, "-blocks", strconv.FormatInt(*blocks, 10), "-block-bytes", strconv.FormatInt(*bb, 10), "-tmp", tmp}

	for _, kind := range []string{"diff", "full"} {
		// The same extents both ways, first.
		tools, err := timed(self, append([]string{"measure", "-kind", kind, "-discovery", "tools"}, common...)...)
		if err != nil {
			return err
		}
		native, err := timed(self, append([]string{"measure", "-kind", kind}, common...)...)
		if err != nil {
			return err
		}
		for _, k := range []string{"extents", "data_bytes", "zero_bytes"} {
			if stat(tools.output, k) != stat(native.output, k) {
				return fmt.Errorf("%s: native discovery %q, with the tools %q", kind, native.output, tools.output)
			}
		}
		tool := []string{"thin_delta", "-m", "--snap1", "2", "--snap2", "1", dev}
		if kind == "full" {
			tool = []string{"thin_dump", "-m", "--dev-id", "1", dev}
		}
		var tr, nr []run
		for i := 0; i < *reps; i++ {
			t, err := timed(tool[0], tool[1:]...)
			if err != nil {
				return err
			}
			n, err := timed(self, append([]string{"measure", "-kind", kind}, common...)...)
			if err != nil {
				return err
			}
			tr, nr = append(tr, t), append(nr, n)
		}
		med := func(rs []run) run {
			s := slices.Clone(rs)
			slices.SortFunc(s, func(a, b run) int { return int(a.wall - b.wall) })
			return s[len(s)/2]
		}
		mt, mn := med(tr), med(nr)
		spread := func(rs []run) string {
			lo, hi := rs[0].wall, rs[0].wall
			for _, r := range rs {
				lo, hi = min(lo, r.wall), max(hi, r.wall)
			}
			return fmt.Sprintf("%.3f-%.3fs", lo.Seconds(), hi.Seconds())
		}
		fmt.Printf("%s (%s): %s\n", kind, strings.Join(tool[:len(tool)-1], " "), native.output)
		fmt.Printf("  %-10s median %8.3fs (%s)  peak RSS %7.1f MiB  block input %9.1f MiB\n", tool[0], mt.wall.Seconds(),
			spread(tr), float64(mt.rss)/1024, float64(mt.inblk)/(1<<20))
		fmt.Printf("  %-10s median %8.3fs (%s)  peak RSS %7.1f MiB  block input %9.1f MiB  metadata read %9.1f MiB\n", "native",
			mn.wall.Seconds(), spread(nr), float64(mn.rss)/1024, float64(mn.inblk)/(1<<20), float64(stat(mn.output, "metadata_bytes"))/(1<<20))
		fmt.Printf("  native is %.1fx faster (median of %d runs each, alternating)\n", mt.wall.Seconds()/mn.wall.Seconds(), *reps)
	}
	return nil
}
