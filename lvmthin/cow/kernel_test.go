package cow

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestReadKernel reads the stores the kernel built (testdata/cow/README.md)
// and compares them with the chunks the writes that built them touched.
func TestReadKernel(t *testing.T) {
	tests := []struct {
		name       string
		chunk      int64
		exceptions int64
		areas      int64
	}{
		{"small", 4096, 18, 1},
		{"areas", 4096, 600, 3},
		{"chunk64k", 64 << 10, 6, 1},
		{"overflowed", 4096, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := fixture(t, tt.name+".cow.gz")
			if len(img) != 4<<20 {
				t.Fatalf("store of %d bytes", len(img))
			}
			text, err := os.ReadFile(filepath.Join("..", "..", "testdata", "cow", tt.name+".chunks"))
			if err != nil {
				t.Fatal(err)
			}
			runs, st, err := readAll(bytes.NewReader(img), Options{Name: tt.name, Size: int64(len(img)), OriginSize: 64 << 20})
			if strings.TrimSpace(string(text)) == "invalidated" {
				want := "snapshot invalidated: overflowed, byte 4: valid flag is 0: the kernel invalidated the snapshot (its COW space filled up, or an I/O error); its exception table is incomplete"
				if !errors.Is(err, ErrInvalidated) || err.Error() != want || st.Header.ChunkSize() != tt.chunk {
					t.Fatalf("%v (header %+v)", err, st.Header)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var want []uint64
			for _, f := range strings.Fields(string(text)) {
				c, err := strconv.ParseUint(f, 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				want = append(want, c)
			}
			if got := expand(runs); !slices.Equal(got, want) {
				t.Errorf("chunks %v\nwant %v", got, want)
			}
			if st.Header.ChunkSize() != tt.chunk || st.Exceptions != tt.exceptions || st.Areas != tt.areas {
				t.Errorf("stats %+v", st)
			}
			// The naive reader agrees, and the origin size is enforced:
			// one chunk less and the last chunk of "small" is outside.
			if chunks, _, err := reference(img, 64<<20); err != nil || !slices.Equal(chunks, want) {
				t.Errorf("reference: %v", err)
			}
			if tt.name == "small" {
				_, _, err := readAll(bytes.NewReader(img), Options{Name: "small", Size: int64(len(img)), OriginSize: 64<<20 - 4096})
				if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "old_chunk 16383 is past the end of the origin") {
					t.Errorf("smaller origin: %v", err)
				}
			}
		})
	}
}
