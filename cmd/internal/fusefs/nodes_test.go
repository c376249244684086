package fusefs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/catalog"
	"golang.org/x/sys/unix"
)

// The nodes' methods, called as go-fuse calls them for the kernel: the
// tree is set up by fs.NewNodeFS (the bridge a mount uses), without a
// kernel.

// logRecorder keeps what the file system logs.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
}

func (l *logRecorder) log(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, args...))
}

func (l *logRecorder) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	lines := l.lines
	l.lines = nil
	return lines
}

// newTree returns the file system of src and its root node, in a tree
// without a kernel.
func newTree(t *testing.T, src Source) (*FS, *root, *logRecorder) {
	t.Helper()
	l := &logRecorder{}
	m := New(context.Background(), src, l.log)
	r := m.Root()
	fs.NewNodeFS(r, &fs.Options{})
	return m, r.(*root), l
}

func names(t *testing.T, ds fs.DirStream) (names []string, inos []uint64) {
	t.Helper()
	defer ds.Close()
	for ds.HasNext() {
		e, errno := ds.Next()
		if errno != 0 {
			t.Fatalf("Readdir: %v", errno)
		}
		names = append(names, e.Name)
		inos = append(inos, e.Ino)
	}
	return names, inos
}

func lookupVolume(t *testing.T, r *root, volume string) *volumeDir {
	t.Helper()
	var out fuse.EntryOut
	in, errno := r.Lookup(context.Background(), catalog.DirName(volume), &out)
	if errno != 0 {
		t.Fatalf("Lookup(%s): %v", catalog.DirName(volume), errno)
	}
	if out.Attr.Mode != syscall.S_IFDIR|0o555 || in.StableAttr().Ino != stableIno("volume", volume) {
		t.Fatalf("volume %s: mode %o, ino %d", volume, out.Attr.Mode, in.StableAttr().Ino)
	}
	return in.Operations().(*volumeDir)
}

func lookupImage(t *testing.T, d *volumeDir, name string) (*imageNode, fuse.EntryOut) {
	t.Helper()
	var out fuse.EntryOut
	in, errno := d.Lookup(context.Background(), name, &out)
	if errno != 0 {
		t.Fatalf("Lookup(%s) in %s: %v", name, d.volume, errno)
	}
	return in.Operations().(*imageNode), out
}

// TestTree: the root lists the volumes with snapshots under their
// escaped names, each volume an image per snapshot and latest.img, which
// is the newest snapshot's own inode; inode numbers do not depend on the
// mount; names that are not there are ENOENT.
func TestTree(t *testing.T) {
	src := newFakeSource()
	a1 := src.add("vg0/vm1", make([]byte, 8192))
	a2 := src.add("vg0/vm1", make([]byte, 12288))
	b1 := src.add("disk.img", make([]byte, 4096))
	src.snaps["vg0/empty"] = nil // a volume whose snapshots were all pruned
	_, r, l := newTree(t, src)

	var attr fuse.AttrOut
	if errno := r.Getattr(context.Background(), nil, &attr); errno != 0 || attr.Mode != syscall.S_IFDIR|0o555 {
		t.Fatalf("root Getattr: %v, mode %o", errno, attr.Mode)
	}
	var st fuse.StatfsOut
	if errno := r.Statfs(context.Background(), &st); errno != 0 || st.Bfree != 0 || st.Bavail != 0 || st.Ffree != 0 || st.Bsize != 4096 || st.NameLen != 255 {
		t.Fatalf("Statfs: %v, %+v; want nothing free", errno, st)
	}
	ds, errno := r.Readdir(context.Background())
	if errno != 0 {
		t.Fatal(errno)
	}
	got, inos := names(t, ds)
	want := map[string]uint64{"vg0%2Fvm1": stableIno("volume", "vg0/vm1"), "disk.img": stableIno("volume", "disk.img")}
	if len(got) != len(want) {
		t.Fatalf("the root lists %v, want %v", got, want)
	}
	for i, n := range got {
		if ino, ok := want[n]; !ok || ino != inos[i] {
			t.Fatalf("the root lists %s with ino %d, want %v", n, inos[i], want)
		}
	}

	for _, name := range []string{"vg0/vm1", "vg0%2fvm1", "nothere", "vg0%2Fempty", "", ".."} {
		var out fuse.EntryOut
		if in, errno := r.Lookup(context.Background(), name, &out); errno != syscall.ENOENT || in != nil {
			t.Errorf("root Lookup(%q): %v, want ENOENT", name, errno)
		}
	}

	d := lookupVolume(t, r, "vg0/vm1")
	if errno := d.Getattr(context.Background(), nil, &attr); errno != 0 || attr.Mode != syscall.S_IFDIR|0o555 {
		t.Fatalf("volume Getattr: %v, mode %o", errno, attr.Mode)
	}
	ds, errno = d.Readdir(context.Background())
	if errno != 0 {
		t.Fatal(errno)
	}
	got, inos = names(t, ds)
	wantNames := []string{"1-20261120T030001Z.img", "2-20261120T030002Z.img", "latest.img"}
	wantInos := []uint64{stableIno("snapshot", a1.ID), stableIno("snapshot", a2.ID), stableIno("snapshot", a2.ID)}
	if fmt.Sprint(got) != fmt.Sprint(wantNames) || fmt.Sprint(inos) != fmt.Sprint(wantInos) {
		t.Fatalf("vg0/vm1 lists %v %v, want %v %v", got, inos, wantNames, wantInos)
	}
	if ImageName(a1) != wantNames[0] {
		t.Fatalf("ImageName = %s, want %s", ImageName(a1), wantNames[0])
	}

	n, out := lookupImage(t, d, "1-20261120T030001Z.img")
	if n.snap.ID != a1.ID || out.Attr.Size != 8192 || out.Attr.Mode != syscall.S_IFREG|0o444 || out.Attr.Blocks != 16 ||
		out.Attr.Mtime != uint64(a1.Time.Unix()) || out.Attr.Mtimensec != 123456789 || out.EntryTimeout() != imageTimeout || out.AttrTimeout() != imageTimeout {
		t.Fatalf("#1's entry: %+v (entry timeout %v, attr timeout %v)", out.Attr, out.EntryTimeout(), out.AttrTimeout())
	}
	latest, out := lookupImage(t, d, "latest.img")
	if latest.snap.ID != a2.ID || out.Attr.Size != 12288 || latest.StableAttr().Ino != stableIno("snapshot", a2.ID) {
		t.Fatalf("latest.img is %s (%d bytes, ino %d), want #2", latest.snap.ID, out.Attr.Size, latest.StableAttr().Ino)
	}
	// latest.img is looked up again (the newest changes); a named image
	// always means its snapshot.
	if out.EntryTimeout() != 0 || out.AttrTimeout() != imageTimeout {
		t.Fatalf("latest.img's entry timeout %v, attr timeout %v", out.EntryTimeout(), out.AttrTimeout())
	}
	if errno := latest.Getattr(context.Background(), nil, &attr); errno != 0 || attr.Size != 12288 || attr.Timeout() != imageTimeout {
		t.Fatalf("latest.img Getattr: %v, %+v", errno, attr)
	}
	for _, name := range []string{"3-20261120T030003Z.img", "1-20261120T030002Z.img", "x-20261120T030001Z.img", "1-20261120T030001Z", "latest", "1", ""} {
		var out fuse.EntryOut
		if in, errno := d.Lookup(context.Background(), name, &out); errno != syscall.ENOENT || in != nil {
			t.Errorf("Lookup(%q) in vg0/vm1: %v, want ENOENT", name, errno)
		}
	}
	// The same numbers in another mount.
	_, r2, _ := newTree(t, src)
	if n2, _ := lookupImage(t, lookupVolume(t, r2, "disk.img"), "latest.img"); n2.StableAttr().Ino != stableIno("snapshot", b1.ID) {
		t.Fatalf("disk.img's latest.img: ino %d in another mount", n2.StableAttr().Ino)
	}
	if stableIno("volume", "x") == stableIno("snapshot", "x") || stableIno("volume", "x")&(1<<63) == 0 {
		t.Fatal("a volume and a snapshot of the same name share an inode number, or it is in go-fuse's automatic range")
	}
	if lines := l.take(); len(lines) != 0 {
		t.Fatalf("logged %q", lines)
	}
}

// TestErrors: a failing source is EIO and a line in the log naming what
// failed; a snapshot gone (catalog.ErrNotFound) is ENOENT and no line; an
// image whose size is not the catalog's is refused and closed.
func TestErrors(t *testing.T) {
	src := newFakeSource()
	sn := src.add("vg0/vm1", make([]byte, 8192))
	m, r, l := newTree(t, src)
	d := lookupVolume(t, r, "vg0/vm1")
	n, _ := lookupImage(t, d, "latest.img")

	src.listErr = fmt.Errorf("catalog.db: %w", catalog.ErrCorrupt)
	if _, errno := r.Readdir(context.Background()); errno != syscall.EIO {
		t.Errorf("root Readdir with a failing source: %v", errno)
	}
	var out fuse.EntryOut
	if _, errno := r.Lookup(context.Background(), "vg0%2Fvm1", &out); errno != syscall.EIO {
		t.Errorf("root Lookup with a failing source: %v", errno)
	}
	if _, errno := d.Readdir(context.Background()); errno != syscall.EIO {
		t.Errorf("volume Readdir with a failing source: %v", errno)
	}
	if _, errno := d.Lookup(context.Background(), "latest.img", &out); errno != syscall.EIO {
		t.Errorf("volume Lookup with a failing source: %v", errno)
	}
	want := []string{
		"listing the volumes: catalog.db: ",
		"looking up volume vg0/vm1: catalog.db: ",
		"listing the snapshots of vg0/vm1: catalog.db: ",
		"looking up latest.img in vg0/vm1: catalog.db: ",
	}
	lines := l.take()
	if len(lines) != len(want) {
		t.Fatalf("logged %q, want %d lines", lines, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("logged %q, want it to start %q", lines[i], want[i])
		}
	}
	src.listErr = fmt.Errorf("volume vg0/vm1: %w", catalog.ErrNotFound)
	if _, errno := r.Lookup(context.Background(), "vg0%2Fvm1", &out); errno != syscall.ENOENT {
		t.Errorf("root Lookup of a volume the source does not know: %v", errno)
	}
	src.listErr = nil

	src.openErr = errors.New("volumes/vg0%2Fvm1/00000001.tbk: permission denied")
	if _, _, errno := n.Open(context.Background(), syscall.O_RDONLY); errno != syscall.EIO {
		t.Errorf("Open with a failing source: %v", errno)
	}
	src.openErr = fmt.Errorf("snapshot %s: %w", sn.ID, catalog.ErrNotFound) // pruned since the lookup
	if _, _, errno := n.Open(context.Background(), syscall.O_RDONLY); errno != syscall.ENOENT {
		t.Errorf("Open of a snapshot pruned since: %v", errno)
	}
	src.openErr = nil
	src.size = 4096
	if _, _, errno := n.Open(context.Background(), syscall.O_RDONLY); errno != syscall.EIO {
		t.Errorf("Open of an image of another size than the catalog's: %v", errno)
	}
	lines = l.take()
	what := fmt.Sprintf("opening vg0/vm1 #1 %s: ", sn.ID)
	if len(lines) != 2 || lines[0] != what+"volumes/vg0%2Fvm1/00000001.tbk: permission denied" ||
		lines[1] != what+"the files say the volume is 4096 bytes, the catalog 8192: "+catalog.ErrCorrupt.Error()+"; run thinback verify" {
		t.Fatalf("logged %q", lines)
	}
	if opens, closes, _ := src.stats(); opens != 1 || closes != 1 || n.img != nil || len(m.open) != 0 {
		t.Fatalf("the image of the wrong size: %d opened, %d closed, held %v", opens, closes, n.img)
	}
}

// kernel sends the file system requests through go-fuse's bridge, as
// the kernel's do: nodes looked up are kept, so two names of one inode
// are one node, and file handles are the bridge's.
type kernel struct {
	t   *testing.T
	raw fuse.RawFileSystem
}

func newKernel(t *testing.T, src Source) (*FS, *kernel, *logRecorder) {
	t.Helper()
	l := &logRecorder{}
	m := New(context.Background(), src, l.log)
	return m, &kernel{t: t, raw: fs.NewNodeFS(m.Root(), &fs.Options{})}, l
}

func (k *kernel) lookup(parent uint64, name string) (uint64, fuse.Status) {
	var out fuse.EntryOut
	st := k.raw.Lookup(nil, &fuse.InHeader{NodeId: parent}, name, &out)
	return out.NodeId, st
}

// image looks up MOUNTPOINT/<volume>/name.
func (k *kernel) image(volume, name string) uint64 {
	k.t.Helper()
	dir, st := k.lookup(fuse.FUSE_ROOT_ID, catalog.DirName(volume))
	if !st.Ok() {
		k.t.Fatalf("looking up %s: %v", volume, st)
	}
	node, st := k.lookup(dir, name)
	if !st.Ok() {
		k.t.Fatalf("looking up %s in %s: %v", name, volume, st)
	}
	return node
}

func (k *kernel) open(node uint64, flags uint32) (fh uint64, openFlags uint32, st fuse.Status) {
	var out fuse.OpenOut
	st = k.raw.Open(nil, &fuse.OpenIn{InHeader: fuse.InHeader{NodeId: node}, Flags: flags}, &out)
	return out.Fh, out.OpenFlags, st
}

func (k *kernel) read(node, fh uint64, p []byte, off int64) ([]byte, fuse.Status) {
	res, st := k.raw.Read(nil, &fuse.ReadIn{InHeader: fuse.InHeader{NodeId: node}, Fh: fh, Offset: uint64(off), Size: uint32(len(p))}, p)
	if !st.Ok() {
		return nil, st
	}
	b, st := res.Bytes(p)
	res.Done()
	return b, st
}

func (k *kernel) release(node, fh uint64) {
	k.raw.Release(nil, &fuse.ReleaseIn{InHeader: fuse.InHeader{NodeId: node}, Fh: fh})
}

func (k *kernel) lseek(node, fh, off uint64, whence uint32) (uint64, fuse.Status) {
	var out fuse.LseekOut
	st := k.raw.Lseek(nil, &fuse.LseekIn{InHeader: fuse.InHeader{NodeId: node}, Fh: fh, Offset: off, Whence: whence}, &out)
	return out.Offset, st
}

func errnoStatus(e syscall.Errno) fuse.Status { return fuse.Status(e) }

// TestImageReads: an image's reader is opened by its first open and
// closed by its last release, shared by its two names; reads return the
// point in time's bytes, a short read only at its end, and EIO for a
// damaged range; every change is EROFS; Close closes what the kernel
// left open.
func TestImageReads(t *testing.T) {
	rnd := newRand(t)
	src := newFakeSource()
	img := make([]byte, 1<<20+rnd.IntN(1<<20))
	for i := range img[:len(img)/2] {
		img[i] = byte(rnd.Uint32())
	}
	src.add("vg0/vm1", img)
	src.badFrom, src.badTo = int64(len(img)/2), int64(len(img)/2)+100
	m, k, l := newKernel(t, src)
	named := k.image("vg0/vm1", "1-20261120T030001Z.img")
	latest := k.image("vg0/vm1", "latest.img")
	if named != latest {
		t.Fatalf("latest.img and its snapshot's name are two nodes (%d, %d)", named, latest)
	}

	for _, flags := range []uint32{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC, syscall.O_RDONLY | syscall.O_APPEND} {
		if _, _, st := k.open(named, flags); st != errnoStatus(syscall.EROFS) {
			t.Errorf("open(%#x): %v, want EROFS", flags, st)
		}
	}
	var attr fuse.AttrOut
	if st := k.raw.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: fuse.InHeader{NodeId: named}, Valid: fuse.FATTR_SIZE}}, &attr); st != errnoStatus(syscall.EROFS) {
		t.Errorf("truncate: %v, want EROFS", st)
	}
	if st := k.raw.SetAttr(nil, &fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{InHeader: fuse.InHeader{NodeId: named}, Valid: fuse.FATTR_MODE, Mode: 0o777}}, &attr); st != errnoStatus(syscall.EROFS) {
		t.Errorf("chmod: %v, want EROFS", st)
	}
	if opens, _, _ := src.stats(); opens != 0 {
		t.Fatalf("a refused open opened the image %d times", opens)
	}

	fh1, fl, st := k.open(named, syscall.O_RDONLY)
	if !st.Ok() || fl&fuse.FOPEN_KEEP_CACHE == 0 {
		t.Fatalf("open: %v, flags %#x", st, fl)
	}
	fh2, _, st := k.open(latest, syscall.O_RDONLY|syscall.O_NONBLOCK)
	if !st.Ok() {
		t.Fatal(st)
	}
	if opens, _, _ := src.stats(); opens != 1 {
		t.Fatalf("two opens of one image opened its reader %d times", opens)
	}
	buf := make([]byte, 256<<10)
	for i := 0; i < 200; i++ {
		off := rnd.Int64N(int64(len(img)))
		p := buf[:1+rnd.IntN(len(buf))]
		fh := fh1
		if i%2 == 1 {
			fh = fh2
		}
		got, st := k.read(named, fh, p, off)
		if off < src.badTo && off+int64(len(p)) > src.badFrom {
			if st != errnoStatus(syscall.EIO) {
				t.Fatalf("read(%d, %d) over the damaged range: %v, want EIO", len(p), off, st)
			}
			continue
		}
		if !st.Ok() {
			t.Fatalf("read(%d, %d): %v", len(p), off, st)
		}
		want := img[off:min(off+int64(len(p)), int64(len(img)))]
		if !bytes.Equal(got, want) {
			t.Fatalf("read(%d, %d): %d bytes, not the image's %d", len(p), off, len(got), len(want))
		}
	}
	if got, st := k.read(named, fh1, buf, int64(len(img))); !st.Ok() || len(got) != 0 {
		t.Fatalf("read at the end: %v, %d bytes", st, len(got))
	}
	// A handle of another image (the bridge never passes one; the node
	// checks anyway).
	other := &imageNode{}
	n := &imageNode{m: m}
	if _, errno := n.Read(context.Background(), &imageHandle{n: other}, buf, 0); errno != syscall.EBADF {
		t.Fatalf("Read through another image's handle: %v, want EBADF", errno)
	}
	if _, errno := n.Lseek(context.Background(), &imageHandle{n: other}, 0, unix.SEEK_DATA); errno != syscall.EBADF {
		t.Errorf("Lseek through another image's handle: %v, want EBADF", errno)
	}

	k.release(named, fh1)
	if _, closes, _ := src.stats(); closes != 0 {
		t.Fatal("the first of two releases closed the image")
	}
	k.release(latest, fh2)
	if _, closes, _ := src.stats(); closes != 1 {
		t.Fatalf("the last release: %d closed", closes)
	}

	// Open, and left open by the kernel: Close closes it, once.
	if _, _, st := k.open(named, syscall.O_RDONLY); !st.Ok() {
		t.Fatal(st)
	}
	m.Close()
	m.Close()
	if opens, closes, _ := src.stats(); opens != 2 || closes != 2 {
		t.Fatalf("after Close: %d opened, %d closed", opens, closes)
	}
	if lines := l.take(); len(lines) != 0 {
		t.Fatalf("logged %q", lines)
	}
}

// TestImageConcurrent: lookups, opens, reads and releases of one image
// by both its names from many goroutines at once (run with -race) keep
// one reader at a time, and close every reader they open.
func TestImageConcurrent(t *testing.T) {
	rnd := newRand(t)
	src := newFakeSource()
	img := make([]byte, 256<<10)
	for i := range img {
		img[i] = byte(rnd.Uint32())
	}
	src.add("vg0/vm1", img)
	_, k, l := newKernel(t, src)
	dir, st := k.lookup(fuse.FUSE_ROOT_ID, "vg0%2Fvm1")
	if !st.Ok() {
		t.Fatal(st)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		seed := rnd.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "latest.img"
			if seed%2 == 0 {
				name = "1-20261120T030001Z.img"
			}
			node, st := k.lookup(dir, name)
			if !st.Ok() {
				errs <- fmt.Errorf("lookup(%s): %v", name, st)
				return
			}
			p := make([]byte, 4096)
			for i := uint64(0); i < 50; i++ {
				fh, _, st := k.open(node, syscall.O_RDONLY)
				if !st.Ok() {
					errs <- fmt.Errorf("open: %v", st)
					return
				}
				off := int64((seed + i*7919) % uint64(len(img)-len(p)))
				got, st := k.read(node, fh, p, off)
				if !st.Ok() || !bytes.Equal(got, img[off:off+int64(len(p))]) {
					errs <- fmt.Errorf("read(%d): %v, or other bytes", off, st)
					return
				}
				k.release(node, fh)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	opens, closes, _ := src.stats()
	if opens == 0 || opens != closes || src.maxOpen != 1 {
		t.Fatalf("%d readers opened, %d closed, at most %d at once; want every one closed, one at a time", opens, closes, src.maxOpen)
	}
	if lines := l.take(); len(lines) != 0 {
		t.Fatalf("logged %q", lines)
	}
}

// TestLseek: SEEK_DATA and SEEK_HOLE are the image's answers; past the
// end, or where there is none, ENXIO; other whences are the kernel's.
func TestLseek(t *testing.T) {
	src := newFakeSource()
	img := make([]byte, 10*fakeBlock+100) // data in blocks 2, 3 and 10
	img[2*fakeBlock+5] = 1
	img[3*fakeBlock] = 1
	img[10*fakeBlock+99] = 1
	src.add("vg0/vm1", img)
	_, k, _ := newKernel(t, src)
	node := k.image("vg0/vm1", "latest.img")
	fh, _, st := k.open(node, syscall.O_RDONLY)
	if !st.Ok() {
		t.Fatal(st)
	}
	defer k.release(node, fh)
	size := uint64(len(img))
	for _, tc := range []struct {
		off    uint64
		whence uint32
		want   uint64
		errno  syscall.Errno
	}{
		{0, unix.SEEK_DATA, 2 * fakeBlock, 0},
		{2*fakeBlock + 7, unix.SEEK_DATA, 2*fakeBlock + 7, 0},
		{4 * fakeBlock, unix.SEEK_DATA, 10 * fakeBlock, 0},
		{0, unix.SEEK_HOLE, 0, 0},
		{2 * fakeBlock, unix.SEEK_HOLE, 4 * fakeBlock, 0},
		{10 * fakeBlock, unix.SEEK_HOLE, size, 0},
		{size, unix.SEEK_DATA, 0, syscall.ENXIO},
		{size, unix.SEEK_HOLE, 0, syscall.ENXIO},
		{size + 1, unix.SEEK_HOLE, 0, syscall.ENXIO},
		{0, unix.SEEK_SET, 0, syscall.EINVAL},
		{0, unix.SEEK_END, 0, syscall.EINVAL},
	} {
		got, st := k.lseek(node, fh, tc.off, tc.whence)
		if st != errnoStatus(tc.errno) || (tc.errno == 0 && got != tc.want) {
			t.Errorf("lseek(%d, %d) = %d, %v; want %d, %v", tc.off, tc.whence, got, st, tc.want, tc.errno)
		}
	}
}

// TestOpenContext: the reader is opened with the file system's context,
// whose cancellation (^C on a busy mount) does not reach it: the mount
// goes on serving.
func TestOpenContext(t *testing.T) {
	src := newFakeSource()
	src.add("vg0/vm1", make([]byte, 4096))
	ctx, cancel := context.WithCancel(context.Background())
	m := New(ctx, src, (&logRecorder{}).log)
	r := m.Root()
	fs.NewNodeFS(r, &fs.Options{})
	cancel()
	n, _ := lookupImage(t, lookupVolume(t, r.(*root), "vg0/vm1"), "latest.img")
	fh, _, errno := n.Open(context.Background(), syscall.O_RDONLY)
	if errno != 0 {
		t.Fatalf("Open after the context was cancelled: %v", errno)
	}
	n.Release(context.Background(), fh)
}
