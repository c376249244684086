package main

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func mountCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show every backed-up point in time of a store as a read-only disk image (FUSE)",
		ArgsUsage: "MOUNTPOINT",
		Description: "Mounts a read-only tree at MOUNTPOINT, an empty directory (not a symbolic link):\n\n" +
			"   MOUNTPOINT/<volume>/<seq>-<UTC time>.img   each snapshot of the volume\n" +
			"   MOUNTPOINT/<volume>/latest.img             the newest one (the same file)\n\n" +
			"<volume> is escaped as in the store (vg0/vm1 → vg0%2Fvm1). Each image is a file of the\n" +
			"volume's size whose contents are the volume at that point in time, read from the delta\n" +
			"files on demand and verified block by block; nothing is restored. Get files back with\n" +
			"   mount -o loop,ro MOUNTPOINT/vg0%2Fvm1/12-20261120T030004Z.img /mnt/x\n" +
			"(or losetup -P -r for a disk image with partitions). A damaged record is an I/O error\n" +
			"for its range only, with a line on standard error; never other data.\n\n" +
			"Runs in the foreground until MOUNTPOINT is unmounted (umount, fusermount3 -u) or it is\n" +
			"interrupted (^C, SIGTERM), which unmounts it; if something still uses it, it says what\n" +
			"to do and keeps serving. Everything is read-only: the mount, the files, the store.\n" +
			"The files of a point in time are held open while it is open, so a prune meanwhile\n" +
			"does not change what it reads (their disk space is freed when they are closed).",
		Flags: []cli.Flag{storeFlag, quietFlag,
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request (to standard error)"},
		},
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give the directory to mount the store on")
			if err != nil {
				return err
			}
			return runMount(c.Context, e, mountOptions{store: c.String("store"), mountpoint: a[0], quiet: c.Bool("quiet"), debug: c.Bool("debug")})
		},
	}
}

type mountOptions struct {
	store, mountpoint string
	quiet, debug      bool
	// ready, if set, is called once the tree is mounted (tests).
	ready func()
}

// Times the kernel may cache what the tree says. An image never changes,
// so its attributes are cached long; the snapshots of a volume change
// with each backup and prune, so names are looked up again after a second.
var (
	entryTimeout = time.Second
	imageTimeout = time.Hour
)

// mountFS is the state of one mount: the store, and the point-in-time
// readers open.
type mountFS struct {
	store *readStore
	log   func(format string, args ...any)
	// ctx is not cancelled by ^C: a busy mount goes on serving.
	ctx  context.Context
	mu   sync.Mutex
	open map[*imageNode]bool // images with a reader
}

func runMount(ctx context.Context, e *env, o mountOptions) error {
	s, err := openReadStore(o.store)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if err := s.View(func(*catalog.Tx) error { return nil }); err != nil {
		return fmt.Errorf("mount: store %s: %w", o.store, err)
	}
	mp, err := checkMountpoint(o.mountpoint)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	var logMu sync.Mutex
	m := &mountFS{store: s, ctx: context.WithoutCancel(ctx), open: make(map[*imageNode]bool), log: func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(e.stderr, "thinback: mount: "+format+"\n", args...)
	}}
	root := &mountRoot{m: m}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	neg := entryTimeout
	opts := &fs.Options{
		EntryTimeout:    &entryTimeout,
		AttrTimeout:     &entryTimeout,
		NegativeTimeout: &neg,
		UID:             uid,
		GID:             gid,
		MountOptions: fuse.MountOptions{
			FsName: "thinback",
			Name:   "thinback",
			// Read-only in the superblock (the kernel refuses every write
			// with EROFS before it reaches us) and in the mount.
			Options:          []string{"ro", "noexec", "default_permissions"},
			DirectMount:      true, // as root: mount(2) itself, no fusermount needed
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC,
			// Requests of up to 1 MiB: a sequential reader then costs a
			// request per MiB, and the reader decodes ahead of it.
			MaxWrite:      1 << 20,
			DisableXAttrs: true,
			Debug:         o.debug,
		},
	}
	if o.debug {
		opts.Logger = newStderrLogger(e)
		opts.MountOptions.Logger = opts.Logger
	}
	server, err := fs.Mount(mp, root, opts)
	if err != nil {
		return fmt.Errorf("mount: mounting %s: %w%s", o.mountpoint, err, mountAdvice(err))
	}
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()
	// The root of the tree mounted, to know it again when unmounting.
	var mounted unix.Stat_t
	if err := unix.Lstat(mp, &mounted); err != nil {
		server.Unmount()
		<-served
		return fmt.Errorf("mount: %s after mounting: %w", o.mountpoint, err)
	}
	defer m.closeAll()
	if !o.quiet {
		fmt.Fprintf(e.stderr, "thinback: mounted store %s at %s, read-only; ^C or umount %s to stop\n", o.store, o.mountpoint, o.mountpoint)
	}
	if o.ready != nil {
		o.ready()
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := ctx.Done()
	var tried time.Time
	unmount := func() {
		if time.Since(tried) < 500*time.Millisecond {
			return // the same ^C, seen both as the context and as a signal
		}
		tried = time.Now()
		// What is at mp must still be the tree mounted there: the path
		// has no link left in it, and UMOUNT_NOFOLLOW keeps it so.
		var now unix.Stat_t
		if err := unix.Lstat(mp, &now); err != nil || now.Dev != mounted.Dev || now.Ino != mounted.Ino {
			select {
			case <-served:
				return
			default:
			}
			m.log("not unmounting %s: it is no longer the directory this mount is on (it was replaced or moved); unmount the tree yourself (findmnt -t fuse.thinback)", o.mountpoint)
			return
		}
		// umount(2) first, as root: go-fuse's Unmount falls back to
		// fusermount on any error, which would hide EBUSY.
		err := unix.Unmount(mp, unix.UMOUNT_NOFOLLOW)
		if errors.Is(err, syscall.EPERM) {
			err = server.Unmount() // not root: fusermount3 -u
		}
		if err != nil {
			select {
			case <-served:
				return
			default:
			}
			if errors.Is(err, syscall.EBUSY) {
				m.log("cannot unmount %s: it is busy; unmount what is mounted from its images (umount, losetup -d) and leave the directory, then press ^C again (or umount -l %s)", o.mountpoint, o.mountpoint)
				return
			}
			m.log("cannot unmount %s: %v", o.mountpoint, err)
		}
	}
	for {
		select {
		case <-served:
			if !o.quiet {
				fmt.Fprintf(e.stderr, "thinback: unmounted %s\n", o.mountpoint)
			}
			return nil
		case <-done:
			done = nil
			unmount()
		case <-sigs:
			unmount()
		}
	}
}

// checkMountpoint refuses a mountpoint that is missing, not a directory,
// not empty, already a mount point (busy), a dead FUSE mount or a
// symbolic link, and returns it as an absolute path with no symbolic
// link in it. A link is refused, and the links of the directories above
// are resolved here once, because the tree is unmounted by path when
// thinback mount is stopped: a link re-pointed meanwhile would make ^C
// unmount another file system.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Lstat(abs); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		to, _ := os.Readlink(abs)
		return "", usageError{msg: fmt.Sprintf("mount point %s is a symbolic link (to %s): give the directory itself, so that stopping thinback mount unmounts what it mounted and nothing else", dir, to), hint: "thinback mount"}
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	var st, parent syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			return "", fmt.Errorf("%s is a dead FUSE mount (of a killed thinback mount?): unmount it first (umount %s, or fusermount3 -u %s)", dir, dir, dir)
		}
		return "", fmt.Errorf("mount point %s: %w; create an empty directory to mount on", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return "", fmt.Errorf("mount point %s is not a directory", dir)
	}
	if err := syscall.Stat(filepath.Dir(abs), &parent); err == nil && parent.Dev != st.Dev && abs != "/" {
		return "", fmt.Errorf("mount point %s is busy: something is mounted there already (see findmnt %s)", dir, dir)
	}
	d, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	if len(names) > 0 {
		return "", fmt.Errorf("mount point %s is not empty (it holds %s): mount on an empty directory, so nothing is hidden", dir, names[0])
	}
	return abs, nil
}

func mountAdvice(err error) string {
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return "\nmounting needs root, or fusermount3 (Debian's fuse3 package) for other users"
	case errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT):
		return "\nis FUSE available? (modprobe fuse; /dev/fuse must exist)"
	case errors.Is(err, exec.ErrNotFound):
		return "\nas a user other than root, mounting needs fusermount3 (Debian's fuse3 package)"
	case os.Geteuid() != 0:
		// Other users mount through fusermount3, whose own message is
		// the error above.
		return "\nas a user other than root, mounting goes through fusermount3 (Debian's fuse3 package): see its message above"
	}
	return ""
}

// closeAll closes every reader still open once the tree is gone.
func (m *mountFS) closeAll() {
	m.mu.Lock()
	nodes := make([]*imageNode, 0, len(m.open))
	for n := range m.open {
		nodes = append(nodes, n)
	}
	m.mu.Unlock()
	for _, n := range nodes {
		n.mu.Lock()
		if n.pit != nil {
			n.closeReader()
		}
		n.mu.Unlock()
	}
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

// imageName is the name of a snapshot's image in its volume's directory.
func imageName(sn catalog.Snapshot) string {
	return fmt.Sprintf("%d-%s.img", sn.Seq, sn.Time.UTC().Format("20060102T150405Z"))
}

const latestName = "latest.img"

// mountRoot is MOUNTPOINT: one directory per volume with snapshots.
type mountRoot struct {
	fs.Inode
	m *mountFS
}

var (
	_ fs.NodeReaddirer = (*mountRoot)(nil)
	_ fs.NodeLookuper  = (*mountRoot)(nil)
	_ fs.NodeGetattrer = (*mountRoot)(nil)
	_ fs.NodeStatfser  = (*mountRoot)(nil)
)

func dirAttr(out *fuse.Attr) {
	out.Mode = syscall.S_IFDIR | 0o555
	out.Nlink = 2
}

func (r *mountRoot) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	dirAttr(&out.Attr)
	return 0
}

// Statfs says the filesystem is full and read-only, with nothing free:
// no tool should plan to write here.
func (r *mountRoot) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = 255
	return 0
}

// errno turns an error of the catalog into what a filesystem caller gets,
// logging what they cannot be told.
func (m *mountFS) errno(what string, err error) syscall.Errno {
	if errors.Is(err, catalog.ErrNotFound) {
		return syscall.ENOENT
	}
	m.log("%s: %v", what, err)
	return syscall.EIO
}

func (r *mountRoot) volumes() ([]string, error) {
	var names []string
	err := r.m.store.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vols {
			if _, err := tx.Latest(v.Name); err == nil {
				names = append(names, v.Name)
			}
		}
		return nil
	})
	return names, err
}

func (r *mountRoot) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	vols, err := r.volumes()
	if err != nil {
		return nil, r.m.errno("listing the volumes", err)
	}
	entries := make([]fuse.DirEntry, 0, len(vols))
	for _, v := range vols {
		name := catalog.DirName(v)
		entries = append(entries, fuse.DirEntry{Name: name, Mode: syscall.S_IFDIR, Ino: stableIno("volume", v)})
	}
	return fs.NewListDirStream(entries), 0
}

func (r *mountRoot) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	vol, err := catalog.ParseDirName(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	err = r.m.store.View(func(tx *catalog.Tx) error {
		_, err := tx.Latest(vol)
		return err
	})
	if err != nil {
		return nil, r.m.errno("looking up volume "+vol, err)
	}
	dirAttr(&out.Attr)
	return r.NewInode(ctx, &volumeDir{m: r.m, volume: vol}, fs.StableAttr{Mode: syscall.S_IFDIR, Ino: stableIno("volume", vol)}), 0
}

// volumeDir is MOUNTPOINT/<volume>: an image per snapshot, and latest.img.
type volumeDir struct {
	fs.Inode
	m      *mountFS
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

func (d *volumeDir) snapshots() ([]catalog.Snapshot, error) {
	var snaps []catalog.Snapshot
	err := d.m.store.View(func(tx *catalog.Tx) error {
		var err error
		snaps, err = tx.Snapshots(d.volume)
		return err
	})
	return snaps, err
}

func (d *volumeDir) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	snaps, err := d.snapshots()
	if err != nil {
		return nil, d.m.errno("listing the snapshots of "+d.volume, err)
	}
	entries := make([]fuse.DirEntry, 0, len(snaps)+1)
	for _, sn := range snaps {
		entries = append(entries, fuse.DirEntry{Name: imageName(sn), Mode: syscall.S_IFREG, Ino: stableIno("snapshot", sn.ID)})
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
	snaps, err := d.snapshots()
	if err != nil {
		return nil, d.m.errno("looking up "+name+" in "+d.volume, err)
	}
	var found *catalog.Snapshot
	for i := range snaps {
		if name == imageName(snaps[i]) || (name == latestName && i == len(snaps)-1) {
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

// imageNode is one snapshot's image. The reader (its chain's files and
// the index) is opened by the first open and closed by the last release.
type imageNode struct {
	fs.Inode
	m    *mountFS
	snap catalog.Snapshot

	mu     sync.Mutex
	pit    *pointInTime
	reader *archive.SnapshotReader
	opens  int
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
	if n.reader == nil {
		if errno := n.openReader(); errno != 0 {
			return nil, 0, errno
		}
	}
	n.opens++
	// An image never changes: keep the kernel's cached pages across opens.
	return &imageHandle{n: n}, fuse.FOPEN_KEEP_CACHE, 0
}

// openReader opens the snapshot's chain and indexes it. The snapshot is
// looked up again by id: a prune since the lookup may have merged its
// files into new ones (the same data), or removed it (ENOENT).
func (n *imageNode) openReader() syscall.Errno {
	what := fmt.Sprintf("%s #%d %s", n.snap.Volume, n.snap.Seq, n.snap.ID)
	pit, err := n.m.store.openPointInTime(func(tx *catalog.Tx) (catalog.Snapshot, error) { return tx.Snapshot(n.snap.ID) })
	if err != nil {
		return n.m.errno("opening "+what, err)
	}
	r, err := archive.OpenSnapshot(n.m.ctx, pit.inputs, archive.SnapshotOptions{Log: func(msg string) { n.m.log("%s", msg) }})
	if err == nil && r.Size() != n.snap.VolumeSize {
		err = fmt.Errorf("the files say the volume is %d bytes, the catalog %d: %w; run thinback verify", r.Size(), n.snap.VolumeSize, catalog.ErrCorrupt)
	}
	if err != nil {
		if r != nil {
			r.Close()
		}
		pit.Close()
		return n.m.errno("opening "+what, n.m.store.damaged(err))
	}
	n.pit, n.reader = pit, r
	n.m.mu.Lock()
	n.m.open[n] = true
	n.m.mu.Unlock()
	return 0
}

// closeReader closes the reader and the files; n.mu is held.
func (n *imageNode) closeReader() {
	n.reader.Close()
	if err := n.pit.Close(); err != nil {
		n.m.log("closing the files of %s #%d: %v", n.snap.Volume, n.snap.Seq, err)
	}
	n.reader, n.pit = nil, nil
	n.m.mu.Lock()
	delete(n.m.open, n)
	n.m.mu.Unlock()
}

func (n *imageNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h, ok := f.(*imageHandle)
	if !ok || h.n != n {
		return nil, syscall.EBADF
	}
	n.mu.Lock()
	r := n.reader
	n.mu.Unlock()
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

// Lseek answers SEEK_DATA and SEEK_HOLE from the index, so that cp
// --sparse, qemu-img and the like skip the volume's zero ranges without
// reading them.
func (n *imageNode) Lseek(ctx context.Context, f fs.FileHandle, off uint64, whence uint32) (uint64, syscall.Errno) {
	h, ok := f.(*imageHandle)
	if !ok || h.n != n {
		return 0, syscall.EBADF
	}
	n.mu.Lock()
	r := n.reader
	n.mu.Unlock()
	if r == nil || off > uint64(r.Size()) {
		return 0, syscall.ENXIO
	}
	var to int64
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
	if n.opens == 0 && n.reader != nil {
		n.closeReader()
	}
	return 0
}

func newStderrLogger(e *env) *log.Logger {
	return log.New(e.stderr, "thinback: fuse: ", log.Lmicroseconds)
}
