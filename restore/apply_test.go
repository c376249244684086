package restore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
	"golang.org/x/sys/unix"
)

func TestFullThenIncrementals(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(300 * 4096))
	v2 := w.image(w.mutate(v1.data, 30))
	v3 := w.image(w.mutate(v2.data, 30))
	target := filepath.Join(w.dir, "copy")

	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v1.data)
	if _, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v2.data)
	res, err := st.apply(t, target, []string{w.delta(v3, v2)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v3.data)
	if res.Snapshot.ID != v3.snap.ID {
		t.Fatalf("result snapshot %v, want %v", res.Snapshot.ID, v3.snap.ID)
	}
	for key, s := range st {
		if s.Snapshot.ID != v3.snap.ID || s.InProgress != nil {
			t.Fatalf("state of %s: %+v", key, s)
		}
	}
}

// TestMergedChain applies a full and incrementals that rewrite the same
// region in one call: the result must equal applying them one by one, and
// superseded data must not be written.
func TestMergedChain(t *testing.T) {
	w := newWorld(t)
	imgs := []*image{w.image(w.random(512 * 4096))}
	files := []string{w.delta(imgs[0], nil)}
	for i := 0; i < 8; i++ {
		next := append([]byte(nil), imgs[i].data...)
		// A hot region rewritten every time, plus some writes elsewhere.
		w.r.Read(next[100*4096 : 164*4096])
		next = w.mutate(next, 5)
		// Shrink and grow the volume on the way.
		switch i {
		case 3:
			next = next[:400*4096+123]
		case 5:
			next = append(next, w.random(150*4096)...)
		}
		imgs = append(imgs, w.image(next))
		files = append(files, w.delta(imgs[i+1], imgs[i]))
	}
	last := imgs[len(imgs)-1]

	st := stateStore{}
	merged := filepath.Join(w.dir, "merged")
	res, err := st.apply(t, merged, files, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mustEqual(t, merged, last.data)
	if res.Skipped == 0 {
		t.Fatal("a chain rewriting one region wrote superseded data")
	}
	if res.DataBytes+res.ZeroBytes > int64(len(last.data)) {
		t.Fatalf("wrote %d bytes for a volume of %d: some block was written twice", res.DataBytes+res.ZeroBytes, len(last.data))
	}

	one := filepath.Join(w.dir, "one-by-one")
	for _, f := range files {
		if _, err := st.apply(t, one, []string{f}, Options{}); err != nil {
			t.Fatal(err)
		}
	}
	mustEqual(t, one, last.data)
}

func TestIdempotent(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(100 * 4096))
	v2 := w.image(w.mutate(v1.data, 20))
	full, incr := w.delta(v1, nil), w.delta(v2, v1)
	target := filepath.Join(w.dir, "copy")
	for i := 0; i < 2; i++ {
		if _, err := st.apply(t, target, []string{full}, Options{}); err != nil {
			t.Fatal(err)
		}
		mustEqual(t, target, v1.data)
	}
	for i := 0; i < 2; i++ {
		if _, err := st.apply(t, target, []string{incr}, Options{}); err != nil {
			t.Fatalf("applying the incremental, time %d: %v", i+1, err)
		}
		mustEqual(t, target, v2.data)
	}
}

func TestChainRefusals(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(64 * 4096))
	v2 := w.image(w.mutate(v1.data, 10))
	v3 := w.image(w.mutate(v2.data, 10))
	full1, incr12, incr23 := w.delta(v1, nil), w.delta(v2, v1), w.delta(v3, v2)
	other := w.image(w.random(64 * 4096))
	otherFull := w.delta(other, nil)
	// Another volume: same shape, other UUID.
	hOther := w.header(other, nil)
	hOther.VolumeUUID = "another-volume"
	otherVol := filepath.Join(w.dir, "other-volume.tbk")
	writeDelta(t, otherVol, hOther, other)

	target := filepath.Join(w.dir, "copy")
	st := stateStore{}
	expect := func(files []string, want error) {
		t.Helper()
		before, _ := os.ReadFile(target)
		_, err := st.apply(t, target, files, Options{})
		if !errors.Is(err, want) {
			t.Fatalf("apply %v: got %v, want %v", files, err, want)
		}
		if after, _ := os.ReadFile(target); !bytes.Equal(before, after) {
			t.Fatalf("a refused apply changed the target")
		}
		t.Logf("refused as expected: %v", err)
	}
	expect([]string{incr12}, ErrMismatch)        // unknown target
	expect([]string{full1, incr23}, ErrNotChain) // gap in the chain
	expect([]string{full1, incr12, full1}, ErrNotChain)
	if _, err := st.apply(t, target, []string{full1}, Options{}); err != nil {
		t.Fatal(err)
	}
	expect([]string{incr23}, ErrMismatch) // wrong base
	expect([]string{otherVol}, ErrVolumeMismatch)
	if _, err := st.apply(t, target, []string{otherVol}, Options{Force: true}); err != nil {
		t.Fatalf("--force over another volume: %v", err)
	}
	// The target now holds the other volume: a full of ours is refused
	// without --force, like any full of another volume.
	expect([]string{otherFull}, ErrVolumeMismatch)
	if _, err := st.apply(t, target, []string{otherFull}, Options{Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.apply(t, target, []string{full1}, Options{}); err != nil {
		t.Fatalf("a full of the same volume over it: %v", err)
	}
	// --force applies an incremental to whatever the target holds.
	if _, err := st.apply(t, target, []string{incr23}, Options{Force: true}); err != nil {
		t.Fatal(err)
	}
}

// writeDelta writes a full of img with header h.
func writeDelta(t *testing.T, path string, h *archive.Header, img *image) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	src, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	aw := archive.NewWriter(f)
	if err := aw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), aw, archive.NewFileSource(src, h.VolumeSize, false), archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSnapbackUndoes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		resize func(w *world, b []byte) []byte
	}{
		{"same size", func(w *world, b []byte) []byte { return b }},
		{"grown", func(w *world, b []byte) []byte { return append(b, w.random(40*4096+77)...) }},
		{"shrunk", func(w *world, b []byte) []byte { return b[:len(b)/2+5] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			st := stateStore{}
			v1 := w.image(w.random(200 * 4096))
			v2 := w.image(tc.resize(w, w.mutate(v1.data, 40)))
			target := filepath.Join(w.dir, "copy")
			if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
				t.Fatal(err)
			}
			undo := filepath.Join(w.dir, "undo.tbk")
			res, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{Snapback: newSnapback(t, undo)})
			if err != nil {
				t.Fatal(err)
			}
			mustEqual(t, target, v2.data)
			if res.Snapback == nil || res.Snapback.Records == 0 {
				t.Fatalf("snapback trailer %+v", res.Snapback)
			}
			if _, err := st.apply(t, target, []string{undo}, Options{}); err != nil {
				t.Fatalf("applying the snapback file: %v", err)
			}
			mustEqual(t, target, v1.data)
			// The target is back at v1: the incremental applies again.
			if _, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{}); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, target, v2.data)
		})
	}
}

// TestSnapbackZeroRanges: ranges that read as zero before the apply (holes
// and written zeroes) read as zero after the undo, and ranges the apply
// zeroed get their data back.
func TestSnapbackZeroRanges(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	base := w.random(128 * 4096)
	clear(base[10*4096 : 20*4096]) // zeroes the apply will overwrite
	v1 := w.image(base)
	next := append([]byte(nil), base...)
	w.r.Read(next[12*4096 : 14*4096]) // data over old zeroes
	clear(next[40*4096 : 60*4096])    // zeroes over old data
	v2 := w.image(next)
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	undo := filepath.Join(w.dir, "undo.tbk")
	if _, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{Snapback: newSnapback(t, undo)}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.apply(t, target, []string{undo}, Options{}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v1.data)
	// A snapback file never overwrites an existing file (its caller
	// creates it exclusively).
	if f, err := os.OpenFile(undo, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
		t.Fatal("an existing snapback file was created again")
	}
	mustEqual(t, target, v1.data)
}

// corruptAt flips a byte in the payload of record n of a copy of file.
func corruptAt(t *testing.T, file string, n int64, opts ...archive.Option) string {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	rd := archive.NewReader(bytes.NewReader(b), opts...)
	for {
		rec, err := rd.Next()
		if err != nil {
			t.Fatalf("record %d not found: %v", n, err)
		}
		if rec.Num == n {
			if rec.PayloadLen == 0 {
				t.Fatalf("record %d has no payload", n)
			}
			b[rec.PayloadPos+rec.PayloadLen/2] ^= 0x55
			break
		}
	}
	out := file + ".corrupt"
	if err := os.WriteFile(out, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

// dataRecords returns the numbers of DATA records of a file.
func dataRecords(t *testing.T, file string, opts ...archive.Option) (nums []int64, recs []*archive.Record) {
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rd := archive.NewReader(f, opts...)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return nums, recs
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == archive.KindData {
			nums = append(nums, rec.Num)
			recs = append(recs, rec)
		}
	}
}

// TestCorruptPayloadStopsBeforeWriting: a payload that does not match its
// digest, in a file too large to be verified before the first write, stops
// the apply; nothing of that record is written, the target is marked with
// what was written and why it stopped, the message says so (and not that
// running the same apply again finishes it), the snapback file undoes what
// was written, and a good copy of the file finishes the apply.
func TestCorruptPayloadStopsBeforeWriting(t *testing.T) {
	verifyFirstLimit(t, 0)
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(300 * 4096))
	next := append([]byte(nil), v1.data...)
	w.r.Read(next) // every block changes
	v2 := w.image(next)
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	good := w.delta(v2, v1)
	nums, recs := dataRecords(t, good)
	bad := corruptAt(t, good, nums[len(nums)/2])
	badRec := recs[len(nums)/2]
	undo := filepath.Join(w.dir, "undo.tbk")
	_, err := st.apply(t, target, []string{bad}, Options{Snapback: newSnapback(t, undo), Workers: 1})
	if !errors.Is(err, archive.ErrChecksum) {
		t.Fatalf("got %v, want ErrChecksum", err)
	}
	t.Logf("error: %v", err)
	got, _ := os.ReadFile(target)
	if !bytes.Equal(got[badRec.Offset:badRec.End()], v1.data[badRec.Offset:badRec.End()]) {
		t.Fatal("bytes of the corrupt record were written")
	}
	if !bytes.Equal(got[:recs[0].End()], v2.data[:recs[0].End()]) {
		t.Fatal("records before the corrupt one were not applied (the test expects an ordered apply)")
	}
	for _, s := range st {
		if s.InProgress == nil {
			t.Fatal("the interrupted apply left no mark")
		}
		if m := s.InProgress; m.Stopped == "" || m.WroteFrom != recs[0].Offset || m.WroteTo <= recs[0].End() || m.WroteTo > badRec.Offset {
			t.Fatalf("mark %+v: want what was written (from %d, before %d) and why it stopped", m, recs[0].Offset, badRec.Offset)
		}
	}
	for _, want := range []string{"were overwritten", "matches neither", "apply " + undo + " to undo", "apply a good copy of"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the message does not say %q", want)
		}
	}
	if strings.Contains(err.Error(), "run the same apply again") {
		t.Error("the message says that the same apply finishes it, which it cannot")
	}
	// Another incremental is refused while the mark is there.
	v3 := w.image(w.mutate(v2.data, 3))
	if _, err := st.apply(t, target, []string{w.delta(v3, v2)}, Options{}); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("apply over an interrupted one: %v, want ErrInterrupted", err)
	}
	// The snapback file undoes the partial apply exactly.
	if _, err := st.apply(t, target, []string{undo}, Options{}); err != nil {
		t.Fatalf("undoing the interrupted apply: %v", err)
	}
	mustEqual(t, target, v1.data)

	// Interrupted again, then finished with a good copy.
	if _, err := st.apply(t, target, []string{bad}, Options{}); !errors.Is(err, archive.ErrChecksum) {
		t.Fatal(err)
	}
	if _, err := st.apply(t, target, []string{good}, Options{}); err != nil {
		t.Fatalf("finishing with the good file: %v", err)
	}
	mustEqual(t, target, v2.data)
}

// TestTruncatedFileRefusedBeforeWriting: a seekable file is checked to its
// END before the target is touched.
func TestTruncatedFileRefusedBeforeWriting(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(100 * 4096))
	full := w.delta(v1, nil)
	b, _ := os.ReadFile(full)
	cut := filepath.Join(w.dir, "cut.tbk")
	os.WriteFile(cut, b[:len(b)-100], 0o600)
	target := filepath.Join(w.dir, "copy")
	os.WriteFile(target, bytes.Repeat([]byte{7}, 100*4096), 0o600)
	if _, err := st.apply(t, target, []string{cut}, Options{}); !errors.Is(err, archive.ErrTruncated) {
		t.Fatalf("got %v, want ErrTruncated", err)
	}
	mustEqual(t, target, bytes.Repeat([]byte{7}, 100*4096))
	if len(st) != 0 {
		t.Fatalf("a refused file marked the target: %+v", st)
	}
}

// shrinkingFile is a delta file that someone truncates to size between
// Apply's pre-scan and the apply: the first time it is rewound.
type shrinkingFile struct {
	*os.File
	size   int64
	shrunk bool
}

func (f *shrinkingFile) Seek(off int64, whence int) (int64, error) {
	if whence == io.SeekStart && !f.shrunk {
		f.shrunk = true
		if err := f.Truncate(f.size); err != nil {
			return 0, err
		}
	}
	return f.File.Seek(off, whence)
}

// TestFileShrinksAfterPrescan: a seekable file that shrinks after it was
// checked, inside the payload of a record, is reported as truncated (exit
// 3 in the CLI), whether the payload is read by a worker or the reader
// finds the end first, and nothing past the last good record is written.
func TestFileShrinksAfterPrescan(t *testing.T) {
	verifyFirstLimit(t, 0) // the shrink is met while applying, not in a verify-first pass
	w := newWorld(t)
	v1 := w.image(w.random(200 * 4096))
	full := w.delta(v1, nil)
	_, recs, _ := readAll(t, full)
	var mid fileRecord
	for _, r := range recs[len(recs)/2:] {
		if r.Kind == archive.KindData {
			mid = r
			break
		}
	}
	if mid.Kind != archive.KindData {
		t.Fatal("no DATA record in the second half")
	}
	for _, workers := range []int{1, 4} {
		copyPath := filepath.Join(w.dir, "shrinking.tbk")
		b, _ := os.ReadFile(full)
		if err := os.WriteFile(copyPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(copyPath, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// An existing target, kept when the apply fails (one the apply
		// created would be removed).
		target := filepath.Join(w.dir, "target")
		if err := os.WriteFile(target, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		tg, err := OpenTarget(target, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		in := &shrinkingFile{File: f, size: mid.PayloadPos + mid.PayloadLen/2}
		_, err = Apply(context.Background(), tg, []Input{{Name: "shrinking.tbk", R: in}}, Options{Workers: workers})
		if !in.shrunk {
			t.Fatal("the file was never rewound after its pre-scan")
		}
		mustFail(t, err, archive.ErrTruncated, "shrinking.tbk")
		got, _ := os.ReadFile(target)
		if !bytes.Equal(got[mid.Offset:], make([]byte, len(got)-int(mid.Offset))) {
			t.Fatalf("bytes from the cut record at %d on were written", mid.Offset)
		}
	}
}

// stream hides a file's Seek and ReadAt, as a pipe would.
type stream struct{ r io.Reader }

func (s stream) Read(p []byte) (int, error) { return s.r.Read(p) }

func TestStreamInput(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(200 * 4096))
	full := w.delta(v1, nil)
	target := filepath.Join(w.dir, "copy")
	b, _ := os.ReadFile(full)
	run := func(data []byte) error {
		tg, err := OpenTarget(target, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer tg.Close()
		_, err = Apply(context.Background(), tg, []Input{{Name: "-", R: stream{bytes.NewReader(data)}}}, Options{})
		return err
	}
	if err := run(b); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v1.data)
	if err := run(b[:len(b)/2]); !errors.Is(err, archive.ErrTruncated) {
		t.Fatalf("truncated stream: %v", err)
	}
	if err := run(nil); !errors.Is(err, archive.ErrTruncated) {
		t.Fatalf("empty stream: %v", err)
	} else {
		t.Logf("empty stream: %v", err)
	}
	if err := run(append(append([]byte(nil), b...), b...)); !errors.Is(err, archive.ErrTrailingData) {
		t.Fatalf("two files in one stream: %v", err)
	}
	// Several files can only come from regular files.
	tg, _ := OpenTarget(target, TargetOptions{})
	defer tg.Close()
	_, err := Apply(context.Background(), tg, []Input{{Name: full, R: stream{bytes.NewReader(b)}}, {Name: "-", R: stream{bytes.NewReader(b)}}}, Options{})
	if err == nil {
		t.Fatal("two streams accepted")
	}
}

func TestBlockDeviceTarget(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(256*4096 + 512)) // not a multiple of the block size
	v2 := w.image(w.mutate(v1.data, 30))
	dev := loopDevice(t, 2<<20)
	if _, err := st.apply(t, dev, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	undo := filepath.Join(w.dir, "undo.tbk")
	if _, err := st.apply(t, dev, []string{w.delta(v2, v1)}, Options{Snapback: newSnapback(t, undo)}); err != nil {
		t.Fatal(err)
	}
	got := readDevice(t, dev, len(v2.data))
	if !bytes.Equal(got, v2.data) {
		t.Fatal("device differs from v2")
	}
	if _, err := st.apply(t, dev, []string{undo}, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := readDevice(t, dev, len(v1.data)); !bytes.Equal(got, v1.data) {
		t.Fatal("device differs from v1 after the undo")
	}

	small := loopDevice(t, 512<<10)
	if _, err := st.apply(t, small, []string{w.delta(v1, nil)}, Options{}); !errors.Is(err, ErrTargetTooSmall) {
		t.Fatalf("small device: %v", err)
	}
}

func readDevice(t *testing.T, dev string, n int) []byte {
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(f, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReadOnlyTarget(t *testing.T) {
	if os.Geteuid() != 0 {
		unavailable(t, "mounting needs root")
	}
	dir := t.TempDir()
	if out, err := runCmd("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", dir); err != nil {
		unavailable(t, "cannot mount a tmpfs: %v %s", err, out)
	}
	defer runCmd("umount", dir)
	if err := os.WriteFile(filepath.Join(dir, "img"), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCmd("mount", "-o", "remount,ro", dir); err != nil {
		unavailable(t, "cannot remount read-only: %v %s", err, out)
	}
	_, err := OpenTarget(filepath.Join(dir, "img"), TargetOptions{})
	if !errors.Is(err, ErrTargetReadOnly) {
		t.Fatalf("got %v, want ErrTargetReadOnly", err)
	}
	t.Log(err)
}

func TestBusyBlockDevice(t *testing.T) {
	dev := loopDevice(t, 1<<20)
	// Another exclusive opener stands in for a mounted filesystem.
	held, err := os.OpenFile(dev, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if _, err := OpenTarget(dev, TargetOptions{}); !errors.Is(err, ErrTargetBusy) {
		t.Fatalf("got %v, want ErrTargetBusy", err)
	}
}

// TestParentSizeMismatchRefused: an incremental whose parent size is not
// the volume size of the file before it is refused, by Apply and by Merge,
// naming both sizes: applying it would leave the bytes between the two
// sizes as whatever the target held.
func TestParentSizeMismatchRefused(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(32 * 4096))
	v2 := w.image(w.mutate(v1.data, 5))
	full := w.delta(v1, nil)
	nf, err := os.Open(v2.path)
	if err != nil {
		t.Fatal(err)
	}
	defer nf.Close()
	bf, err := os.Open(v1.path)
	if err != nil {
		t.Fatal(err)
	}
	defer bf.Close()
	h := w.header(v2, v1)
	h.ParentSize += 8192 // crafted, with valid digests
	bad := filepath.Join(w.dir, "bad-parent-size.tbk")
	w.writeDelta(bad, h, archive.NewCompareSource(nf, int64(len(v2.data)), bf, int64(len(v1.data)), w.bs, nil), archive.SendOptions{})

	st := stateStore{}
	_, err = st.apply(t, filepath.Join(w.dir, "target"), []string{full, bad}, Options{})
	mustFail(t, err, ErrNotChain, bad)
	for _, size := range []string{"139264", "131072"} {
		if !bytes.Contains([]byte(err.Error()), []byte(size)) {
			t.Errorf("the message does not name the size %s: %v", size, err)
		}
	}
	_, _, _, _, err = mergeFiles(t, w, []string{full, bad}, MergeOptions{})
	mustFail(t, err, ErrNotChain, bad)
}

// TestSnapbackContinued: an apply that stopped half-way, run again with
// its snapback file, continues that file instead of starting one that
// would save the half-written target as "before": the file then undoes
// both runs, back to what the target held before the first. Any other
// existing file is refused and left as it was.
func TestSnapbackContinued(t *testing.T) {
	verifyFirstLimit(t, 0)
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(300 * 4096))
	next := append([]byte(nil), v1.data...)
	w.r.Read(next) // every block changes
	v2 := w.image(next)
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	good := w.delta(v2, v1)
	nums, _ := dataRecords(t, good)
	bad := corruptAt(t, good, nums[len(nums)/2])
	undo := filepath.Join(w.dir, "undo.tbk")
	if _, err := st.apply(t, target, []string{bad}, Options{Snapback: newSnapback(t, undo), Workers: 1}); !errors.Is(err, archive.ErrChecksum) {
		t.Fatalf("got %v, want ErrChecksum", err)
	}

	// Another file of the same name is refused, untouched.
	other := filepath.Join(w.dir, "other.tbk")
	if err := os.WriteFile(other, []byte("not a snapback file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := st.apply(t, target, []string{good}, Options{Snapback: openRW(t, other), ResumeSnapback: true}); err == nil {
		t.Fatal("a file that is not the interrupted apply's snapback file was continued")
	}
	if b, _ := os.ReadFile(other); string(b) != "not a snapback file" {
		t.Fatalf("the refused file was written: %q", b)
	}

	if _, err := st.apply(t, target, []string{good}, Options{Snapback: openRW(t, undo), ResumeSnapback: true}); err != nil {
		t.Fatalf("the same apply, continuing its snapback file: %v", err)
	}
	mustEqual(t, target, v2.data)
	if _, err := st.apply(t, target, []string{undo}, Options{}); err != nil {
		t.Fatalf("applying the continued snapback file: %v", err)
	}
	mustEqual(t, target, v1.data)
}

func openRW(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
