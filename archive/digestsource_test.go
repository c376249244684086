package archive

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/sys/unix"
)

// sliceDigests is a DigestIterator over a volume held in memory, its runs
// cut at random lengths as the records of a chain of files would cut them.
// With gaps, some runs are left out: those blocks are unknown.
type sliceDigests struct {
	exts    []DigestExtent
	unknown []Extent // the runs left out
	err     error    // returned after the extents instead of io.EOF
}

func digestsOf(r *rand.Rand, vol []byte, bs int64, gaps bool) *sliceDigests {
	s := &sliceDigests{}
	size := int64(len(vol))
	for off := int64(0); off < size; {
		zero := isZero(vol[off:min(off+bs, size)])
		end, limit := off, off+bs*int64(1+r.Intn(40))
		for end < size && end < limit && isZero(vol[end:min(end+bs, size)]) == zero {
			end = min(end+bs, size)
		}
		e := DigestExtent{Offset: off, Length: end - off, Kind: KindZero}
		if !zero {
			e.Kind = KindData
			for b := off; b < end; b += bs {
				e.Digests = append(e.Digests, blake3.Sum256(vol[b:min(b+bs, end)]))
			}
		}
		if gaps && r.Intn(8) == 0 {
			s.unknown = append(s.unknown, Extent{Offset: off, Length: end - off})
		} else {
			s.exts = append(s.exts, e)
		}
		off = end
	}
	return s
}

func (s *sliceDigests) Next() (DigestExtent, error) {
	if len(s.exts) == 0 {
		if s.err != nil {
			return DigestExtent{}, s.err
		}
		return DigestExtent{}, io.EOF
	}
	e := s.exts[0]
	s.exts = s.exts[1:]
	return e, nil
}

func (s *sliceDigests) isUnknown(off int64) bool {
	for _, u := range s.unknown {
		if u.Offset <= off && off < u.End() {
			return true
		}
	}
	return false
}

// imageFile is an image on disk and the bytes it holds.
type imageFile struct {
	t    testing.TB
	f    *os.File
	data []byte
}

// newImageFile writes data to a new file; sparse leaves its zero pages as
// holes, as a copy with cp --sparse=always would.
func newImageFile(t testing.TB, data []byte, sparse bool) *imageFile {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	m := &imageFile{t: t, f: f}
	m.truncate(len(data))
	for off := 0; off < len(data); off += 4096 {
		page := data[off:min(off+4096, len(data))]
		if !sparse || !isZero(page) {
			m.write(off, page)
		}
	}
	copy(m.data, data)
	return m
}

func (m *imageFile) write(off int, b []byte) {
	if _, err := m.f.WriteAt(b, int64(off)); err != nil {
		m.t.Fatal(err)
	}
	copy(m.data[off:], b)
}

// punch makes [off, off+n) a hole (the kernel zeroes the partial pages at
// its ends).
func (m *imageFile) punch(off, n int) {
	if err := unix.Fallocate(int(m.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)); err != nil {
		m.t.Skipf("punching holes: %v", err)
	}
	clear(m.data[off : off+n])
}

func (m *imageFile) truncate(n int) {
	if err := m.f.Truncate(int64(n)); err != nil {
		m.t.Fatal(err)
	}
	if n <= len(m.data) {
		m.data = m.data[:n]
	} else {
		m.data = append(m.data, make([]byte, n-len(m.data))...)
	}
}

// recorder keeps the extents a Source returns.
type recorder struct {
	Source
	got []Extent
}

func (r *recorder) Next() (Extent, error) {
	e, err := r.Source.Next()
	if err == nil {
		r.got = append(r.got, e)
	}
	return e, err
}

// blockDiffers reports whether the block of next at off differs from prev's
// (in length or bytes).
func blockDiffers(prev, next []byte, off, bs int64) bool {
	if off >= int64(len(prev)) {
		return true
	}
	a := prev[off:min(off+bs, int64(len(prev)))]
	b := next[off:min(off+bs, int64(len(next)))]
	return !bytes.Equal(a, b)
}

// sendDigests sends img against the digests of prev into an incremental
// and checks that it turns prev into img, that every block returned differs
// (or was unknown) and that every extent is in order and aligned.
func sendDigests(t *testing.T, prev []byte, img *imageFile, bs int64, it *sliceDigests, opts DigestSourceOptions) (*DigestSource, []Extent, []byte) {
	t.Helper()
	size := int64(len(img.data))
	var progress int64
	opts.Progress = func(n int64) { progress += n }
	src, err := NewDigestSource(img.f, size, bs, it, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	h := testHeader(size)
	h.BlockSize = bs
	h.Snapshot.ID = DeriveID("test", "next")
	h.Parent, h.ParentSize = Snapshot{ID: DeriveID("test", "prev")}, int64(len(prev))
	rec := &recorder{Source: src}
	file := build(t, h, rec, SendOptions{})
	got, err := applyTo(file, append([]byte(nil), prev...))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img.data) {
		t.Fatalf("the incremental applied to the previous image differs from the image (%d vs %d bytes)", len(got), len(img.data))
	}
	var differed, last int64
	for _, e := range rec.got {
		if e.Offset < last || e.Offset%bs != 0 || (e.End()%bs != 0 && e.End() != size) {
			t.Fatalf("extent %v [%d, %d) out of order or unaligned", e.Kind, e.Offset, e.End())
		}
		last = e.End()
		differed += e.Length
		for off := e.Offset; off < e.End(); off += bs {
			if !blockDiffers(prev, img.data, off, bs) && !it.isUnknown(off) {
				t.Fatalf("block at %d returned as %v but unchanged", off, e.Kind)
			}
			if zero := isZero(img.data[off:min(off+bs, size)]); zero != (e.Kind == KindZero) {
				t.Fatalf("block at %d returned as %v, all zero %v", off, e.Kind, zero)
			}
		}
	}
	st := src.Stats()
	if st.Examined != size || st.Differed != differed || st.Read > size || progress != size {
		t.Fatalf("stats %+v, progress %d, for %d bytes of which %d differ", st, progress, size, differed)
	}
	return src, rec.got, file
}

// TestDigestSourceRandom changes an image in random places (data, zeroes
// written, holes punched, growth, shrinking, all at unaligned offsets) and
// checks that an incremental sent from a DigestSource against the old
// image's digests turns the old image into the new one, returning only
// blocks that changed.
func TestDigestSourceRandom(t *testing.T) {
	r := testRand(t)
	rounds := 25
	if testing.Short() {
		rounds = 5
	}
	for round := 0; round < rounds; round++ {
		bs := []int64{4096, 8192, 65536}[r.Intn(3)]
		prev := volume(r, r.Intn(200), r.Intn(3)*r.Intn(4096))
		img := newImageFile(t, prev, r.Intn(4) != 0)
		for i := r.Intn(12); i > 0 && len(img.data) > 0; i-- {
			off := r.Intn(len(img.data))
			n := min(1+r.Intn(4*int(bs)), len(img.data)-off)
			switch r.Intn(4) {
			case 0:
				img.write(off, make([]byte, n))
			case 1:
				img.punch(off, n)
			default:
				b := make([]byte, n)
				r.Read(b)
				img.write(off, b)
			}
		}
		switch r.Intn(5) {
		case 0: // grown, with a hole at the end and maybe data
			img.truncate(len(img.data) + 1 + r.Intn(5*int(bs)))
			if r.Intn(2) == 0 {
				img.write(len(img.data)-100, bytes.Repeat([]byte{9}, 100))
			}
		case 1: // shrunk
			if len(img.data) > 0 {
				img.truncate(r.Intn(len(img.data)))
			}
		}
		opts := DigestSourceOptions{Workers: r.Intn(5), ChunkSize: []int{0, int(bs), 3 * int(bs), 256 << 10}[r.Intn(4)]}
		it := digestsOf(r, prev, bs, r.Intn(3) == 0)
		t.Logf("round %d: block size %d, %d -> %d bytes, %d unknown runs, %+v", round, bs, len(prev), len(img.data), len(it.unknown), opts)
		sendDigests(t, prev, img, bs, it, opts)
	}
}

// TestDigestSourceUnchanged: an image equal to the previous snapshot gives
// no extent at all, so the incremental has no record; a sparse image's
// holes are not read.
func TestDigestSourceUnchanged(t *testing.T) {
	r := testRand(t)
	prev := volume(r, 300, 1234)
	for _, sparse := range []bool{false, true} {
		img := newImageFile(t, prev, sparse)
		src, got, file := sendDigests(t, prev, img, 4096, digestsOf(r, prev, 4096, false), DigestSourceOptions{})
		if len(got) != 0 {
			t.Fatalf("sparse %v: %d extents for an unchanged image", sparse, len(got))
		}
		rd := NewReader(bytes.NewReader(file))
		for _, err := rd.Next(); err != io.EOF; _, err = rd.Next() {
			if err != nil {
				t.Fatal(err)
			}
		}
		if n := rd.Trailer().Records; n != 0 {
			t.Fatalf("sparse %v: %d records for an unchanged image", sparse, n)
		}
		var zero int64
		for off := int64(0); off < int64(len(prev)); off += 4096 {
			if isZero(prev[off:min(off+4096, int64(len(prev)))]) {
				zero += min(4096, int64(len(prev))-off)
			}
		}
		st := src.Stats()
		t.Logf("sparse %v: read %d of %d bytes, %d of them in zero blocks", sparse, st.Read, len(prev), zero)
		if sparse && st.Read > int64(len(prev))-zero || !sparse && st.Read != int64(len(prev)) {
			t.Fatalf("sparse %v: read %d bytes of %d, %d in holes", sparse, st.Read, len(prev), zero)
		}
	}
}

// TestDigestSourceHoles: on a large sparse image, holes are never read: a
// hole where the previous snapshot had zeroes is unchanged, a hole punched
// where it had data is a ZERO extent.
func TestDigestSourceHoles(t *testing.T) {
	r := testRand(t)
	const size, bs = 64 << 20, 64 << 10
	prev := make([]byte, size)
	for _, off := range []int{0, 5 << 20, 40<<20 + 4096} {
		r.Read(prev[off : off+1<<20])
	}
	img := newImageFile(t, prev, true)
	img.punch(5<<20+bs, 2*bs)
	src, got, _ := sendDigests(t, prev, img, bs, digestsOf(r, prev, bs, false), DigestSourceOptions{})
	if len(got) != 1 || got[0] != (Extent{Offset: 5<<20 + bs, Length: 2 * bs, Kind: KindZero}) {
		t.Fatalf("extents %+v, want the punched hole", got)
	}
	// The data regions, widened to blocks, minus the hole.
	if st := src.Stats(); st.Read > 4<<20 {
		t.Fatalf("read %d bytes of an image with 3 MiB of data", st.Read)
	}
}

// TestDigestSourceResize: growth and shrinking, aligned or not, by little
// or by much.
func TestDigestSourceResize(t *testing.T) {
	r := testRand(t)
	const bs = 8192
	for _, tc := range []struct {
		name     string
		from, to int
	}{
		{"grown aligned", 10 * bs, 20 * bs},
		{"grown unaligned", 10*bs + 100, 20*bs + 7},
		{"grown within the last block", 10*bs + 100, 10*bs + 200},
		{"shrunk aligned", 20 * bs, 10 * bs},
		{"shrunk unaligned", 20*bs + 5, 10*bs + 3000},
		{"shrunk within the last block", 10*bs + 200, 10*bs + 100},
		{"from empty", 0, 3*bs + 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, grownWith := range []string{"hole", "data"} {
				prev := make([]byte, tc.from)
				r.Read(prev)
				img := newImageFile(t, prev, true)
				img.truncate(tc.to)
				if grownWith == "data" && tc.to > tc.from {
					b := make([]byte, tc.to-tc.from)
					r.Read(b)
					img.write(tc.from, b)
				}
				sendDigests(t, prev, img, bs, digestsOf(r, prev, bs, false), DigestSourceOptions{ChunkSize: 3 * bs})
			}
		})
	}
}

// badDigests returns fixed extents then an error.
type badDigests struct {
	exts []DigestExtent
	err  error
}

func (b *badDigests) Next() (DigestExtent, error) {
	if len(b.exts) == 0 {
		if b.err != nil {
			return DigestExtent{}, b.err
		}
		return DigestExtent{}, io.EOF
	}
	e := b.exts[0]
	b.exts = b.exts[1:]
	return e, nil
}

// TestDigestSourceBadDigests: an iterator that breaks its promises, or
// fails, stops the source with an error (not a wrong result), even when the
// failure comes after the end of the image, and no goroutine is left.
func TestDigestSourceBadDigests(t *testing.T) {
	const bs = 4096
	vol := make([]byte, 64*bs)
	for i := range vol {
		vol[i] = byte(i%251 + 1)
	}
	img := newImageFile(t, vol, false)
	d := []Digest{blake3.Sum256(vol[:bs])}
	errBoom := errors.New("boom")
	before := runtime.NumGoroutine()
	for _, tc := range []struct {
		name string
		it   *badDigests
		want error
	}{
		{"unaligned", &badDigests{exts: []DigestExtent{{Offset: 100, Length: bs, Kind: KindZero}}}, nil},
		{"overlapping", &badDigests{exts: []DigestExtent{{Offset: 0, Length: 2 * bs, Kind: KindZero}, {Offset: bs, Length: bs, Kind: KindData, Digests: d}}}, nil},
		{"digests", &badDigests{exts: []DigestExtent{{Offset: 0, Length: 2 * bs, Kind: KindData, Digests: d}}}, nil},
		{"kind", &badDigests{exts: []DigestExtent{{Offset: 0, Length: bs, Kind: 9}}}, nil},
		{"after an unaligned end", &badDigests{exts: []DigestExtent{{Offset: 0, Length: 100, Kind: KindZero}, {Offset: bs, Length: bs, Kind: KindZero}}}, nil},
		{"error", &badDigests{exts: []DigestExtent{{Offset: 0, Length: bs, Kind: KindData, Digests: d}}, err: errBoom}, errBoom},
		{"error past the image", &badDigests{exts: []DigestExtent{{Offset: 0, Length: 64 * bs, Kind: KindZero}, {Offset: 100 * bs, Length: bs, Kind: KindZero}}, err: errBoom}, errBoom},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := NewDigestSource(img.f, int64(len(vol)), bs, tc.it, DigestSourceOptions{ChunkSize: 8 * bs})
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			for err == nil {
				_, err = src.Next()
			}
			if err == io.EOF || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want an error (%v)", err, tc.want)
			}
			if _, again := src.Next(); again != err {
				t.Fatalf("error not sticky: %v, then %v", err, again)
			}
			t.Log(err)
		})
	}
	// A source closed early stops too.
	src, err := NewDigestSource(img.f, int64(len(vol)), bs, &badDigests{}, DigestSourceOptions{ChunkSize: bs})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Next(); err != nil {
		t.Fatal(err)
	}
	src.Close()
	if _, err := src.Next(); err == nil || err == io.EOF {
		t.Fatalf("Next after Close: %v", err)
	}
	waitGoroutines(t, before)
}

// waitGoroutines waits for the goroutines started since before to end.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	for i := 0; runtime.NumGoroutine() > before; i++ {
		if i == 500 {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left running:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDigestSourceRefuses(t *testing.T) {
	img := newImageFile(t, make([]byte, 4096), false)
	for _, bs := range []int64{0, 1000, 4097, 8 << 20} {
		if _, err := NewDigestSource(img.f, 4096, bs, &badDigests{}, DigestSourceOptions{}); err == nil {
			t.Fatalf("block size %d accepted", bs)
		}
	}
	d, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := NewDigestSource(d, 0, 4096, &badDigests{}, DigestSourceOptions{}); err == nil {
		t.Fatal("a directory accepted")
	}
}
