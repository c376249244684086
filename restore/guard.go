package restore

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrTargetIsInput: the target is one of the files the command reads or
// keeps (a delta file being applied, the catalog, the state file, the
// snapback file), lies inside the store, or is the block device that holds
// the filesystem one of them is on. Writing it would destroy the input.
var ErrTargetIsInput = errors.New("target is one of the command's own files")

// Guard is a file or directory that a target must not be, nor lie inside
// (when Dir), nor hold: a block device target must not be the device whose
// filesystem Path is on, nor a disk with that device as a partition, nor a
// device under it in a device-mapper stack; a regular file target must not
// be the backing file of a loop device under it.
type Guard struct {
	What string // for messages: "delta file", "state file", "store", ...
	Path string // need not exist yet (a snapback file to create)
	Dir  bool   // the target must not lie anywhere inside Path
}

// checkGuards refuses a target that would destroy one of guards. It runs
// before the target is opened: an exclusive open of a block device that
// holds a mounted filesystem fails with EBUSY, which says less.
func checkGuards(path string, guards []Guard) error {
	if len(guards) == 0 {
		return nil
	}
	tst, terr := os.Stat(path)
	if terr != nil && !errors.Is(terr, os.ErrNotExist) {
		return nil // OpenTarget reports it
	}
	return refuseGuarded("target "+path, "target", tst, terr, resolvePath(path), guards)
}

// CheckOutput refuses an output that is already open (standard output)
// when writing it would destroy one of guards: when it is one of them,
// lies inside one (Dir), or holds the filesystem one is on, exactly as
// OpenTarget refuses such a target (ErrTargetIsInput). name is what
// messages call it. A pipe, a socket, a terminal or a character device is
// none of them.
func CheckOutput(f *os.File, name string, guards []Guard) error {
	if len(guards) == 0 {
		return nil
	}
	tst, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	// The path the descriptor was opened by, for the "inside" check and
	// the message; the comparisons themselves are by device and inode.
	return refuseGuarded(name, "output", tst, nil, resolvePath("/proc/self/fd/"+strconv.Itoa(int(f.Fd()))), guards)
}

// refuseGuarded is checkGuards for a target described as desc (a
// "target" or an "output", as kind says), with tst and terr what stat
// says of it (terr: it does not exist yet) and tres its resolved path (""
// when unknown).
func refuseGuarded(desc, kind string, tst os.FileInfo, terr error, tres string, guards []Guard) error {
	// Being one of them first: it says the most.
	for _, g := range guards {
		gst, gerr := os.Stat(g.Path)
		if gerr != nil && !errors.Is(gerr, os.ErrNotExist) {
			continue
		}
		same := tres != "" && tres == resolvePath(g.Path)
		if terr == nil && gerr == nil {
			same = same || os.SameFile(tst, gst) || sameBlockDevice(tst, gst)
		}
		if same {
			return fmt.Errorf("%s is the %s %s: refusing to overwrite it: %w; choose another %s", desc, g.What, g.Path, ErrTargetIsInput, kind)
		}
	}
	for _, g := range guards {
		gst, gerr := os.Stat(g.Path)
		if gerr != nil && !errors.Is(gerr, os.ErrNotExist) {
			continue
		}
		if g.Dir && gerr == nil && gst.IsDir() && tres != "" && inside(tres, gst) {
			return fmt.Errorf("%s lies inside the %s %s: refusing to write there: %w; put the %s outside it", desc, g.What, g.Path, ErrTargetIsInput, kind)
		}
		if terr != nil {
			continue // a target to create holds nothing
		}
		// The filesystem the guard is on (or would be created on).
		on := gst
		if gerr != nil {
			if on, gerr = os.Stat(filepath.Dir(g.Path)); gerr != nil {
				continue
			}
		}
		if how := holds(tst, on); how != "" {
			return fmt.Errorf("%s holds the filesystem of the %s %s (%s): refusing to overwrite it: %w; choose another %s", desc, g.What, g.Path, how, ErrTargetIsInput, kind)
		}
	}
	return nil
}

// resolvePath returns path made absolute with its symbolic links and ".."
// resolved, or its parent's resolved when path does not exist; "" when
// even that fails.
func resolvePath(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(abs); err == nil {
		return r
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return ""
	}
	return filepath.Join(dir, filepath.Base(abs))
}

func statT(fi os.FileInfo) *syscall.Stat_t {
	st, _ := fi.Sys().(*syscall.Stat_t)
	return st
}

func isBlock(fi os.FileInfo) bool {
	return fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0
}

// sameBlockDevice: two device nodes (a path under /dev/mapper and one
// under /dev/VG, or a copy made with mknod) for one device.
func sameBlockDevice(a, b os.FileInfo) bool {
	return isBlock(a) && isBlock(b) && statT(a) != nil && statT(b) != nil && statT(a).Rdev == statT(b).Rdev
}

// inside reports whether the resolved path lies in dir: one of its
// ancestors is dir itself (compared by device and inode, so that a bind
// mount or a second name of the directory is no way around it).
func inside(resolved string, dir os.FileInfo) bool {
	for p := filepath.Dir(resolved); ; p = filepath.Dir(p) {
		if st, err := os.Stat(p); err == nil && os.SameFile(st, dir) {
			return true
		}
		if p == "/" || p == "." {
			return false
		}
	}
}

// holds says how target holds the filesystem that file on is on, or "": a
// block device target is that filesystem's device, or a device below it (a
// disk whose partition it is, the file system under a loop device's backing
// file, a device-mapper device's underlying devices); a regular file target
// is the backing file of a loop device among those.
func holds(target, on os.FileInfo) string {
	tst, ost := statT(target), statT(on)
	if tst == nil || ost == nil {
		return ""
	}
	block := isBlock(target)
	if !block && !target.Mode().IsRegular() {
		return ""
	}
	var how string
	walkDevices(uint64(ost.Dev), func(dev uint64, desc string, backing os.FileInfo) bool {
		if block && dev == uint64(tst.Rdev) || !block && backing != nil && os.SameFile(backing, target) {
			how = desc
			return false
		}
		return true
	})
	if how == "" && isBlock(on) {
		// The guard is itself a block device (a delta file written raw to
		// a partition): the target must not be what it lies on.
		walkDevices(uint64(ost.Rdev), func(dev uint64, desc string, backing os.FileInfo) bool {
			if block && dev == uint64(tst.Rdev) && dev != uint64(ost.Rdev) {
				how = desc
				return false
			}
			return true
		})
	}
	return how
}

// Bounds of the walk down a device stack: sysfs is the kernel's, but a
// loop device can be backed by a file on a loop device, and so on.
const (
	maxDeviceDepth = 16
	maxDevices     = 256
)

// walkDevices calls visit for dev and each block device below it, as far
// as sysfs tells it cheaply and for certain: a partition's disk
// (/sys/dev/block/M:m/partition, the parent directory), a loop device's
// backing file and the device of the filesystem it is on
// (loop/backing_file), and a device-mapper or md device's underlying
// devices (slaves/). A filesystem without a block device of its own
// (btrfs, whose st_dev is an anonymous device) is followed to the device
// /proc/self/mountinfo names as its source. desc says how each device
// relates to the filesystem; backing is the loop backing file, if that is
// how the device was reached. visit returns false to stop.
func walkDevices(dev uint64, visit func(dev uint64, desc string, backing os.FileInfo) bool) {
	type node struct {
		dev     uint64
		desc    string
		backing os.FileInfo
		depth   int
	}
	queue := []node{{dev: dev, desc: "on " + devName(dev)}}
	seen := map[uint64]bool{}
	for len(queue) > 0 && len(seen) < maxDevices {
		n := queue[0]
		queue = queue[1:]
		if seen[n.dev] || n.depth > maxDeviceDepth {
			continue
		}
		seen[n.dev] = true
		if !visit(n.dev, n.desc, n.backing) {
			return
		}
		next := func(d uint64, desc string, backing os.FileInfo) {
			queue = append(queue, node{dev: d, desc: n.desc + ", " + desc, backing: backing, depth: n.depth + 1})
		}
		sys, err := filepath.EvalSymlinks(sysBlockPath(n.dev))
		if err != nil {
			if src := mountSource(n.dev); src != "" {
				if st, err := os.Stat(src); err == nil && isBlock(st) {
					next(uint64(statT(st).Rdev), "mounted from "+src, nil)
				}
			}
			continue
		}
		name := filepath.Base(sys)
		if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
			if d, ok := readDev(filepath.Join(filepath.Dir(sys), "dev")); ok {
				next(d, name+" is a partition of "+filepath.Base(filepath.Dir(sys)), nil)
			}
		}
		if b, err := os.ReadFile(filepath.Join(sys, "loop", "backing_file")); err == nil {
			file := strings.TrimSpace(string(b))
			if st, err := os.Stat(file); err == nil && statT(st) != nil {
				next(uint64(statT(st).Dev), name+" is backed by "+file, st)
			}
		}
		slaves, _ := os.ReadDir(filepath.Join(sys, "slaves"))
		for _, s := range slaves {
			if d, ok := readDev(filepath.Join(sys, "slaves", s.Name(), "dev")); ok {
				next(d, name+" lies on "+s.Name(), nil)
			}
		}
	}
}

func sysBlockPath(dev uint64) string {
	return fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(dev), unix.Minor(dev))
}

// devName is the kernel's name of a block device (sdb1, loop0, dm-3), or
// its major:minor.
func devName(dev uint64) string {
	if sys, err := filepath.EvalSymlinks(sysBlockPath(dev)); err == nil {
		return filepath.Base(sys)
	}
	return fmt.Sprintf("device %d:%d", unix.Major(dev), unix.Minor(dev))
}

// readDev reads a sysfs "dev" file: "MAJOR:MINOR\n".
func readDev(path string) (uint64, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, false
	}
	maj, min, ok := strings.Cut(strings.TrimSpace(string(b)), ":")
	if !ok {
		return 0, false
	}
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, false
	}
	return unix.Mkdev(uint32(ma), uint32(mi)), true
}

// mountSource returns the /dev path a filesystem with device number dev
// was mounted from, per /proc/self/mountinfo, or "".
func mountSource(dev uint64) string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	want := fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE SUPEROPTS
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != want {
			continue
		}
		for i, fld := range fields {
			if fld == "-" && i+2 < len(fields) && strings.HasPrefix(fields[i+2], "/dev/") {
				return fields[i+2]
			}
		}
	}
	return ""
}
