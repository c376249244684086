package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// TestResumeWriter: a file closed after some records, then continued with
// ResumeWriter and closed again, is byte for byte the file written in one
// go; a damaged or cut file is not continued.
func TestResumeWriter(t *testing.T) {
	r := testRand(t)
	vol := volume(r, 64, 0)
	h := testHeader(int64(len(vol)))
	h.Parent.ID = DeriveID("test", "parent")
	h.ParentSize = h.VolumeSize
	half := int64(len(vol)) / 2 / 4096 * 4096
	// A DATA block before the split: a ZERO run across it would be one
	// record written in one go, and two when continued.
	vol[half-1] = 1
	send := func(w *Writer, from, to int64) {
		t.Helper()
		src := &memSource{data: vol, extents: []Extent{{Offset: from, Length: to - from, Kind: KindData}}}
		if err := Send(context.Background(), w, src, SendOptions{ChunkSize: 64 << 10}); err != nil {
			t.Fatal(err)
		}
	}

	var whole bytes.Buffer
	w := NewWriter(&whole)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	send(w, 0, half)
	send(w, half, int64(len(vol)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}

	wholeTrailer := w.Trailer()
	var first bytes.Buffer
	w = NewWriter(&first)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	send(w, 0, half)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	var rest bytes.Buffer
	rw, err := ResumeWriter(bytes.NewReader(first.Bytes()), &rest)
	if err != nil {
		t.Fatal(err)
	}
	if rw.Covered() != half {
		t.Fatalf("Covered = %d, want %d", rw.Covered(), half)
	}
	send(rw, half, int64(len(vol)))
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	got := append(bytes.Clone(first.Bytes()[:rw.Offset()-int64(rest.Len())]), rest.Bytes()...)
	if !bytes.Equal(got, whole.Bytes()) {
		t.Fatal("the continued file differs from the one written in one go")
	}
	if rw.Trailer() != wholeTrailer || readTrailer(t, got) != wholeTrailer {
		t.Fatalf("trailers differ: continued %+v, read back %+v, whole %+v", rw.Trailer(), readTrailer(t, got), wholeTrailer)
	}

	// Records must continue after the file's last one.
	rw, err = ResumeWriter(bytes.NewReader(first.Bytes()), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := rw.WriteRecord(&Record{Kind: KindZero, Offset: 0, Length: 4096}); !errors.Is(err, ErrWriteOrder) {
		t.Fatalf("a record before the file's end: %v, want ErrWriteOrder", err)
	}
	// A cut or damaged file is not continued.
	if _, err := ResumeWriter(bytes.NewReader(first.Bytes()[:first.Len()-10]), io.Discard); !errors.Is(err, ErrTruncated) {
		t.Fatalf("cut file: %v, want ErrTruncated", err)
	}
	bad := append([]byte(nil), first.Bytes()...)
	bad[len(bad)-50] ^= 1
	if _, err := ResumeWriter(bytes.NewReader(bad), io.Discard); err == nil {
		t.Fatal("a damaged file was continued")
	}
}

func readTrailer(t *testing.T, b []byte) Trailer {
	t.Helper()
	rd := NewReader(bytes.NewReader(b))
	for {
		if _, err := rd.Next(); errors.Is(err, io.EOF) {
			return rd.Trailer()
		} else if err != nil {
			t.Fatal(err)
		}
	}
}
