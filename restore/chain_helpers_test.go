package restore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
)

// deltaChunk writes the delta file of img against parent (nil: a full) in
// DATA records of at most chunk bytes, so that the records of the files of
// a chain overlap in every way.
func (w *world) deltaChunk(img, parent *image, chunk int, level archive.Level) string {
	w.t.Helper()
	nf, err := os.Open(img.path)
	if err != nil {
		w.t.Fatal(err)
	}
	defer nf.Close()
	var src archive.Source = archive.NewFileSource(nf, int64(len(img.data)), false)
	out := img.path + ".tbk"
	if parent != nil {
		bf, err := os.Open(parent.path)
		if err != nil {
			w.t.Fatal(err)
		}
		defer bf.Close()
		src = archive.NewCompareSource(nf, int64(len(img.data)), bf, int64(len(parent.data)), w.bs, nil)
		out = img.path + ".from-" + parent.name + ".tbk"
	}
	img.tag = w.writeDelta(out, w.header(img, parent), src, archive.SendOptions{ChunkSize: chunk, Level: level}).Tag
	return out
}

// writeDelta writes a delta file of src with header h to path, encrypted
// under w.key if set, and returns its trailer.
func (w *world) writeDelta(path string, h *archive.Header, src archive.Source, opts archive.SendOptions) archive.Trailer {
	w.t.Helper()
	f, err := os.Create(path)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	aw := archive.NewWriter(f, archive.WithKey(w.key))
	if err := aw.WriteHeader(h); err != nil {
		w.t.Fatal(err)
	}
	if err := archive.Send(context.Background(), aw, src, opts); err != nil {
		w.t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		w.t.Fatal(err)
	}
	return aw.Trailer()
}

func (w *world) randTail() int {
	if w.r.Intn(3) == 0 {
		return 0
	}
	return 1 + w.r.Intn(int(w.bs)-1)
}

func (w *world) randChunk() int {
	return []int{int(w.bs), 2 * int(w.bs), 16 << 10, 64 << 10, 1 << 20}[w.r.Intn(5)]
}

// evolve returns the next state of a volume: random writes, sometimes a
// long zeroed run, and sometimes a resize to an unaligned size, grown with
// data or with zeroes, or shrunk.
func (w *world) evolve(data []byte) []byte {
	out := w.mutate(data, w.r.Intn(12))
	if w.r.Intn(3) == 0 {
		off := w.r.Intn(len(out))
		clear(out[off:min(len(out), off+w.r.Intn(8*int(w.bs)))])
	}
	switch w.r.Intn(6) {
	case 0, 1:
		extra := w.random(1 + w.r.Intn(10*int(w.bs)))
		if w.r.Intn(3) == 0 {
			clear(extra)
		}
		out = append(out, extra...)
	case 2, 3:
		out = out[:1+w.r.Intn(len(out))]
	}
	return out
}

// randomChain makes n states of a volume of random, unaligned size and their
// delta files: a full, then incrementals.
func (w *world) randomChain(n int) ([]*image, []string) {
	w.t.Helper()
	size := (1+w.r.Intn(40))*int(w.bs) + w.randTail()
	imgs := []*image{w.image(w.random(size))}
	files := []string{w.deltaChunk(imgs[0], nil, w.randChunk(), 0)}
	for len(imgs) < n {
		prev := imgs[len(imgs)-1]
		img := w.image(w.evolve(prev.data))
		files = append(files, w.deltaChunk(img, prev, w.randChunk(), 0))
		imgs = append(imgs, img)
	}
	return imgs, files
}

// openInputs opens files for reading; they are closed when the test ends.
func openInputs(t testing.TB, files ...string) []Input {
	t.Helper()
	var inputs []Input
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		inputs = append(inputs, Input{Name: filepath.Base(name), R: f})
	}
	return inputs
}

// applyOnto applies files with Apply to a new regular file that holds base
// (nothing, when base is nil) and is known to be at base's snapshot, and
// returns what the file holds afterwards.
func applyOnto(t testing.TB, w *world, base *image, files ...string) []byte {
	t.Helper()
	w.n++
	target := filepath.Join(w.dir, fmt.Sprintf("target-%d", w.n))
	var st State
	if base != nil {
		if err := os.WriteFile(target, base.data, 0o600); err != nil {
			t.Fatal(err)
		}
		st = State{VolumeName: "vol", VolumeUUID: "vol-uuid", VolumeSize: int64(len(base.data)), Snapshot: base.snap}
	}
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := Apply(context.Background(), tg, openInputs(t, files...), Options{State: st}); err != nil {
		t.Fatalf("applying %v: %v", files, err)
	}
	b, err := os.ReadFile(target)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(target)
	return b
}

// mergeFiles merges files into a new file and returns its path, with what
// merge returned.
func mergeFiles(t testing.TB, w *world, files []string, opts MergeOptions) (string, *archive.Header, archive.Trailer, *mergeStats, error) {
	t.Helper()
	w.n++
	out := filepath.Join(w.dir, fmt.Sprintf("merged-%d.tbk", w.n))
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stats := &mergeStats{}
	h, tr, err := merge(context.Background(), f, openInputs(t, files...), opts, stats)
	return out, h, tr, stats, err
}

// fileRecord is a record of a delta file with its payload bytes.
type fileRecord struct {
	archive.Record
	payload []byte
}

// readAll reads a delta file to its verified END, payloads included.
func readAll(t testing.TB, path string, opts ...archive.Option) (*archive.Header, []fileRecord, archive.Trailer) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd := archive.NewReader(f, opts...)
	h, err := rd.Header()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var recs []fileRecord
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return h, recs, rd.Trailer()
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		p, err := rd.ReadPayload(nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		recs = append(recs, fileRecord{*rec, p})
	}
}

// checkCoverage checks, independently of the archive package, the coverage
// rules of FORMAT.md: a full covers its whole volume, an incremental the
// part by which the volume grew.
func checkCoverage(t testing.TB, h *archive.Header, recs []fileRecord) {
	t.Helper()
	from := h.VolumeSize // nothing must be covered
	switch {
	case h.IsFull():
		from = 0
	case h.VolumeSize > h.ParentSize:
		from = h.ParentSize
	}
	pos, prevEnd := from, int64(0)
	for _, r := range recs {
		if r.Offset < prevEnd || r.End() > h.VolumeSize {
			t.Fatalf("record [%d, %d) out of order or past the volume size %d", r.Offset, r.End(), h.VolumeSize)
		}
		prevEnd = r.End()
		if r.End() <= pos || pos >= h.VolumeSize {
			continue
		}
		if r.Offset > pos {
			t.Fatalf("bytes [%d, %d) are not covered (full %v, size %d, parent size %d)", pos, r.Offset, h.IsFull(), h.VolumeSize, h.ParentSize)
		}
		pos = r.End()
	}
	if pos < h.VolumeSize {
		t.Fatalf("bytes [%d, %d) are not covered (full %v, size %d, parent size %d)", pos, h.VolumeSize, h.IsFull(), h.VolumeSize, h.ParentSize)
	}
}

// flipPayload flips a byte in the payload of the DATA record that covers
// volume offset off, in a copy of file, and returns the copy.
func flipPayload(t testing.TB, file string, off int64, opts ...archive.Option) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rd := archive.NewReader(bytes.NewReader(b), opts...)
	for {
		rec, err := rd.Next()
		if err != nil {
			t.Fatalf("no DATA record of %s covers %d: %v", file, off, err)
		}
		if rec.Kind == archive.KindData && rec.Offset <= off && off < rec.End() {
			b[rec.PayloadPos+rec.PayloadLen/2] ^= 0x10
			break
		}
	}
	out := file + fmt.Sprintf(".flip%d", off)
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// mustFail checks that err wraps want and names the file.
func mustFail(t testing.TB, err, want error, file string) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("got %v, want %v", err, want)
	}
	if file != "" && !bytes.Contains([]byte(err.Error()), []byte(filepath.Base(file))) {
		t.Fatalf("the error does not name %s: %v", filepath.Base(file), err)
	}
	t.Logf("refused as expected: %v", err)
}
