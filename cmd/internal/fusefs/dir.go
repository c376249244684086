package fusefs

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/catalog"
)

// ImageName is the name of a snapshot's image in its volume's directory:
// <seq>-<UTC time>.img.
func ImageName(sn catalog.Snapshot) string {
	return fmt.Sprintf("%d-%s.img", sn.Seq, sn.Time.UTC().Format("20060102T150405Z"))
}

// latestName is the name of the newest snapshot's image, beside its own.
const latestName = "latest.img"

// volumeDir is MOUNTPOINT/<volume>: an image per snapshot, and latest.img.
type volumeDir struct {
	fs.Inode
	m      *FS
	volume string
}

var (
	_ fs.NodeReaddirer = (*volumeDir)(nil)
	_ fs.NodeLookuper  = (*volumeDir)(nil)
	_ fs.NodeGetattrer = (*volumeDir)(nil)
)

func (d *volumeDir) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

func (d *volumeDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	snaps, err := d.m.src.Snapshots(d.volume)
	if err != nil {
		return nil, d.m.errno("listing the snapshots of "+d.volume, err)
	}
	entries := make([]fuse.DirEntry, 0, len(snaps)+1)
	for _, sn := range snaps {
		entries = append(entries, fuse.DirEntry{Name: ImageName(sn), Mode: syscall.S_IFREG, Ino: stableIno("snapshot", sn.ID)})
	}
	if n := len(snaps); n > 0 {
		entries = append(entries, fuse.DirEntry{Name: latestName, Mode: syscall.S_IFREG, Ino: stableIno("snapshot", snaps[n-1].ID)})
	}
	return fs.NewListDirStream(entries), 0
}

func (d *volumeDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if name != latestName {
		seq, _, ok := strings.Cut(name, "-")
		if _, err := strconv.ParseUint(seq, 10, 64); !ok || err != nil || !strings.HasSuffix(name, ".img") {
			return nil, syscall.ENOENT
		}
	}
	snaps, err := d.m.src.Snapshots(d.volume)
	if err != nil {
		return nil, d.m.errno("looking up "+name+" in "+d.volume, err)
	}
	var found *catalog.Snapshot
	for i := range snaps {
		if name == ImageName(snaps[i]) || (name == latestName && i == len(snaps)-1) {
			found = &snaps[i]
		}
	}
	if found == nil {
		return nil, syscall.ENOENT
	}
	n := &imageNode{m: d.m, snap: *found}
	n.attr(&out.Attr)
	if name != latestName {
		out.SetEntryTimeout(imageTimeout) // this name always means this snapshot
	}
	out.SetAttrTimeout(imageTimeout)
	// latest.img is the newest snapshot's own inode (a hard link), so the
	// two names share one reader.
	return d.NewInode(ctx, n, fs.StableAttr{Mode: syscall.S_IFREG, Ino: stableIno("snapshot", found.ID)}), 0
}
