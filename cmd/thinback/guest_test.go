package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
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
// thin pools in a User-Mode Linux guest (see lvmthin/lvmtest).
func TestGuest(t *testing.T) {
	lvmtest.RunGuest(t, "../..", lvmtest.Options{Pattern: "^TestGuestScripts$", Timeout: 30 * time.Minute, Mem: "1536M",
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
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			testscript.Run(t, testscript.Params{
				Files: []string{file},
				Setup: func(e *testscript.Env) error {
					e.Setenv("THINBACK_STATE", e.WorkDir+"/state.db")
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
