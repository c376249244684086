package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
)

// archive.SnapshotReader reads a point in time without restoring it;
// these tests hold it to what restoring the same chain writes.

// openSnapshot opens the chain of inputs, which must be seekable.
func openSnapshot(t testing.TB, inputs []Input, opts archive.SnapshotOptions) *archive.SnapshotReader {
	t.Helper()
	files := make([]archive.ChainInput, len(inputs))
	for i, in := range inputs {
		files[i] = archive.ChainInput{Name: in.Name, File: in.R.(archive.ReadSeekerAt)}
	}
	s, err := archive.OpenSnapshot(context.Background(), files, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestSnapshotReaderAgainstRestore: for random chains (writes, zeroed runs,
// unaligned growth and shrinking, records of every length), every
// snapshot read at random offsets and lengths, across the boundaries of
// records, files and ZERO ranges and past the end, gives exactly what
// Apply writes when it restores that snapshot from the same files.
func TestSnapshotReaderAgainstRestore(t *testing.T) {
	w := newWorld(t)
	rounds := 12
	if testing.Short() {
		rounds = 3
	}
	for round := 0; round < rounds; round++ {
		w.bs = []int64{4096, 8192, 16384}[w.r.Intn(3)]
		imgs, files := w.randomChain(1 + w.r.Intn(6))
		for j := range imgs {
			where := fmt.Sprintf("round %d, snapshot %d of %d (block size %d)", round, j+1, len(imgs), w.bs)
			restored := applyOnto(t, w, nil, files[:j+1]...)
			if !bytes.Equal(restored, imgs[j].data) {
				t.Fatalf("%s: the restore itself differs from the volume", where)
			}
			s := openSnapshot(t, openInputs(t, files[:j+1]...), archive.SnapshotOptions{CacheSize: []int64{1, 0}[w.r.Intn(2)]})
			size := int64(len(restored))
			if s.Size() != size {
				t.Fatalf("%s: size %d, restored %d", where, s.Size(), size)
			}
			// Offsets near every block boundary of every file's records
			// are where record, file and ZERO boundaries fall.
			var offs []int64
			for i := 0; i < 40; i++ {
				offs = append(offs, w.r.Int63n(size+2*w.bs))
			}
			for b := int64(0); b <= size; b += w.bs {
				if w.r.Intn(3) == 0 {
					offs = append(offs, max(0, b-1), b, b+1)
				}
			}
			offs = append(offs, 0, size-1, size, size+1)
			for _, off := range offs {
				n := 1 + w.r.Int63n(5*w.bs)
				if w.r.Intn(8) == 0 {
					n = size + w.bs
				}
				p := make([]byte, n)
				got, err := s.ReadAt(p, off)
				want := max(0, min(n, size-off))
				if int64(got) != want || (off+n > size) != (err == io.EOF) || (err != nil && err != io.EOF) {
					t.Fatalf("%s: ReadAt(%d bytes, %d) = %d, %v; want %d bytes", where, n, off, got, err, want)
				}
				if want > 0 && !bytes.Equal(p[:got], restored[off:off+want]) {
					t.Fatalf("%s: ReadAt(%d bytes, %d) differs from the restored volume", where, n, off)
				}
			}
		}
	}
}

// TestSnapshotReaderCorruptRange: a file with a flipped payload byte
// fails, through the reader, only the range of the damaged record (EIO to
// a mount), with ErrChecksum naming the file; the volume's other bytes
// read as restoring the undamaged chain writes them, and restoring the
// damaged chain is refused.
func TestSnapshotReaderCorruptRange(t *testing.T) {
	w := newWorld(t)
	for round := 0; round < 6; round++ {
		imgs, files := w.randomChain(2 + w.r.Intn(3))
		last := len(files) - 1
		_, recs, _ := readAll(t, files[last])
		var data []fileRecord
		for _, r := range recs {
			if r.Kind == archive.KindData {
				data = append(data, r)
			}
		}
		if len(data) == 0 {
			continue
		}
		bad := data[w.r.Intn(len(data))]
		flipped := flipPayload(t, files[last], bad.Offset)
		if !damaged(t, flipped, bad.Offset) {
			continue // the bit flipped was zstd padding: nothing to find
		}
		damaged := append(append([]string(nil), files[:last]...), flipped)
		restored := applyOnto(t, w, nil, files...)
		s := openSnapshot(t, openInputs(t, damaged...), archive.SnapshotOptions{CacheSize: 1})
		where := fmt.Sprintf("round %d: record [%d, %d)", round, bad.Offset, bad.End())
		for off := int64(0); off < int64(len(restored)); off += 512 {
			p := make([]byte, 512)
			n, err := s.ReadAt(p, off)
			inBad := off < bad.End() && off+512 > bad.Offset
			switch {
			case inBad:
				if !errors.Is(err, archive.ErrChecksum) {
					t.Fatalf("%s: read at %d: %v, want ErrChecksum", where, off, err)
				}
				mustFail(t, err, archive.ErrChecksum, flipped)
			case err != nil && err != io.EOF:
				t.Fatalf("%s: read at %d, outside the damaged record: %v", where, off, err)
			case !bytes.Equal(p[:n], restored[off:off+int64(n)]):
				t.Fatalf("%s: read at %d differs from the restore", where, off)
			}
		}
		tg, err := OpenTarget(filepath.Join(w.dir, fmt.Sprintf("damaged-%d", round)), TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = Apply(context.Background(), tg, openInputs(t, damaged...), Options{})
		tg.Close()
		mustFail(t, err, archive.ErrChecksum, flipped)
		_ = imgs
	}
}

// damaged reports whether the DATA record at off of file fails to decode
// and verify (a flipped bit of a zstd frame may be padding).
func damaged(t testing.TB, file string, off int64) bool {
	t.Helper()
	_, recs, _ := readAll(t, file)
	dec := archive.NewDecoder()
	defer dec.Close()
	for _, r := range recs {
		if r.Kind == archive.KindData && r.Offset == off {
			_, err := dec.Decode(nil, &r.Record, r.payload)
			return err != nil
		}
	}
	t.Fatalf("%s has no DATA record at %d", file, off)
	return false
}
