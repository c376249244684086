// Package blockdev reads block devices read-only with O_DIRECT, for the
// parts of lvmthin that must see what is on disk rather than what the page
// cache remembers: snapshot devices whose data is backed up, and the
// copy-on-write stores of classic snapshots, which device-mapper writes
// through its own I/O path, past the page cache of the device node.
package blockdev

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// Align is the alignment of O_DIRECT reads: a multiple of every logical
// block size in use (512, 4096).
const Align = 4096

// bounceSize is the size of the aligned buffers used for reads whose
// buffer or offset is not aligned.
const bounceSize = 1 << 20

// blkGetSize64 is BLKGETSIZE64, _IOR(0x12, 114, size_t).
const blkGetSize64 = 0x80081272

// fadvDontNeed is POSIX_FADV_DONTNEED.
const fadvDontNeed = 4

// Reader reads a device (or a regular file) read-only, bypassing the page
// cache with O_DIRECT: device-mapper devices can have stale cached pages (a
// device name reused for another snapshot, reads racing activation, a COW
// store the kernel rewrites behind the cache), and a backup must read what
// is on disk. Where O_DIRECT is refused it falls back to buffered reads
// after dropping that file's cached pages (fadvise DONTNEED), never the
// whole system's caches.
type Reader struct {
	f      *os.File
	path   string
	size   int64
	direct bool
	bounce sync.Pool
}

// Open opens path read-only, with O_DIRECT where the file system allows it.
func Open(path string) (*Reader, error) {
	d := &Reader{path: path, direct: true}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_DIRECT, 0)
	if errors.Is(err, syscall.EINVAL) {
		d.direct = false
		f, err = os.OpenFile(path, os.O_RDONLY, 0)
		if err == nil {
			if _, _, errno := syscall.Syscall6(syscall.SYS_FADVISE64, f.Fd(), 0, 0, fadvDontNeed, 0, 0); errno != 0 {
				f.Close()
				return nil, fmt.Errorf("drop cached pages of %s: %w", path, errno)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	d.f = f
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if fi.Mode()&os.ModeDevice != 0 {
		var size uint64
		if _, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), blkGetSize64, uintptr(unsafe.Pointer(&size))); errno != 0 {
			f.Close()
			return nil, fmt.Errorf("size of %s: %w", path, errno)
		}
		d.size = int64(size)
	} else {
		d.size = fi.Size()
	}
	d.bounce.New = func() any {
		b := AlignedBuffer(bounceSize)
		return &b
	}
	return d, nil
}

// AlignedBuffer returns a buffer of n bytes starting at an Align boundary
// (Go's heap does not move objects, so the alignment holds). Reads into it
// at aligned offsets and of aligned lengths go to the device directly,
// without a bounce copy.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+Align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % Align); r != 0 {
		skip = Align - r
	}
	return b[skip : skip+n : skip+n]
}

func isAligned(p []byte, off int64) bool {
	return len(p) > 0 && off%Align == 0 && len(p)%Align == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%Align == 0
}

// Path returns the path the Reader was opened with.
func (d *Reader) Path() string { return d.path }

// Size returns the size of the device or file in bytes, as it was when
// opened.
func (d *Reader) Size() int64 { return d.size }

// Direct reports whether reads bypass the page cache (O_DIRECT).
func (d *Reader) Direct() bool { return d.direct }

// ReadAt reads from the device; it is safe for concurrent use. Reads past
// Size return io.EOF.
func (d *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", d.path, off)
	}
	if off >= d.size {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	var eof error
	if int64(len(p)) > d.size-off {
		p, eof = p[:d.size-off], io.EOF
	}
	n, err := d.read(p, off)
	if err == nil {
		err = eof
	}
	return n, err
}

func (d *Reader) read(p []byte, off int64) (int, error) {
	if !d.direct || isAligned(p, off) {
		return d.f.ReadAt(p, off)
	}
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	buf := *bp
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		start := pos &^ (Align - 1)
		want := min(int64(len(buf)), (pos+int64(len(p)-done)+Align-1)&^(Align-1)-start)
		n, err := d.f.ReadAt(buf[:want], start)
		if int64(n) > pos-start {
			done += copy(p[done:], buf[pos-start:n])
		}
		if err != nil && done < len(p) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, err
		}
	}
	return done, nil
}

// Close closes the device.
func (d *Reader) Close() error { return d.f.Close() }
