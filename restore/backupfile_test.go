package restore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
	"golang.org/x/sys/unix"
)

// diskImage is an image file being changed, and the bytes it holds.
type diskImage struct {
	t    testing.TB
	path string
	f    *os.File
	data []byte
}

// sparseCopy writes data to a new file, leaving its zero pages as holes.
func sparseCopy(t testing.TB, path string, data []byte) *diskImage {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d := &diskImage{t: t, path: path, f: f}
	d.truncate(len(data))
	for off := 0; off < len(data); off += 4096 {
		if page := data[off:min(off+4096, len(data))]; !allZero(page) {
			d.write(off, page)
		}
	}
	return d
}

func (d *diskImage) write(off int, b []byte) {
	if _, err := d.f.WriteAt(b, int64(off)); err != nil {
		d.t.Fatal(err)
	}
	copy(d.data[off:], b)
}

func (d *diskImage) punch(off, n int) {
	if err := unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
		d.t.Skipf("punching holes: %v", err)
	}
	clear(d.data[off : off+n])
}

func (d *diskImage) truncate(n int) {
	if err := d.f.Truncate(int64(n)); err != nil {
		d.t.Fatal(err)
	}
	if n <= len(d.data) {
		d.data = d.data[:n]
	} else {
		d.data = append(d.data, make([]byte, n-len(d.data))...)
	}
}

// change makes random changes to an image: data and zeroes written, holes
// punched (at unaligned offsets), and a resize.
func (w *world) change(d *diskImage) {
	for i := w.r.Intn(10); i > 0 && len(d.data) > 0; i-- {
		off := w.r.Intn(len(d.data))
		n := min(1+w.r.Intn(3*int(w.bs)), len(d.data)-off)
		switch w.r.Intn(4) {
		case 0:
			d.write(off, make([]byte, n))
		case 1:
			d.punch(off, n)
		default:
			b := make([]byte, n)
			w.r.Read(b)
			d.write(off, b)
		}
	}
	switch w.r.Intn(5) {
	case 0:
		d.truncate(len(d.data) + 1 + w.r.Intn(4*int(w.bs)))
		if w.r.Intn(2) == 0 {
			d.write(len(d.data)-10, []byte("grown data"))
		}
	case 1:
		d.truncate(1 + w.r.Intn(len(d.data)))
	}
}

// backupFile sends the changes of the image at path since the last
// snapshot of files, found from the chain's digests alone, into a new
// incremental, as backup --file does, and returns it with the new state.
func (w *world) backupFile(path string, size int64, prev *image, files []string, opts archive.DigestSourceOptions) (string, *image, archive.DigestStats) {
	w.t.Helper()
	cd, err := openChainDigests(openInputs(w.t, files...))
	if err != nil {
		w.t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	src, err := archive.NewDigestSource(f, size, cd.BlockSize(), cd, opts)
	if err != nil {
		w.t.Fatal(err)
	}
	defer src.Close()
	w.n++
	next := &image{name: fmt.Sprintf("backup%d", w.n), data: make([]byte, size),
		snap: archive.Snapshot{ID: archive.NewID(), Name: fmt.Sprintf("backup%d", w.n)}}
	out := filepath.Join(w.dir, next.name+".tbk")
	w.writeDelta(out, w.header(next, prev), src, archive.SendOptions{})
	return out, next, src.Stats()
}

// TestBackupFileFromDigests is backup --file end to end: an image changed
// in random places (data, zeroes, holes punched, growth, shrinking) is
// compared with the digests of its last backup's chain; the incremental
// sent from the differences, applied to a copy of the last backup, gives
// the image byte for byte, and merged into the chain gives a full of it.
func TestBackupFileFromDigests(t *testing.T) {
	w := newWorld(t)
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	for round := 0; round < rounds; round++ {
		w.bs = []int64{4096, 16384, 65536}[w.r.Intn(3)]
		imgs, files := w.randomChain(1 + w.r.Intn(4))
		prev := imgs[len(imgs)-1]
		disk := sparseCopy(t, filepath.Join(w.dir, fmt.Sprintf("disk%d.img", round)), prev.data)
		unchanged := w.r.Intn(4) == 0
		if !unchanged {
			w.change(disk)
		}
		opts := archive.DigestSourceOptions{Workers: w.r.Intn(4), ChunkSize: []int{0, int(w.bs), 5 * int(w.bs)}[w.r.Intn(3)]}
		incr, next, stats := w.backupFile(disk.path, int64(len(disk.data)), prev, files, opts)
		where := fmt.Sprintf("round %d: block size %d, %d files, %d -> %d bytes, %+v", round, w.bs, len(files), len(prev.data), len(disk.data), stats)
		t.Log(where)
		if got := applyOnto(t, w, prev, incr); !bytes.Equal(got, disk.data) {
			t.Fatalf("%s: the incremental applied to the last backup differs from the image", where)
		}
		_, recs, tr := readAll(t, incr)
		checkCoverage(t, w.header(next, prev), recs)
		if unchanged && tr.Records != 0 {
			t.Fatalf("%s: %d records for an unchanged image", where, tr.Records)
		}
		merged, _, _, _, err := mergeFiles(t, w, append(files, incr), MergeOptions{})
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if got := applyOnto(t, w, nil, merged); !bytes.Equal(got, disk.data) {
			t.Fatalf("%s: the chain merged with the new incremental differs from the image", where)
		}
	}
}

// TestBackupBlockDeviceFromDigests: the same from a block device, which has
// no holes to skip.
func TestBackupBlockDeviceFromDigests(t *testing.T) {
	w := newWorld(t)
	w.bs = 16384
	const size = 1 << 20
	v1 := w.image(w.random(size))
	files := []string{w.delta(v1, nil)}
	dev := loopDevice(t, size)
	next := w.mutate(v1.data, 20)
	clear(next[100<<10 : 300<<10])
	if err := os.WriteFile(dev, next, 0); err != nil {
		t.Fatal(err)
	}
	incr, _, stats := w.backupFile(dev, size, v1, files, archive.DigestSourceOptions{})
	if stats.Read != size {
		t.Fatalf("read %d bytes of a %d-byte device", stats.Read, size)
	}
	if got := applyOnto(t, w, v1, incr); !bytes.Equal(got, next) {
		t.Fatal("the incremental applied to the last backup differs from the device")
	}
}
