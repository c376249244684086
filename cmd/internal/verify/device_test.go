package verify

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/pointintime"
)

// imageOf is the volume newStore's volume "a" holds at snapshot n: all
// ones, then block h holds h for each incremental h in 2..n (backup).
func imageOf(n int) []byte {
	data := bytes.Repeat([]byte{1}, volSize)
	for h := 2; h <= n; h++ {
		copy(data[h*blockSize:(h+1)*blockSize], bytes.Repeat([]byte{byte(h)}, blockSize))
	}
	return data
}

// compare writes data to a file and compares it with snap of s.
func compare(t *testing.T, s *catalog.Store, snap catalog.Snapshot, data []byte) (*DeviceResult, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dev.img")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return compareFile(t, s, snap, path)
}

func compareFile(t *testing.T, s *catalog.Store, snap catalog.Snapshot, path string) (*DeviceResult, error) {
	t.Helper()
	ps := &pointintime.Store{Repository: s}
	pit, err := ps.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return tx.Snapshot(snap.ID) })
	if err != nil {
		t.Fatal(err)
	}
	defer pit.Close()
	return Device(context.Background(), pit, path, DeviceOptions{})
}

// TestDeviceEqual: the image of a full and that of a chain with two
// incrementals are found equal to their snapshots, every byte compared.
func TestDeviceEqual(t *testing.T) {
	s, snaps := newStore(t)
	for i, n := range []int{1, 2, 3} {
		r, err := compare(t, s, snaps[i], imageOf(n))
		if err != nil {
			t.Fatal(err)
		}
		if !r.Equal() || r.Ranges != 0 || r.Differ != 0 || len(r.Shown) != 0 || r.Size != volSize || r.DeviceSize != volSize || r.VolumeSize != volSize {
			t.Errorf("snapshot %d: %+v, want equal", n, r)
		}
	}
}

// TestDeviceChanged: changed bytes are reported at their exact offsets,
// in the range of blocks that holds them; adjacent blocks make one range.
func TestDeviceChanged(t *testing.T) {
	s, snaps := newStore(t)
	data := imageOf(3)
	for i := 5*blockSize + 100; i < 5*blockSize+200; i++ {
		data[i] ^= 0xff
	}
	// Two blocks, one of zeroes and one of other data: one range.
	clear(data[9*blockSize : 10*blockSize])
	data[10*blockSize+9] ^= 1
	r, err := compare(t, s, snaps[2], data)
	if err != nil {
		t.Fatal(err)
	}
	want := []DiffRange{
		{Off: 5 * blockSize, End: 6 * blockSize, First: 5*blockSize + 100, Last: 5*blockSize + 199},
		{Off: 9 * blockSize, End: 11 * blockSize, First: 9 * blockSize, Last: 10*blockSize + 9},
	}
	if !reflect.DeepEqual(r.Shown, want) || r.Ranges != 2 || r.Differ != 3*blockSize || r.Equal() {
		t.Errorf("got %+v, ranges %+v\nwant ranges %+v", r, r.Shown, want)
	}

	// The full alone against the chain's image: blocks 2 and 3 differ,
	// one range.
	r, err = compare(t, s, snaps[0], imageOf(3))
	if err != nil {
		t.Fatal(err)
	}
	want = []DiffRange{{Off: 2 * blockSize, End: 4 * blockSize, First: 2 * blockSize, Last: 4*blockSize - 1}}
	if !reflect.DeepEqual(r.Shown, want) || r.Ranges != 1 || r.Differ != 2*blockSize {
		t.Errorf("got %+v, ranges %+v\nwant ranges %+v", r, r.Shown, want)
	}

	// A block of zeroes where the snapshot has data says so.
	data = imageOf(1)
	clear(data[blockSize : 2*blockSize])
	r, err = compare(t, s, snaps[0], data)
	if err != nil {
		t.Fatal(err)
	}
	want = []DiffRange{{Off: blockSize, End: 2 * blockSize, First: blockSize, Last: 2*blockSize - 1, Zero: true}}
	if !reflect.DeepEqual(r.Shown, want) {
		t.Errorf("got ranges %+v, want %+v", r.Shown, want)
	}
}

// TestDeviceManyRanges: all differing ranges are counted, the first
// MaxShownDiffs returned.
func TestDeviceManyRanges(t *testing.T) {
	s, snaps := newStore(t)
	data := imageOf(1)
	const n = MaxShownDiffs + 5
	for i := range n {
		data[(2*i+1)*blockSize+i] ^= 1
	}
	r, err := compare(t, s, snaps[0], data)
	if err != nil {
		t.Fatal(err)
	}
	if r.Ranges != n || len(r.Shown) != MaxShownDiffs || r.Differ != n*blockSize {
		t.Fatalf("%d ranges, %d shown, %d bytes; want %d, %d, %d", r.Ranges, len(r.Shown), r.Differ, n, MaxShownDiffs, n*blockSize)
	}
	for i, d := range r.Shown {
		at := int64((2*i+1)*blockSize + i)
		if d.First != at || d.Last != at {
			t.Errorf("range %d: bytes %d to %d, want %d", i, d.First, d.Last, at)
		}
	}
}

// TestDeviceSize: a shorter file is compared as far as it goes and
// reported short; a longer one is compared over the volume and reported
// long.
func TestDeviceSize(t *testing.T) {
	s, snaps := newStore(t)
	r, err := compare(t, s, snaps[2], imageOf(3)[:volSize-blockSize])
	if err != nil {
		t.Fatal(err)
	}
	if !r.Short() || r.Long() || r.Equal() || r.Ranges != 0 || r.Size != volSize-blockSize || r.DeviceSize != volSize-blockSize {
		t.Errorf("shorter by a block: %+v", r)
	}
	long := append(imageOf(3), make([]byte, 3*blockSize)...)
	r, err = compare(t, s, snaps[2], long)
	if err != nil {
		t.Fatal(err)
	}
	if r.Short() || !r.Long() || r.Equal() || r.Ranges != 0 || r.Size != volSize || r.DeviceSize != volSize+3*blockSize {
		t.Errorf("longer: %+v", r)
	}
}

// TestDeviceErrors: a device that cannot be opened, or that is a FIFO,
// fails in StageDevice.
func TestDeviceErrors(t *testing.T) {
	s, snaps := newStore(t)
	dir := t.TempDir()
	_, err := compareFile(t, s, snaps[0], filepath.Join(dir, "missing"))
	var de *DeviceError
	if !errors.As(err, &de) || de.Stage != StageDevice || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing device: %v (%#v)", err, err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = compareFile(t, s, snaps[0], fifo)
	if !errors.As(err, &de) || de.Stage != StageDevice {
		t.Errorf("FIFO: %v (%#v)", err, err)
	}
}

// TestDeviceDamaged: a delta file damaged in a record is found while
// comparing, as a damaged file (archive.FormatError) in StageCompare,
// whether the device differs from the snapshot or not.
func TestDeviceDamaged(t *testing.T) {
	s, snaps := newStore(t)
	p := s.Path(snaps[0].File)
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	changed := imageOf(1)
	changed[5*blockSize] ^= 1
	for name, img := range map[string][]byte{"equal": imageOf(1), "changed": changed} {
		_, err = compare(t, s, snaps[0], img)
		var de *DeviceError
		var fe *archive.FormatError
		if !errors.As(err, &de) || de.Stage != StageCompare || !errors.As(err, &fe) {
			t.Errorf("%s image over a damaged file: %v (%#v), want a FormatError in StageCompare", name, err, err)
		}
	}
}
