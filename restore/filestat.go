package restore

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// FileStat is what fstat(2) says of a regular file target after the apply
// that left it at its snapshot. Every write to a file sets its
// modification time, every change to its inode (a write, a truncate,
// chmod, chown, a new link) its status-change time, and a file replaced
// under its name has another inode: comparing them sees any change, and
// costs one fstat, where the sampled fingerprint sees only the blocks it
// samples.
type FileStat struct {
	Size int64
	// Mtime and Ctime are the modification and status-change times, in
	// nanoseconds since the epoch, as the filesystem keeps them.
	Mtime, Ctime int64
	Dev, Ino     uint64
}

// fileStat returns the open target's FileStat.
func (t *Target) fileStat() (FileStat, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(t.f.Fd()), &st); err != nil {
		return FileStat{}, fmt.Errorf("target %s: %w", t.Path, err)
	}
	return FileStat{Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Dev: uint64(st.Dev), Ino: st.Ino}, nil
}

// changed says how the file differs from what rec recorded, or "".
func (s FileStat) changed(rec FileStat) string {
	stamp := func(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }
	switch {
	case s.Dev != rec.Dev || s.Ino != rec.Ino:
		return fmt.Sprintf("it was replaced: it is inode %d on device %d, the last apply left inode %d on device %d", s.Ino, s.Dev, rec.Ino, rec.Dev)
	case s.Size != rec.Size:
		return fmt.Sprintf("its size changed from %d to %d bytes", rec.Size, s.Size)
	case s.Mtime != rec.Mtime:
		return fmt.Sprintf("it was written to: its modification time is %s, the last apply left %s", stamp(s.Mtime), stamp(rec.Mtime))
	case s.Ctime != rec.Ctime:
		return fmt.Sprintf("its inode was changed (a write, chmod, chown or link): its status-change time is %s, the last apply left %s", stamp(s.Ctime), stamp(rec.Ctime))
	}
	return ""
}

// timeGrain is the coarsest granularity of a file's modification time
// among the filesystems a target may be on (FAT keeps even seconds).
const timeGrain = 2 * time.Second

// stampMtime sets a regular file's modification time to a whole number of
// timeGrains before now, a time that no later write can leave on it: a
// write sets the time to the current time (rounded down to the
// filesystem's granularity), which is later. Without it, a write soon
// after the apply could leave the same time as the apply's own last write
// (the kernel's clock for file times moves in ticks of milliseconds, or
// FAT's two seconds) and go unseen. It is a refinement, never a reason to
// fail an apply that wrote everything: where setting the time is refused
// (it needs the file's owner, or CAP_FOWNER) or unsupported, the time
// stays the one the last write set.
func (t *Target) stampMtime(now time.Time) {
	if t.block {
		return
	}
	at := now.Truncate(timeGrain).Add(-timeGrain)
	ts := [2]unix.Timespec{{Nsec: unix.UTIME_OMIT}, unix.NsecToTimespec(at.UnixNano())}
	// futimens(fd, ts): utimensat with a NULL path sets the open file's.
	unix.Syscall6(unix.SYS_UTIMENSAT, t.f.Fd(), 0, uintptr(unsafe.Pointer(&ts[0])), 0, 0, 0)
}
