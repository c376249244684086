package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/fusefs"
	"golang.org/x/sys/unix"
)

// The FUSE tree on this machine's own kernel, when it can mount (root and
// /dev/fuse); the User-Mode Linux guest runs testdata/guest/mount.txtar
// with ext4 and loop devices on top.

// mounted is a running thinback mount.
type mounted struct {
	cmd  *exec.Cmd
	dir  string
	out  *syncBuffer
	done chan error
}

func hasMount(dir string) bool {
	b, err := os.ReadFile("/proc/self/mounts")
	return err == nil && bytes.Contains(b, []byte(" "+dir+" fuse.thinback "))
}

// startMount runs thinback mount of store (with extra arguments) on a new directory and waits
// until the tree is there; it skips the test where FUSE cannot mount
// (TestGuest runs the mount tests again in the guest, where they can and
// where a skip fails the run).
func startMount(t *testing.T, work, store string, extra ...string) *mounted {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	dir := filepath.Join(work, "mnt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	m := &mounted{cmd: thinbackCmd(t, work, append([]string{"mount", "--store", store, dir}, extra...)...), dir: dir, out: new(syncBuffer), done: make(chan error, 1)}
	pr, pw := io.Pipe()
	m.cmd.Stderr = pw
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.done <- m.cmd.Wait(); pw.Close() }()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		said := false
		for sc.Scan() {
			m.out.WriteString(sc.Text() + "\n")
			if !said && strings.Contains(sc.Text(), "mounted store") {
				said = true
				ready <- true
			}
		}
		if !said {
			ready <- false
		}
	}()
	t.Cleanup(func() {
		if hasMount(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
		m.cmd.Process.Kill()
	})
	select {
	case ok := <-ready:
		if !ok {
			<-m.done
			if strings.Contains(m.out.String(), "operation not permitted") || strings.Contains(m.out.String(), "fusermount") {
				t.Skipf("FUSE cannot mount here: %s", m.out.String())
			}
			t.Fatalf("thinback mount failed:\n%s", m.out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("thinback mount did not start:\n%s", m.out.String())
	}
	if !hasMount(dir) {
		t.Fatalf("%s is not in /proc/self/mounts", dir)
	}
	return m
}

// stop sends sig and checks that the mount goes away and thinback exits 0.
func (m *mounted) stop(t *testing.T, sig os.Signal) {
	t.Helper()
	m.cmd.Process.Signal(sig)
	select {
	case err := <-m.done:
		if err != nil {
			t.Fatalf("thinback mount exited with %v:\n%s", err, m.out.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("thinback mount did not stop on %v:\n%s", sig, m.out.String())
	}
	if hasMount(m.dir) {
		t.Fatalf("%s is still mounted after %v", m.dir, sig)
	}
}

// TestMountHost: three points in time of an image, backed up into a
// store, read back through the mount byte for byte (whole and at random
// offsets); latest.img is the newest; every write is refused with EROFS;
// a point in time kept open keeps reading its data while a prune removes
// it; a damaged record is EIO for its range only; a busy mount is not
// unmounted by SIGINT, an idle one is (exit 0), and a second mount on the
// same directory is refused.
func TestMountHost(t *testing.T) {
	work := t.TempDir()
	store := filepath.Join(work, "store")
	r := seededRand(t)
	img := make([]byte, 6<<20+12345)
	r.Read(img[:4<<20])
	var states [][]byte
	for i := 0; i < 3; i++ {
		if i > 0 {
			off := r.Intn(len(img) - 600000)
			r.Read(img[off : off+500000])
			clear(img[r.Intn(len(img)-100000):][:70000])
		}
		if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, work, "backup", "--file", "disk.img", "--store", store)
		states = append(states, append([]byte(nil), img...))
	}
	m := startMount(t, work, store)
	vol := filepath.Join(m.dir, "disk.img")
	entries, err := os.ReadDir(vol)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if len(names) != 4 || names[3] != "latest.img" || !strings.HasPrefix(names[0], "1-") || !strings.HasSuffix(names[0], "Z.img") {
		t.Fatalf("the volume's directory holds %v", names)
	}
	for i, want := range states {
		got, err := os.ReadFile(filepath.Join(vol, names[i]))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s differs from the image at its time", names[i])
		}
		f, err := os.Open(filepath.Join(vol, names[i]))
		if err != nil {
			t.Fatal(err)
		}
		for k := 0; k < 50; k++ {
			off := r.Int63n(int64(len(want)))
			p := make([]byte, 1+r.Intn(300000))
			n, err := f.ReadAt(p, off)
			if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], want[off:off+int64(n)]) || (n < len(p) && off+int64(n) != int64(len(want))) {
				t.Fatalf("%s: ReadAt(%d, %d) = %d, %v, or other bytes", names[i], len(p), off, n, err)
			}
		}
		f.Close()
	}
	// SEEK_HOLE and SEEK_DATA come from the index: point #1 is 4 MiB of
	// data, then zeroes to its end.
	if f, err := os.Open(filepath.Join(vol, names[0])); err != nil {
		t.Fatal(err)
	} else {
		hole, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
		_, derr := unix.Seek(int(f.Fd()), 4<<20, unix.SEEK_DATA)
		f.Close()
		if err != nil || hole != 4<<20 || !errors.Is(derr, syscall.ENXIO) {
			t.Fatalf("%s: SEEK_HOLE from 0 gave %d, %v, SEEK_DATA from 4 MiB %v; want 4 MiB and ENXIO", names[0], hole, err, derr)
		}
	}
	var a, b syscall.Stat_t
	if syscall.Stat(filepath.Join(vol, "latest.img"), &a) != nil || syscall.Stat(filepath.Join(vol, names[2]), &b) != nil || a.Ino != b.Ino || a.Size != int64(len(img)) {
		t.Fatalf("latest.img (ino %d, %d bytes) is not %s (ino %d)", a.Ino, a.Size, names[2], b.Ino)
	}
	// Read-only in every way.
	for _, try := range []func() error{
		func() error { _, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_WRONLY, 0); return err },
		func() error { _, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_RDWR, 0); return err },
		func() error { return os.Truncate(filepath.Join(vol, names[0]), 0) },
		func() error { return os.Remove(filepath.Join(vol, names[0])) },
		func() error { return os.Mkdir(filepath.Join(vol, "x"), 0o700) },
		func() error { _, err := os.Create(filepath.Join(m.dir, "new")); return err },
		func() error { return os.Chmod(filepath.Join(vol, names[0]), 0o777) },
		func() error { return os.Rename(filepath.Join(vol, names[0]), filepath.Join(vol, "y.img")) },
	} {
		if err := try(); !errors.Is(err, syscall.EROFS) {
			t.Fatalf("a write through the mount gave %v, want EROFS", err)
		}
	}
	// A second mount on the same directory is refused.
	out, err := thinbackCmd(t, work, "mount", "--store", store, m.dir).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "busy") {
		t.Fatalf("a second mount on %s: %v\n%s", m.dir, err, out)
	}

	// Point #1 open while a prune removes #1 and #2 (merging them into
	// #3's file): the open image reads its own data still.
	old, err := os.Open(filepath.Join(vol, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	run(t, work, "prune", "--store", store, "disk.img", "--keep-last", "1")
	got, err := io.ReadAll(old)
	if err != nil || !bytes.Equal(got, states[0]) {
		t.Fatalf("point #1, open across its prune: %v, or other bytes", err)
	}
	// Busy: SIGINT does not unmount, says why, and keeps serving.
	m.cmd.Process.Signal(os.Interrupt)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(m.out.String(), "busy") && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(m.out.String(), "busy") || !hasMount(m.dir) {
		t.Fatalf("SIGINT while an image is open: mounted %v, said:\n%s", hasMount(m.dir), m.out.String())
	}
	old.Close()
	time.Sleep(600 * time.Millisecond) // a second ^C, not the same one
	if names, err := os.ReadDir(vol); err != nil || len(names) != 2 {
		t.Fatalf("after the prune the volume's directory holds %v (%v), want #3 and latest.img", names, err)
	}
	got, err = os.ReadFile(filepath.Join(vol, "latest.img"))
	if err != nil || !bytes.Equal(got, states[2]) {
		t.Fatalf("latest.img after the prune: %v, or other bytes; said:\n%s", err, m.out.String())
	}

	// A damaged record: EIO for its range, the rest reads.
	var file string
	if err := catalog.View(filepath.Join(store, "catalog.db"), nil, func(tx *catalog.Tx) error {
		sn, err := tx.Latest("disk.img")
		file = filepath.Join(store, sn.File)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	delta, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// A byte in the middle of the payload of the file's first DATA record.
	rd := archive.NewReader(bytes.NewReader(delta))
	at := int64(-1)
	for at < 0 {
		rec, err := rd.Next()
		if err != nil {
			t.Fatalf("%s: no DATA record: %v", file, err)
		}
		if rec.Kind == archive.KindData && !rec.Compressed {
			at = rec.PayloadPos + rec.PayloadLen/2
		}
	}
	delta[at] ^= 0x08
	if err := os.WriteFile(file, delta, 0o600); err != nil { // in place: the same inode
		t.Fatal(err)
	}
	// O_DIRECT: past the kernel's cache of the pages read before.
	f, err := os.OpenFile(filepath.Join(vol, "latest.img"), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	bad, good := 0, 0
	p := directBuffer(4096)
	for off := int64(0); off < int64(len(img)); off += 64 << 10 {
		n, err := f.ReadAt(p, off)
		switch {
		case errors.Is(err, syscall.EIO):
			bad++
		case err != nil && err != io.EOF:
			t.Fatalf("read at %d: %v", off, err)
		case !bytes.Equal(p[:n], states[2][off:off+int64(n)]):
			t.Fatalf("read at %d returned other bytes than the image's", off)
		default:
			good++
		}
	}
	f.Close()
	if bad == 0 || good == 0 || !strings.Contains(m.out.String(), "checksum mismatch") || !strings.Contains(m.out.String(), filepath.Base(file)) {
		t.Fatalf("with a damaged record: %d ranges failed, %d read; logged:\n%s", bad, good, m.out.String())
	}
	t.Logf("damaged record: %d of %d ranges of 64 KiB gave EIO; logged:\n%s", bad, bad+good, m.out.String())
	m.stop(t, os.Interrupt)
}

// TestMountRefuses: a missing store, a missing, non-empty or non-directory
// mount point are refused before anything is mounted.
func TestMountRefuses(t *testing.T) {
	work := t.TempDir()
	run(t, work, "init", "--store", "store")
	os.Mkdir(filepath.Join(work, "full"), 0o700)
	os.WriteFile(filepath.Join(work, "full", "x"), nil, 0o600)
	os.WriteFile(filepath.Join(work, "file"), nil, 0o600)
	os.Mkdir(filepath.Join(work, "empty"), 0o700)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--store", "nostore", "empty"}, "is not a thinback store"},
		{[]string{"--store", "store", "nodir"}, "create an empty directory"},
		{[]string{"--store", "store", "full"}, "is not empty"},
		{[]string{"--store", "store", "file"}, "is not a directory"},
		{[]string{"empty"}, "give the backup store"},
	} {
		out, err := thinbackCmd(t, work, append([]string{"mount"}, tc.args...)...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("mount %v: %v, %s; want an error saying %q", tc.args, err, out, tc.want)
		}
		if hasMount(filepath.Join(work, "empty")) {
			t.Fatalf("mount %v mounted something", tc.args)
		}
	}
}

// syncBuffer is a bytes.Buffer written by one goroutine and read by
// another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) WriteString(x string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.WriteString(x)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// openImage opens snap's image in m as the kernel would, by its names
// from the root, and releases it again; it returns the open's errno.
func openImage(t *testing.T, m *fusefs.FS, snap catalog.Snapshot) syscall.Errno {
	t.Helper()
	root := m.Root()
	fs.NewNodeFS(root, nil) // the tree's bridge, without a kernel
	ctx := context.Background()
	var out fuse.EntryOut
	dir, errno := root.(fs.NodeLookuper).Lookup(ctx, catalog.DirName(snap.Volume), &out)
	if errno != 0 {
		t.Fatalf("looking up %s: %v", snap.Volume, errno)
	}
	img, errno := dir.Operations().(fs.NodeLookuper).Lookup(ctx, fusefs.ImageName(snap), &out)
	if errno != 0 {
		t.Fatalf("looking up %s in %s: %v", fusefs.ImageName(snap), snap.Volume, errno)
	}
	fh, _, errno := img.Operations().(fs.NodeOpener).Open(ctx, syscall.O_RDONLY)
	if errno == 0 {
		img.Operations().(fs.NodeReleaser).Release(ctx, fh)
	}
	return errno
}
