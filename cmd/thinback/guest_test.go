package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin/lvmtest"
	"golang.org/x/sys/unix"
)

// TestGuest runs the end-to-end scripts of testdata/guest against real LVM
// thin pools in a User-Mode Linux guest (see lvmthin/lvmtest), and the
// FUSE mount tests, which this machine's kernel may not allow (they skip
// here then, but never in the guest).
func TestGuest(t *testing.T) {
	lvmtest.RunGuest(t, "../..", lvmtest.Options{Pattern: "^(TestGuestScripts|TestMountHost|TestMountNewBackups)$", Timeout: 30 * time.Minute, Mem: "1536M",
		TestData: "../../testdata/guest"})
}

// TestGuestScripts runs inside the guest, one script at a time: they share
// one kernel, one CPU and its device-mapper, and some of them time signals.
func TestGuestScripts(t *testing.T) {
	if !lvmtest.InGuest() {
		t.Skip("runs inside the User-Mode Linux guest (TestGuest)")
	}
	files, err := filepath.Glob(filepath.Join(lvmtest.TestDataDir("../../testdata/guest"), "*.txtar"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no guest scripts found: %v", err)
	}
	// One seed for the scripts' random rounds (fsround): logged, and
	// replayed with THINBACK_SEED=N.
	seed := uint64(time.Now().UnixNano()) >> 1
	if v := os.Getenv("THINBACK_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 63); err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", v, err)
		}
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			testscript.Run(t, testscript.Params{
				Files: []string{file},
				Setup: func(e *testscript.Env) error {
					e.Setenv("THINBACK_STATE", e.WorkDir+"/state.db")
					e.Setenv("SEED", strconv.FormatUint(seed, 10))
					for _, k := range []string{"LVM_SYSTEM_DIR", "THINBACK_UML_WORK", "THINBACK_UML_MKPOOL", "LC_ALL"} {
						e.Setenv(k, os.Getenv(k))
					}
					return nil
				},
				Cmds: scriptCmds(),
			})
		})
	}
}

// directReader reads a device or file with O_DIRECT through an aligned
// buffer: buffered reads of devices are slow and may be stale in the guest.
func directBuffer(n int) []byte {
	b := make([]byte, n+4096)
	off := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if off != 0 {
		off = 4096 - off
	}
	return b[off : off+n]
}

// lvsha DEV|FILE [LEN]: print the SHA-256 of the first LEN bytes (all of it
// by default), read with O_DIRECT.
func cmdLvsha(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: lvsha DEV [LEN]")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_RDONLY|unix.O_DIRECT, 0)
	if errors.Is(err, unix.EINVAL) { // tmpfs files take no O_DIRECT
		f, err = os.Open(ts.MkAbs(args[0]))
	}
	ts.Check(err)
	defer f.Close()
	size, _, err := archive.FileSize(f)
	ts.Check(err)
	if len(args) == 2 {
		size = min(size, atoi(ts, args[1]))
	}
	h := sha256.New()
	buf := directBuffer(4 << 20)
	for off := int64(0); off < size; {
		n, err := f.ReadAt(buf, off)
		if n == 0 && err != nil {
			ts.Fatalf("reading %s at %d: %v", args[0], off, err)
		}
		n = int(min(int64(n), size-off))
		h.Write(buf[:n])
		off += int64(n)
		if err != nil && err != io.EOF {
			ts.Fatalf("reading %s at %d: %v", args[0], off, err)
		}
	}
	ts.Stdout().Write([]byte(hex.EncodeToString(h.Sum(nil)) + "\n"))
}

// scribbledev DEV SEED N: N writes of random data with O_DIRECT at random
// 4 KiB-aligned offsets, of several sizes (a VM writing to its disk).
func cmdScribbledev(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: scribbledev DEV SEED N")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY|unix.O_DIRECT, 0)
	ts.Check(err)
	defer f.Close()
	size, _, err := archive.FileSize(f)
	ts.Check(err)
	r := rand.New(rand.NewSource(atoi(ts, args[1])))
	sizes := []int64{4096, 65536, 1 << 20, 3<<20 + 4096, 12288}
	buf := directBuffer(4 << 20)
	for i := int64(0); i < atoi(ts, args[2]); i++ {
		n := sizes[r.Intn(len(sizes))]
		off := r.Int63n((size-n)/4096) * 4096
		r.Read(buf[:n])
		_, err := f.WriteAt(buf[:n], off)
		ts.Check(err)
	}
	ts.Check(f.Sync())
}

// mbr FILE START SECTORS: write an MBR partition table with one Linux
// partition of SECTORS 512-byte sectors from sector START (losetup -P
// then shows it as a partition of the loop device).
func cmdMbr(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: mbr FILE START SECTORS")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_WRONLY, 0)
	ts.Check(err)
	defer f.Close()
	var sec [512]byte
	e := sec[446:462]
	e[1], e[2], e[3] = 0xfe, 0xff, 0xff // CHS unused: LBA only
	e[4] = 0x83
	e[5], e[6], e[7] = 0xfe, 0xff, 0xff
	binary.LittleEndian.PutUint32(e[8:], uint32(atoi(ts, args[1])))
	binary.LittleEndian.PutUint32(e[12:], uint32(atoi(ts, args[2])))
	sec[510], sec[511] = 0x55, 0xaa
	_, err = f.WriteAt(sec[:], 0)
	ts.Check(err)
}

// fsround DIR SEED ROUND: one round of a file system's life under DIR, the
// same for the same SEED and ROUND: new files (random and compressible
// data), copies of existing ones, deletions, and scattered in-place
// writes (as dd conv=notrunc) into a large file, all fsynced.
func cmdFsround(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 3 {
		ts.Fatalf("usage: fsround DIR SEED ROUND")
	}
	dir := ts.MkAbs(args[0])
	r := rand.New(rand.NewSource(atoi(ts, args[1])*1000 + atoi(ts, args[2])))
	write := func(name string, data []byte) {
		f, err := os.Create(filepath.Join(dir, name))
		ts.Check(err)
		_, err = f.Write(data)
		ts.Check(err)
		ts.Check(f.Sync())
		ts.Check(f.Close())
	}
	content := func() []byte {
		b := make([]byte, 4096+r.Intn(1<<20))
		if r.Intn(2) == 0 {
			r.Read(b)
		} else {
			for i := range b {
				b[i] = "thinback classic snapshots\n"[i%27]
			}
		}
		return b
	}
	// The large file that takes the in-place writes.
	big := filepath.Join(dir, "big.img")
	if _, err := os.Stat(big); errors.Is(err, os.ErrNotExist) {
		b := make([]byte, 32<<20)
		r.Read(b)
		write("big.img", b)
	}
	round := args[2]
	for i := 0; i < 2+r.Intn(4); i++ {
		write(fmt.Sprintf("new-%s-%d", round, i), content())
	}
	names, err := filepath.Glob(filepath.Join(dir, "new-*"))
	ts.Check(err)
	for i := 0; i < 1+r.Intn(3) && len(names) > 0; i++ {
		src := names[r.Intn(len(names))]
		data, err := os.ReadFile(src)
		ts.Check(err)
		write(fmt.Sprintf("copy-%s-%d", round, i), data)
	}
	names, err = filepath.Glob(filepath.Join(dir, "*-*"))
	ts.Check(err)
	for i := 0; i < 1+r.Intn(3) && len(names) > 6; i++ {
		j := r.Intn(len(names))
		ts.Check(os.Remove(names[j]))
		names = append(names[:j], names[j+1:]...)
	}
	f, err := os.OpenFile(big, os.O_WRONLY, 0)
	ts.Check(err)
	buf := make([]byte, 1<<20)
	for i := 0; i < 5+r.Intn(20); i++ {
		n := 4096 * (1 + r.Intn(64))
		r.Read(buf[:n])
		_, err := f.WriteAt(buf[:n], r.Int63n((32<<20-int64(n))/4096)*4096)
		ts.Check(err)
	}
	ts.Check(f.Sync())
	ts.Check(f.Close())
}

// blocksof FILE BS SRC...: every BS-byte block of FILE equals the block at
// the same offset of one of the SRC files ("zero" stands for zeroes): an
// apply that stopped half-way wrote nothing that is not its snapshot's.
func cmdBlocksof(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 3 {
		ts.Fatalf("usage: blocksof FILE BS SRC...")
	}
	read := func(name string) []byte {
		b, err := os.ReadFile(ts.MkAbs(name))
		ts.Check(err)
		return b
	}
	data, bs := read(args[0]), int(atoi(ts, args[1]))
	var srcs [][]byte
	for _, name := range args[2:] {
		if name == "zero" {
			srcs = append(srcs, make([]byte, len(data)))
		} else {
			srcs = append(srcs, read(name))
		}
	}
	for off := 0; off < len(data); off += bs {
		blk := data[off:min(off+bs, len(data))]
		found := false
		for _, s := range srcs {
			if off+len(blk) <= len(s) && string(s[off:off+len(blk)]) == string(blk) {
				found = true
				break
			}
		}
		if !found {
			ts.Fatalf("%s: the block at byte %d is none of %s", args[0], off, strings.Join(args[2:], ", "))
		}
	}
}
