package archive

import (
	"bytes"
	"io"
	"testing"
)

// A ListSource gives its extents in turn, then io.EOF, and reads their
// data from its reader.
func TestListSource(t *testing.T) {
	data := []byte("0123456789abcdef")
	want := []Extent{{Offset: 0, Length: 4, Kind: KindData}, {Offset: 4, Length: 8, Kind: KindZero}, {Offset: 12, Length: 4, Kind: KindData}}
	s := &ListSource{R: bytes.NewReader(data), Extents: append([]Extent(nil), want...)}
	for i, w := range want {
		x, err := s.Next()
		if err != nil || x != w {
			t.Fatalf("extent %d: %+v, %v; want %+v", i, x, err, w)
		}
	}
	if x, err := s.Next(); err != io.EOF {
		t.Fatalf("after the last extent: %+v, %v; want io.EOF", x, err)
	}
	p := make([]byte, 4)
	if n, err := s.ReadAt(p, 12); n != 4 || err != nil || string(p) != "cdef" {
		t.Fatalf("ReadAt(12) = %d, %v, %q", n, err, p)
	}
}
