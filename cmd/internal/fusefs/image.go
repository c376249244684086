package fusefs

import (
	"context"
	"fmt"
	"io"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/catalog"
	"golang.org/x/sys/unix"
)

// imageNode is one snapshot's image. The reader (its chain's files and
// the index) is opened by the first open and closed by the last release.
type imageNode struct {
	fs.Inode
	m    *FS
	snap catalog.Snapshot

	mu    sync.Mutex
	img   Image
	opens int
}

var (
	_ fs.NodeGetattrer = (*imageNode)(nil)
	_ fs.NodeOpener    = (*imageNode)(nil)
	_ fs.NodeReader    = (*imageNode)(nil)
	_ fs.NodeReleaser  = (*imageNode)(nil)
	_ fs.NodeSetattrer = (*imageNode)(nil)
	_ fs.NodeLseeker   = (*imageNode)(nil)
)

func (n *imageNode) attr(out *fuse.Attr) {
	out.Mode = syscall.S_IFREG | 0o444
	out.Nlink = 1
	out.Size = uint64(n.snap.VolumeSize)
	out.Blocks = (out.Size + 511) / 512
	out.Blksize = 1 << 20
	t := uint64(n.snap.Time.Unix())
	ns := uint32(n.snap.Time.Nanosecond())
	out.Mtime, out.Mtimensec = t, ns
	out.Ctime, out.Ctimensec = t, ns
	out.Atime, out.Atimensec = t, ns
}

func (n *imageNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	n.attr(&out.Attr)
	out.SetTimeout(imageTimeout)
	return 0
}

// Setattr refuses every change (truncate, chmod, utimes): the mount is
// read-only, and says so.
func (n *imageNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return syscall.EROFS
}

// imageHandle is an open image.
type imageHandle struct{ n *imageNode }

func (n *imageNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&(syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.img == nil {
		if errno := n.openReader(); errno != 0 {
			return nil, 0, errno
		}
	}
	n.opens++
	// An image never changes: keep the kernel's cached pages across opens.
	return &imageHandle{n: n}, fuse.FOPEN_KEEP_CACHE, 0
}

// openReader opens the snapshot's point in time; n.mu is held. The
// source looks the snapshot up again by id: a prune since the lookup may
// have merged its files into new ones (the same data), or removed it
// (ENOENT).
func (n *imageNode) openReader() syscall.Errno {
	what := fmt.Sprintf("%s #%d %s", n.snap.Volume, n.snap.Seq, n.snap.ID)
	img, err := n.m.src.Open(n.m.ctx, n.snap)
	if err != nil {
		return n.m.errno("opening "+what, err)
	}
	if img.Size() != n.snap.VolumeSize {
		img.Close()
		return n.m.errno("opening "+what, fmt.Errorf("the files say the volume is %d bytes, the catalog %d: %w; run thinback verify", img.Size(), n.snap.VolumeSize, catalog.ErrCorrupt))
	}
	n.img = img
	n.m.mu.Lock()
	n.m.open[n] = true
	n.m.mu.Unlock()
	return 0
}

// closeReader closes the image; n.mu is held.
func (n *imageNode) closeReader() {
	if err := n.img.Close(); err != nil {
		n.m.log("closing the files of %s #%d: %v", n.snap.Volume, n.snap.Seq, err)
	}
	n.img = nil
	n.m.mu.Lock()
	delete(n.m.open, n)
	n.m.mu.Unlock()
}

// reader returns the open image of handle f, or nil.
func (n *imageNode) reader(f fs.FileHandle) Image {
	if h, ok := f.(*imageHandle); !ok || h.n != n {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.img
}

func (n *imageNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	r := n.reader(f)
	if r == nil {
		return nil, syscall.EBADF
	}
	got, err := r.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		// The reader logged the damaged record; a short read would make
		// the kernel take the rest for zeroes or the end of the file.
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:got]), 0
}

// Lseek answers SEEK_DATA and SEEK_HOLE from the image, so that cp
// --sparse, qemu-img and the like skip the volume's zero ranges without
// reading them.
func (n *imageNode) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	if h, ok := f.(*imageHandle); !ok || h.n != n {
		return 0, syscall.EBADF
	}
	r := n.reader(f)
	if r == nil || off > uint64(r.Size()) {
		return 0, syscall.ENXIO
	}
	var to int64
	var ok bool
	switch whence {
	case unix.SEEK_DATA:
		to, ok = r.SeekData(int64(off))
	case unix.SEEK_HOLE:
		to, ok = r.SeekHole(int64(off))
	default:
		return 0, syscall.EINVAL // the kernel answers the others itself
	}
	if !ok {
		return 0, syscall.ENXIO
	}
	return uint64(to), 0
}

func (n *imageNode) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.opens > 0 {
		n.opens--
	}
	if n.opens == 0 && n.img != nil {
		n.closeReader()
	}
	return 0
}
