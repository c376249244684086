package lvmthin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// directAlign is the alignment of O_DIRECT reads: a multiple of every
// logical block size in use (512, 4096).
const directAlign = 4096

// bounceSize is the size of the aligned buffers used for reads whose
// buffer or offset is not aligned.
const bounceSize = 1 << 20

// blkGetSize64 is BLKGETSIZE64, _IOR(0x12, 114, size_t).
const blkGetSize64 = 0x80081272

// fadvDontNeed is POSIX_FADV_DONTNEED.
const fadvDontNeed = 4

// deviceReader reads a snapshot device read-only, bypassing the page cache
// with O_DIRECT: device-mapper devices can have stale cached pages (a
// device name reused for another snapshot, reads racing activation), and
// a backup must read what is on disk. Where O_DIRECT is refused it falls
// back to buffered reads after dropping that device's cached pages
// (fadvise DONTNEED), never the whole system's caches.
type deviceReader struct {
	f      *os.File
	path   string
	size   int64
	direct bool
	bounce sync.Pool
}

func openDevice(path string) (*deviceReader, error) {
	d := &deviceReader{path: path, direct: true}
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
		b := alignedBuffer(bounceSize)
		return &b
	}
	return d, nil
}

// alignedBuffer returns a buffer of n bytes starting at a directAlign
// boundary (Go's heap does not move objects, so the alignment holds).
func alignedBuffer(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % directAlign); r != 0 {
		skip = directAlign - r
	}
	return b[skip : skip+n : skip+n]
}

func isAligned(p []byte, off int64) bool {
	return len(p) > 0 && off%directAlign == 0 && len(p)%directAlign == 0 &&
		uintptr(unsafe.Pointer(&p[0]))%directAlign == 0
}

// ReadAt reads from the device; it is safe for concurrent use.
func (d *deviceReader) ReadAt(p []byte, off int64) (int, error) {
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

func (d *deviceReader) read(p []byte, off int64) (int, error) {
	if !d.direct || isAligned(p, off) {
		return d.f.ReadAt(p, off)
	}
	bp := d.bounce.Get().(*[]byte)
	defer d.bounce.Put(bp)
	buf := *bp
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		start := pos &^ (directAlign - 1)
		want := min(int64(len(buf)), (pos+int64(len(p)-done)+directAlign-1)&^(directAlign-1)-start)
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

func (d *deviceReader) Close() error { return d.f.Close() }
