package fusefs

import (
	"context"
	"fmt"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/catalog"
)

// Root returns the node of MOUNTPOINT, to mount (Mount does).
func (m *FS) Root() fs.InodeEmbedder { return &root{m: m} }

// root is MOUNTPOINT: one directory per volume with snapshots.
type root struct {
	fs.Inode
	m *FS
}

var (
	_ fs.NodeReaddirer = (*root)(nil)
	_ fs.NodeLookuper  = (*root)(nil)
	_ fs.NodeGetattrer = (*root)(nil)
	_ fs.NodeStatfser  = (*root)(nil)
)

func dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
}

func (r *root) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

// Statfs says the filesystem is full and read-only, with nothing free:
// no tool should plan to write here.
func (r *root) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

func (r *root) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	vols, err := r.m.src.Volumes()
	if err != nil {
		return nil, r.m.errno("listing the volumes", err)
	}
	entries := make([]fuse.DirEntry, 0, len(vols))
	for _, v := range vols {
		entries = append(entries, fuse.DirEntry{Name: catalog.DirName(v), Mode: syscall.S_IFDIR, Ino: stableIno("volume", v)})
	}
	return fs.NewListDirStream(entries), 0
}

func (r *root) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	vol, err := catalog.ParseDirName(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	snaps, err := r.m.src.Snapshots(vol)
	if err == nil && len(snaps) == 0 {
		err = fmt.Errorf("volume %q has no snapshots: %w", vol, catalog.ErrNotFound)
	}
	if err != nil {
		return nil, r.m.errno("looking up volume "+vol, err)
	}
	dirAttr(&out.Attr)
	return r.NewInode(ctx, &volumeDir{m: r.m, volume: vol}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: stableIno("volume", vol)}), 0
}
