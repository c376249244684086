// Package fusefs is thinback's FUSE file system: every point in time of a
// store as a read-only disk image,
//
//	MOUNTPOINT/<volume>/<seq>-<UTC time>.img   each snapshot of the volume
//	MOUNTPOINT/<volume>/latest.img             the newest one (the same inode)
//
// with <volume> escaped as in the store (catalog.DirName). It knows
// nothing of how the store is opened: a Source lists the volumes and
// their snapshots and opens a point in time as an Image. An image's
// reader is opened by its first open and closed by its last release;
// reads and SEEK_DATA/SEEK_HOLE go to it. Every change is refused with
// EROFS, and an error a caller cannot be told more of than EIO is logged.
//
// # Basics
//
// New makes the file system, Mount mounts it (as root with mount(2)
// itself, else through fusermount3), Close closes the readers still open
// once it is unmounted. Inode numbers are a hash of what a node is, so
// they are the same in every lookup and every mount.
package fusefs

import (
	"context"
	"errors"
	"hash/fnv"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/thinback/thinback/catalog"
)

// Source is what the file system shows.
type Source interface {
	// Volumes returns the names of the volumes that have snapshots.
	Volumes() ([]string, error)
	// Snapshots returns a volume's snapshots, oldest first (none, or an
	// error wrapping catalog.ErrNotFound, for a volume it does not know).
	Snapshots(volume string) ([]catalog.Snapshot, error)
	// Open opens the point in time of a snapshot listed before. It looks
	// the snapshot up again by its ID: it may be gone (an error wrapping
	// catalog.ErrNotFound) or its files replaced since. ctx lasts as long
	// as the mount, not a request.
	Open(ctx context.Context, snap catalog.Snapshot) (Image, error)
}

// Image is a point in time open for reading.
type Image interface {
	// ReadAt reads the volume at the point in time; an error other than
	// io.EOF (a damaged record, which the Image logs itself) is EIO for
	// the whole request.
	io.ReaderAt
	// Size is the volume's size in bytes.
	Size() int64
	// SeekData and SeekHole answer lseek's SEEK_DATA and SEEK_HOLE: the
	// first byte at or after off that holds data, or reads as zeroes;
	// false if there is none.
	SeekData(off int64) (int64, bool)
	SeekHole(off int64) (int64, bool)
	io.Closer
}

// Times the kernel may cache what the tree says. An image never changes,
// so its attributes are cached long; the snapshots of a volume change
// with each backup and prune, so names are looked up again after a second.
var (
	entryTimeout = time.Second
	imageTimeout = time.Hour
)

// FS is the state of one mount: its source and the images with a reader.
type FS struct {
	src Source
	log func(format string, args ...any)
	// ctx is not cancelled by ^C: a busy mount goes on serving.
	ctx  context.Context
	mu   sync.Mutex
	open map[*imageNode]bool // images with a reader
}

// New returns the file system of src. log is told what a caller of the
// file system only sees as EIO (it may be called from several goroutines
// at once, one line each). ctx's values reach Source.Open; its
// cancellation does not, since a busy mount goes on serving.
func New(ctx context.Context, src Source, log func(format string, args ...any)) *FS {
	return &FS{src: src, log: log, ctx: context.WithoutCancel(ctx), open: make(map[*imageNode]bool)}
}

// Close closes every image reader still open; call it once the tree is
// unmounted.
func (m *FS) Close() {
	m.mu.Lock()
	nodes := make([]*imageNode, 0, len(m.open))
	for n := range m.open {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		if n.img != nil {
			n.closeReader()
		}
		n.mu.Unlock()
	}
}

// errno turns an error of the source into what a filesystem caller gets,
// logging what they cannot be told.
func (m *FS) errno(what string, err error) syscall.Errno {
	if errors.Is(err, catalog.ErrNotFound) {
		return syscall.ENOENT
	}
	m.log("%s: %v", what, err)
	return syscall.EIO
}

// stableIno gives a node the same inode number in every lookup and every
// mount: a hash of what it is.
func stableIno(kind, key string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(kind))
	h.Write([]byte{0})
	h.Write([]byte(key))
	return h.Sum64() | 1<<63 // clear of go-fuse's automatic numbers
}
