package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the Reader and the parallel Scan. A
// delta file is outside input: the reader must never panic, never allocate
// from an unchecked length, and accept only files whose records obey the
// format's rules.
func FuzzReader(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(goldenDir, "*.tbk"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(magic))
	// A resumed file, whose records start at its header's offset.
	rh := testHeader(8 * 4096)
	rh.ResumeFrom = 3 * 4096
	f.Add(build(f, rh, fullSource(bytes.Repeat([]byte("resumed "), 4096)), SendOptions{Workers: 1}))
	f.Fuzz(func(t *testing.T, b []byte) {
		rd := NewReader(bytes.NewReader(b))
		h, err := rd.Header()
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("header error %v is not a *FormatError", err)
			}
			return
		}
		prevEnd := h.ResumeFrom
		var data, zero int64
		err = Scan(context.Background(), rd, ScanOptions{Workers: 2}, func(rec *Record, d []byte) error {
			if rec.Offset < prevEnd || rec.End() > h.VolumeSize || rec.Offset%h.BlockSize != 0 {
				t.Fatalf("accepted record [%d, %d) after %d in a volume of %d", rec.Offset, rec.End(), prevEnd, h.VolumeSize)
			}
			prevEnd = rec.End()
			if rec.Kind == KindData {
				if int64(len(d)) != rec.Length {
					t.Fatalf("DATA record of %d bytes handed out %d", rec.Length, len(d))
				}
				data += rec.Length
			} else {
				zero += rec.Length
			}
			return nil
		})
		if err == nil {
			tr := rd.Trailer()
			if tr.DataBytes != data || tr.ZeroBytes != zero {
				t.Fatalf("trailer %+v, read %d data %d zero", tr, data, zero)
			}
			if h.IsFull() && data+zero != h.VolumeSize-h.ResumeFrom {
				t.Fatalf("accepted a full covering %d of %d bytes", data+zero, h.VolumeSize)
			}
			if _, err := rd.Next(); err != io.EOF {
				t.Fatalf("Next after the end: %v", err)
			}
		}
	})
}
