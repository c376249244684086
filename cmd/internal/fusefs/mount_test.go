package fusefs

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/lvmthin/lvmtest"
	"golang.org/x/sys/unix"
)

// TestGuest runs TestMount in the User-Mode Linux guest, whose kernel
// has FUSE: there it must not skip.
func TestGuest(t *testing.T) {
	lvmtest.RunGuest(t, "../../..", lvmtest.Options{Pattern: "^TestMount$", Timeout: 5 * time.Minute})
}

// TestMount: the file system mounted on this kernel (root and /dev/fuse;
// skipped elsewhere, never in the guest): the tree lists, reads, seeks
// and refuses every change as the nodes say, through the kernel's own
// caches and checks; a snapshot added while mounted is listed and read;
// unmounted, every reader opened is closed.
func TestMount(t *testing.T) {
	skip := t.Skip
	if lvmtest.InGuest() {
		skip = t.Fatal
	}
	if os.Geteuid() != 0 {
		skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		skip("no /dev/fuse")
	}
	rnd := newRand(t)
	src := newFakeSource()
	img := make([]byte, 3<<20+12345)
	for i := range img[:2<<20] {
		img[i] = byte(rnd.Uint32())
	}
	a1 := src.add("vg0/vm1", append([]byte(nil), img...))
	for i := range img[1<<20 : 1<<20+70000] {
		img[1<<20+i] = byte(rnd.Uint32())
	}
	a2 := src.add("vg0/vm1", append([]byte(nil), img...))
	src.add("disk.img", img[:8192])

	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	l := &logRecorder{}
	m := New(t.Context(), src, l.log)
	server, err := Mount(dir, m, nil)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			skip("FUSE cannot mount here: ", err)
		}
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()
	unmounted := false
	t.Cleanup(func() {
		if !unmounted {
			unix.Unmount(dir, unix.MNT_DETACH)
			<-served
		}
	})

	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[1] == dir {
			line = l
		}
	}
	for _, want := range []string{" fuse.thinback ro,", "nosuid", "nodev", "noexec"} {
		if !strings.Contains(line, want) {
			t.Fatalf("the mount is %q, want %q in it", line, want)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil || sfs.Bavail != 0 || sfs.Bfree != 0 || sfs.Flags&unix.ST_RDONLY == 0 {
		t.Fatalf("statfs: %v, %+v; want read-only with nothing free", err, sfs)
	}

	if got := dirNames(t, dir); strings.Join(got, " ") != "disk.img vg0%2Fvm1" {
		t.Fatalf("the root lists %v", got)
	}
	vol := filepath.Join(dir, "vg0%2Fvm1")
	if got := dirNames(t, vol); strings.Join(got, " ") != ImageName(a1)+" "+ImageName(a2)+" latest.img" {
		t.Fatalf("vg0/vm1 lists %v", got)
	}
	var named, latest syscall.Stat_t
	if syscall.Stat(filepath.Join(vol, ImageName(a2)), &named) != nil || syscall.Stat(filepath.Join(vol, "latest.img"), &latest) != nil ||
		named.Ino != latest.Ino || named.Ino != stableIno("snapshot", a2.ID) || named.Size != int64(len(img)) || named.Mode != syscall.S_IFREG|0o444 ||
		named.Mtim.Sec != a2.Time.Unix() || named.Uid != uint32(os.Getuid()) {
		t.Fatalf("%s: %+v; latest.img: %+v", ImageName(a2), named, latest)
	}
	if _, err := os.Stat(filepath.Join(dir, "vg0%2Fnothere")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a volume that is not there: %v", err)
	}

	for _, sn := range []catalog.Snapshot{a1, a2} {
		got, err := os.ReadFile(filepath.Join(vol, ImageName(sn)))
		if err != nil || !bytes.Equal(got, src.data[sn.ID]) {
			t.Fatalf("%s: %v, or other bytes", ImageName(sn), err)
		}
	}
	// SEEK_DATA and SEEK_HOLE come from the image: #1 is 2 MiB of data,
	// then zeroes.
	f, err := os.Open(filepath.Join(vol, ImageName(a1)))
	if err != nil {
		t.Fatal(err)
	}
	hole, herr := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
	_, derr := unix.Seek(int(f.Fd()), 2<<20+8192, unix.SEEK_DATA)
	f.Close()
	if herr != nil || hole != 2<<20 || !errors.Is(derr, syscall.ENXIO) {
		t.Fatalf("SEEK_HOLE from 0: %d, %v; SEEK_DATA after the data: %v; want 2 MiB and ENXIO", hole, herr, derr)
	}

	// Read-only in every way, refused by the kernel or by the nodes.
	for what, try := range map[string]func() error{
		"open for writing": func() error { _, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_WRONLY, 0); return err },
		"open read-write":  func() error { _, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_RDWR, 0); return err },
		"truncate":         func() error { return os.Truncate(filepath.Join(vol, ImageName(a1)), 0) },
		"remove":           func() error { return os.Remove(filepath.Join(vol, ImageName(a1))) },
		"mkdir":            func() error { return os.Mkdir(filepath.Join(vol, "x"), 0o700) },
		"create":           func() error { _, err := os.Create(filepath.Join(dir, "new")); return err },
		"chmod":            func() error { return os.Chmod(filepath.Join(vol, ImageName(a1)), 0o777) },
		"rename": func() error {
			return os.Rename(filepath.Join(vol, ImageName(a1)), filepath.Join(vol, "y.img"))
		},
	} {
		if err := try(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: %v, want EROFS", what, err)
		}
	}

	// The damaged range: EIO for the reads that meet it, the others read.
	// O_DIRECT: each read reaches the file system as it is.
	src.setBad(2<<20+4096, 2<<20+4096+100) // for the images opened from now on
	fd, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := alignedBuffer(4096)
	bad := 0
	for off := int64(2 << 20); off < 2<<20+64<<10; off += 4096 {
		n, err := fd.ReadAt(p, off)
		switch {
		case off < 2<<20+4096+100 && off+4096 > 2<<20+4096:
			if !errors.Is(err, syscall.EIO) {
				t.Fatalf("a read at %d over the damaged range: %v, want EIO", off, err)
			}
			bad++
		case err != nil && err != io.EOF:
			t.Fatalf("a read at %d: %v", off, err)
		case !bytes.Equal(p[:n], img[off:off+int64(n)]):
			t.Fatalf("a read at %d: other bytes than the image's", off)
		}
	}
	fd.Close()
	src.setBad(-1, -1)
	if bad != 1 {
		t.Fatalf("%d reads met the damaged range, want 1", bad)
	}

	// A snapshot backed up while mounted: listed, and read by its name.
	clear(img[:4096])
	a3 := src.add("vg0/vm1", append([]byte(nil), img...))
	if got := dirNames(t, vol); len(got) != 4 || got[2] != ImageName(a3) {
		t.Fatalf("after a third snapshot vg0/vm1 lists %v", got)
	}
	if got, err := os.ReadFile(filepath.Join(vol, ImageName(a3))); err != nil || !bytes.Equal(got, img) {
		t.Fatalf("%s: %v, or other bytes", ImageName(a3), err)
	}

	if err := unix.Unmount(dir, 0); err != nil {
		t.Fatal(err)
	}
	unmounted = true
	<-served
	m.Close()
	if opens, closes, _ := src.stats(); opens == 0 || opens != closes {
		t.Fatalf("unmounted: %d readers opened, %d closed", opens, closes)
	}
	if lines := l.take(); len(lines) != 0 {
		t.Fatalf("logged %q", lines)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names
}

// alignedBuffer returns n bytes aligned for O_DIRECT.
func alignedBuffer(n int) []byte {
	b := make([]byte, n+4096)
	off := int(uintptr(unsafe.Pointer(&b[0])) & 4095)
	if off != 0 {
		off = 4096 - off
	}
	return b[off : off+n]
}
