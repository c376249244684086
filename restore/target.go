package restore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"github.com/thinback/thinback/archive"
	"golang.org/x/sys/unix"
)

// Typed errors of opening and sizing a target. Test with errors.Is.
var (
	// ErrTargetReadOnly: the target cannot be opened for writing.
	ErrTargetReadOnly = errors.New("target is read-only")
	// ErrTargetBusy: a block device target is mounted or open exclusively.
	ErrTargetBusy = errors.New("target is in use")
	// ErrTargetTooSmall: a block device is smaller than the volume.
	ErrTargetTooSmall = errors.New("target is smaller than the volume")
	// ErrTargetKind: the target is neither a regular file nor a block device.
	ErrTargetKind = errors.New("target is not a regular file or block device")
)

// TargetOptions say how to open a target.
type TargetOptions struct {
	// DiscardZeroes says that a discarded range of this block device reads
	// as zeroes afterwards (true of dm-thin volumes, where a discard unmaps
	// whole blocks). ZERO ranges are then discarded, which also returns the
	// space to a thin pool; without it they are zeroed with
	// fallocate(PUNCH_HOLE) or BLKZEROOUT, which guarantee zeroes.
	DiscardZeroes bool
	// NoCreate refuses to create a regular file that does not exist.
	NoCreate bool
	// Guards are the files the command reads or keeps, which the target
	// must not be, lie in or hold (see Guard); such a target is refused
	// with ErrTargetIsInput before it is opened.
	Guards []Guard
}

// Target is a regular file or block device that delta files are applied to.
type Target struct {
	Path  string
	f     *os.File
	size  int64
	block bool
	opts  TargetOptions

	discardGranularity int64
	created            bool // OpenTarget created the file
	punchFailed        bool // fallocate is unsupported here; use BLKZEROOUT or writes
	zeroOutFailed      bool
	log                writeLog
	check              writeCheck
}

// writeLog follows what an apply writes: the range it may have overwritten
// (an apply that stops says which bytes it touched) and the candidates for
// the fingerprint.
type writeLog struct {
	wrote  bool
	lo, hi int64
	s      *sampler // nil: no fingerprint is being made
}

func (l *writeLog) add(off, n int64, zero bool) {
	if n <= 0 {
		return
	}
	if !l.wrote {
		l.wrote, l.lo, l.hi = true, off, off+n
	} else {
		l.lo, l.hi = min(l.lo, off), max(l.hi, off+n)
	}
	if l.s != nil {
		l.s.wrote(off, n, zero)
	}
}

// OpenTarget opens path for writing. A block device is opened exclusively
// (O_EXCL), so a mounted filesystem or a device another program holds
// exclusively is refused instead of corrupted. A regular file is created
// (mode 0600: disk images hold secrets) unless opts.NoCreate.
func OpenTarget(path string, opts TargetOptions) (*Target, error) {
	if err := checkGuards(path, opts.Guards); err != nil {
		return nil, err
	}
	f, created, err := openTarget(path, opts)
	if err != nil {
		return nil, err
	}
	size, block, err := archive.FileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	t := &Target{Path: path, f: f, size: size, block: block, opts: opts, created: created}
	if block && opts.DiscardZeroes {
		t.discardGranularity = t.queueLimit("discard_granularity")
		if t.discardGranularity <= 0 {
			t.opts.DiscardZeroes = false // the device does not discard at all
		}
	}
	return t, nil
}

// openTarget opens path for writing, creating a regular file that does not
// exist (and saying so: only a file it created may Apply remove). The type
// is checked before anything can block: open(2) of a FIFO waits for its
// other end, deaf to signals, so the path is checked with stat, opened with
// O_NONBLOCK, and the open file checked again.
func openTarget(path string, opts TargetOptions) (f *os.File, created bool, err error) {
	for try := 0; ; try++ {
		st, err := os.Stat(path)
		flags := os.O_RDWR | unix.O_NONBLOCK | unix.O_CLOEXEC
		switch {
		case errors.Is(err, os.ErrNotExist) && !opts.NoCreate:
			flags |= os.O_CREATE | os.O_EXCL
		case err != nil:
			return nil, false, fmt.Errorf("target %s: %w", path, err)
		case st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0:
			flags |= unix.O_EXCL
		case !st.Mode().IsRegular():
			return nil, false, kindError(path, st.Mode())
		}
		f, err = os.OpenFile(path, flags, 0o600)
		if errors.Is(err, os.ErrExist) && flags&os.O_CREATE != 0 && try == 0 {
			continue // it appeared meanwhile: open what is there
		}
		if err != nil {
			switch {
			case errors.Is(err, syscall.EROFS), errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
				return nil, false, fmt.Errorf("target %s cannot be opened for writing (%v): %w; make it writable (blockdev --setrw, remount read-write, chattr -i) or choose another target", path, errors.Unwrap(err), ErrTargetReadOnly)
			case errors.Is(err, syscall.EBUSY):
				return nil, false, fmt.Errorf("target %s is mounted or held by another program: %w; unmount it or stop what uses it first", path, ErrTargetBusy)
			}
			return nil, false, fmt.Errorf("target %s: %w", path, err)
		}
		fst, err := f.Stat()
		if err == nil && !archive.IsFileOrDevice(fst.Mode()) {
			err = kindError(path, fst.Mode())
		}
		if err == nil {
			err = unix.SetNonblock(int(f.Fd()), false)
		}
		if err != nil {
			f.Close()
			return nil, false, err
		}
		return f, flags&os.O_CREATE != 0, nil
	}
}

func kindError(path string, mode os.FileMode) error {
	return fmt.Errorf("target %s is %s: %w; give a regular file or a block device", path, archive.FileKind(mode), ErrTargetKind)
}

// RemoveCreated removes the regular file OpenTarget created, if the path
// still names it and no apply completed on it: a command that fails
// before its apply ran leaves nothing behind. It does nothing to a target
// that existed before.
func (t *Target) RemoveCreated() error {
	if !t.created {
		return nil
	}
	t.created = false
	ours, err := t.f.Stat()
	if err != nil {
		return err
	}
	if st, err := os.Stat(t.Path); err != nil || !os.SameFile(st, ours) {
		return nil // gone, or replaced by someone else's: leave it
	}
	return os.Remove(t.Path)
}

// Size returns the target's size in bytes.
func (t *Target) Size() int64 { return t.size }

// IsBlockDevice reports whether the target is a block device.
func (t *Target) IsBlockDevice() bool { return t.block }

// Resize sets a regular file's size; it fails on block devices.
func (t *Target) Resize(size int64) error {
	if t.block {
		return fmt.Errorf("target %s is a block device and cannot be resized", t.Path)
	}
	if err := t.f.Truncate(size); err != nil {
		if errors.Is(err, syscall.EFBIG) || errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("target %s cannot be %d bytes long (%v): %w; choose a filesystem that holds files that large, or a block device", t.Path, size, errors.Unwrap(err), ErrTargetTooSmall)
		}
		return fmt.Errorf("target %s: resizing to %d bytes: %w", t.Path, size, err)
	}
	t.size = size
	return nil
}

// ReadAt reads from the target (for snapback files).
func (t *Target) ReadAt(p []byte, off int64) (int, error) { return t.f.ReadAt(p, off) }

// WriteAt writes p at off.
func (t *Target) WriteAt(p []byte, off int64) error {
	t.log.add(off, int64(len(p)), false)
	if err := t.writeAt(p, off); err != nil {
		return err
	}
	return t.wrote(off, off+int64(len(p)))
}

func (t *Target) writeAt(p []byte, off int64) error {
	if _, err := t.f.WriteAt(p, off); err != nil {
		return fmt.Errorf("target %s: writing %d bytes at offset %d: %w", t.Path, len(p), off, err)
	}
	return nil
}

// Zero makes [off, off+n) read as zeroes: punching a hole in a file,
// discarding on a device that guarantees zeroes after a discard, else
// BLKZEROOUT or fallocate(PUNCH_HOLE), which guarantee them, and plain
// writes of zeroes as the last resort.
func (t *Target) Zero(off, n int64) error {
	if n <= 0 {
		return nil
	}
	t.log.add(off, n, true)
	if err := t.zero(off, n); err != nil {
		return err
	}
	return t.wrote(off, off+n) // zeroes may have been written as data
}

func (t *Target) zero(off, n int64) error {
	if !t.block {
		if !t.punchFailed {
			err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
			if err == nil {
				return nil
			}
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
				return fmt.Errorf("target %s: punching a hole at offset %d (%d bytes): %w", t.Path, off, n, err)
			}
			t.punchFailed = true
		}
		return t.writeZeroes(off, n)
	}
	if t.opts.DiscardZeroes {
		g := t.discardGranularity
		lo := (off + g - 1) / g * g
		hi := (off + n) / g * g
		if lo < hi {
			if err := t.ioctlRange(unix.BLKDISCARD, lo, hi-lo); err != nil {
				return fmt.Errorf("target %s: discarding %d bytes at offset %d: %w", t.Path, hi-lo, lo, err)
			}
			if err := t.zeroDevice(off, lo-off); err != nil {
				return err
			}
			return t.zeroDevice(hi, off+n-hi)
		}
	}
	return t.zeroDevice(off, n)
}

// zeroDevice zeroes a range of a block device with the guaranteed methods.
func (t *Target) zeroDevice(off, n int64) error {
	if n <= 0 {
		return nil
	}
	// BLKZEROOUT needs 512-byte alignment; a volume whose size is not a
	// multiple of 512 ends in a short piece that is written.
	lo, hi := (off+511)/512*512, (off+n)/512*512
	if lo < hi {
		if !t.punchFailed {
			err := unix.Fallocate(int(t.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, lo, hi-lo)
			if err == nil {
				return t.writeEdges(off, n, lo, hi)
			}
			t.punchFailed = true
		}
		if !t.zeroOutFailed {
			err := t.ioctlRange(unix.BLKZEROOUT, lo, hi-lo)
			if err == nil {
				return t.writeEdges(off, n, lo, hi)
			}
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOTTY) && !errors.Is(err, unix.EINVAL) {
				return fmt.Errorf("target %s: zeroing %d bytes at offset %d: %w", t.Path, hi-lo, lo, err)
			}
			t.zeroOutFailed = true
		}
	}
	return t.writeZeroes(off, n)
}

func (t *Target) writeEdges(off, n, lo, hi int64) error {
	if err := t.writeZeroes(off, lo-off); err != nil {
		return err
	}
	return t.writeZeroes(hi, off+n-hi)
}

var zeroBuf = make([]byte, 1<<20)

func (t *Target) writeZeroes(off, n int64) error {
	for n > 0 {
		c := min(n, int64(len(zeroBuf)))
		if err := t.writeAt(zeroBuf[:c], off); err != nil {
			return err
		}
		off += c
		n -= c
	}
	return nil
}

func (t *Target) ioctlRange(req uint, off, n int64) error {
	r := [2]uint64{uint64(off), uint64(n)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, t.f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&r[0])))
	if e != 0 {
		return e
	}
	return nil
}

// queueLimit reads a block device's /sys/dev/block/M:m/queue/NAME, or 0.
func (t *Target) queueLimit(name string) int64 {
	st, err := t.f.Stat()
	if err != nil {
		return 0
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return 0
	}
	dir := fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(sys.Rdev), unix.Minor(sys.Rdev))
	for _, p := range []string{dir + "/queue/" + name, dir + "/../queue/" + name} { // a partition's queue is its disk's
		if b, err := os.ReadFile(p); err == nil {
			v, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return v
		}
	}
	return 0
}

// Sync flushes the target to stable storage.
func (t *Target) Sync() error {
	if err := t.f.Sync(); err != nil {
		return t.syncError(err)
	}
	return nil
}

// Close closes the target.
func (t *Target) Close() error { return t.f.Close() }

// Identity is how the state file recognises a target across runs.
type Identity struct {
	// Key is stable for the same target: a regular file's absolute path
	// with links resolved, a device-mapper device's name (vg-lv for an
	// LV, whichever of its paths was given, and stable across reboots,
	// unlike dm-N), or a block device's resolved path.
	Key string
	// Dev and Ino of a regular file, so that a file replaced under the
	// same name is not mistaken for the one whose state was recorded.
	Dev, Ino uint64
	// Device is, for the same reason, what identifies a block device
	// beyond its name: an LV's UUID (LVM puts it in the device-mapper
	// UUID), another device-mapper device's UUID, or else its numbers and
	// size, with its serial number or WWID, or a loop device's backing
	// file and its inode, when the kernel gives them.
	Device string
}

// Identity returns the target's identity.
func (t *Target) Identity() (Identity, error) {
	st, err := t.f.Stat()
	if err != nil {
		return Identity{}, err
	}
	sys := st.Sys().(*syscall.Stat_t)
	abs, err := filepath.Abs(t.Path)
	if err != nil {
		return Identity{}, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if !t.block {
		return Identity{Key: "file:" + abs, Dev: uint64(sys.Dev), Ino: sys.Ino}, nil
	}
	dir := sysBlockPath(uint64(sys.Rdev))
	attr := func(p string) string {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(b))
	}
	if name := attr("dm/name"); name != "" {
		id := Identity{Key: "dm:" + name}
		switch uuid := attr("dm/uuid"); {
		case strings.HasPrefix(uuid, "LVM-") && len(uuid) >= 4+64:
			id.Device = "lv-uuid:" + lvmUUID(uuid[4+32:4+64])
		case uuid != "":
			id.Device = "dm-uuid:" + uuid
		default:
			id.Device = fmt.Sprintf("device %d:%d, %d bytes", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)), t.size)
		}
		return id, nil
	}
	dev := fmt.Sprintf("device %d:%d, %d bytes", unix.Major(uint64(sys.Rdev)), unix.Minor(uint64(sys.Rdev)), t.size)
	for _, p := range []string{"wwid", "device/wwid", "device/serial", "../device/wwid", "../device/serial"} {
		if v := attr(p); v != "" {
			dev += ", " + filepath.Base(p) + " " + v
			if strings.HasPrefix(p, "../") {
				dev += ", partition " + attr("partition")
			}
			break
		}
	}
	if backing := attr("loop/backing_file"); backing != "" {
		dev += ", backed by " + backing
		if bst, err := os.Stat(backing); err == nil {
			if b := statT(bst); b != nil {
				dev += fmt.Sprintf(" (device %d, inode %d)", b.Dev, b.Ino)
			}
		}
		dev += ", offset " + attr("loop/offset")
	}
	return Identity{Key: "dev:" + abs, Device: dev}, nil
}

// lvmUUID spells the 32 characters of an LVM UUID as lvs prints it.
func lvmUUID(s string) string {
	var b strings.Builder
	for i, n := range []int{6, 4, 4, 4, 4, 4, 6} {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[:n])
		s = s[n:]
	}
	return b.String()
}

// Changed says how the target identified by id differs from the one whose
// state was recorded with rec, or "" when it is the same target, or when
// rec recorded too little to tell.
func (id Identity) Changed(rec Identity) string {
	if (rec.Dev != 0 || rec.Ino != 0) && (rec.Dev != id.Dev || rec.Ino != id.Ino) {
		return fmt.Sprintf("it was replaced: it is inode %d on device %d, the state file recorded inode %d on device %d", id.Ino, id.Dev, rec.Ino, rec.Dev)
	}
	if rec.Device != "" && rec.Device != id.Device {
		return fmt.Sprintf("it was replaced: it is %s, the state file recorded %s", id.Device, rec.Device)
	}
	return ""
}

// checkSize refuses a block device smaller than size; regular files grow.
func (t *Target) checkSize(size int64) error {
	if t.block && t.size < size {
		return fmt.Errorf("target %s is %d bytes, the volume is %d bytes: %w; use a device of at least %d bytes", t.Path, t.size, size, ErrTargetTooSmall, size)
	}
	return nil
}
