package archive

import (
	"bytes"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDataRegions walks a real sparse file: holes before, between and
// after two data regions, asked in ascending order, inside regions and on
// their edges.
func TestDataRegions(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "sparse.img"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const size, k = 4 << 20, 64 << 10
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{16 * k, 40 * k} {
		if _, err := f.WriteAt(bytes.Repeat([]byte{1}, 2*k), off); err != nil {
			t.Fatal(err)
		}
	}
	d := NewDataRegions(f)
	if start, _, err := d.At(0); err != nil {
		t.Fatal(err)
	} else if start == 0 {
		t.Skip("this filesystem reports no holes")
	}
	const none = math.MaxInt64
	for _, tc := range []struct{ off, start, end int64 }{
		{0, 16 * k, 18 * k},
		{10 * k, 16 * k, 18 * k},
		{16 * k, 16 * k, 18 * k},
		{17*k + 5, 16 * k, 18 * k},
		{18 * k, 40 * k, 42 * k},
		{41 * k, 40 * k, 42 * k},
		{42 * k, none, none},
		{size - 1, none, none},
		{size, none, none},
		{2 * size, none, none},
	} {
		start, end, err := d.At(tc.off)
		if err != nil || start != tc.start || end != tc.end {
			t.Errorf("At(%d) = [%d, %d), %v; want [%d, %d)", tc.off, start, end, err, tc.start, tc.end)
		}
	}
	// Offsets asked again out of order are looked up again.
	if start, end, err := d.At(0); err != nil || start != 16*k || end != 18*k {
		t.Errorf("At(0) again = [%d, %d), %v", start, end, err)
	}
}

// TestDataRegionsErrors: only "no SEEK_DATA here" means "read it all";
// any other failure is returned, naming the file.
func TestDataRegionsErrors(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "closed.img"))
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, _, err = NewDataRegions(f).At(0)
	if !errors.Is(err, unix.EBADF) || !bytes.Contains([]byte(err.Error()), []byte("closed.img")) {
		t.Fatalf("At on a closed file: %v", err)
	}
}
