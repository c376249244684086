// Command randread times random 4 KiB reads of a file, for
// scripts/bench-mount.sh: N reads at offsets drawn from K random 4 KiB
// aligned places (the same for the same seed), with O_DIRECT so that the
// kernel's page cache does not answer them. The first read of each place
// is cold; the later ones find what the file system keeps (for a thinback
// mount, its cache of decoded records). It prints reads per second and the
// mean latency of the cold and the warm reads.
//
//	go run ./scripts/randread FILE [N [K [SEED]]]
package main

import (
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: randread FILE [N [K [SEED]]]")
		os.Exit(2)
	}
	arg := func(i int, def int64) int64 {
		if len(os.Args) > i {
			n, err := strconv.ParseInt(os.Args[i], 10, 64)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			return n
		}
		return def
	}
	n, k, seed := arg(2, 2000), arg(3, 32), arg(4, 1)
	f, err := os.OpenFile(os.Args[1], os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() < 4096 {
		fmt.Fprintln(os.Stderr, "randread: the file is too small or unreadable:", err)
		os.Exit(1)
	}
	r := rand.New(rand.NewSource(seed))
	places := make([]int64, k)
	for i := range places {
		places[i] = r.Int63n(st.Size()/4096) * 4096
	}
	raw := make([]byte, 8192)
	buf := raw[4096-int(uintptr(unsafe.Pointer(&raw[0]))&4095):][:4096] // aligned for O_DIRECT
	seen := make(map[int64]bool)
	var cold, warm time.Duration
	var nc, nw int
	start := time.Now()
	for i := int64(0); i < n; i++ {
		off := places[r.Intn(len(places))]
		t := time.Now()
		if _, err := f.ReadAt(buf, off); err != nil {
			fmt.Fprintf(os.Stderr, "randread: read at %d: %v\n", off, err)
			os.Exit(1)
		}
		d := time.Since(t)
		if seen[off] {
			warm += d
			nw++
		} else {
			seen[off] = true
			cold += d
			nc++
		}
	}
	total := time.Since(start)
	mean := func(d time.Duration, n int) string {
		if n == 0 {
			return "-"
		}
		return (d / time.Duration(n)).Round(time.Microsecond).String()
	}
	fmt.Printf("%d reads of 4 KiB in %s: %.0f reads/s; cold (first read of a place, %d): mean %s; warm (%d): mean %s\n",
		n, total.Round(time.Millisecond), float64(n)/total.Seconds(), nc, mean(cold, nc), nw, mean(warm, nw))
}
