package restore

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/zeebo/blake3"
)

// TestMergeRandomChains is the property test of Merge: for random chains
// (2-6 files, random writes, zeroed runs, growth and shrinking to unaligned
// sizes, records of random sizes, several block sizes), the merged file of
// every contiguous sub-chain is a valid delta file with the right header
// that covers what it must, and applying it gives, byte for byte, what
// applying the sub-chain gives: the volume's state at the end of it.
func TestMergeRandomChains(t *testing.T) {
	w := newWorld(t)
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	for round := 0; round < rounds; round++ {
		w.bs = []int64{4096, 8192, 16384}[w.r.Intn(3)]
		imgs, files := w.randomChain(2 + w.r.Intn(5))
		var sizes []int
		for _, img := range imgs {
			sizes = append(sizes, len(img.data))
		}
		t.Logf("round %d: block size %d, volume sizes %v", round, w.bs, sizes)
		for i := range imgs {
			for j := i; j < len(imgs); j++ {
				where := fmt.Sprintf("round %d, files %d..%d", round, i, j)
				merged, h, tr, stats, err := mergeFiles(t, w, files[i:j+1], MergeOptions{Tool: "merge test", Workers: 1 + w.r.Intn(4)})
				if err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				checkMergedHeader(t, where, h, imgs, i, j)
				fh, recs, ftr := readAll(t, merged)
				checkMergedHeader(t, where+" (as read)", fh, imgs, i, j)
				if ftr != tr {
					t.Fatalf("%s: Merge returned trailer %+v, the file has %+v", where, tr, ftr)
				}
				checkCoverage(t, fh, recs)
				if tr.DataBytes+tr.ZeroBytes > fh.VolumeSize {
					t.Fatalf("%s: %d bytes of records for a volume of %d: a byte defined twice", where, tr.DataBytes+tr.ZeroBytes, fh.VolumeSize)
				}
				if live := stats.maxLive.Load(); live > stats.slots {
					t.Fatalf("%s: %d records held at once, more than the %d slots", where, live, stats.slots)
				}
				var base *image
				if i > 0 {
					base = imgs[i-1]
				}
				got := applyOnto(t, w, base, merged)
				if !bytes.Equal(got, imgs[j].data) {
					t.Fatalf("%s: applying the merged file differs from the volume (%d vs %d bytes)", where, len(got), len(imgs[j].data))
				}
				if chain := applyOnto(t, w, base, files[i:j+1]...); !bytes.Equal(chain, got) {
					t.Fatalf("%s: applying the chain and applying the merged file differ", where)
				}
				os.Remove(merged)
			}
		}
		// Merging merged files is merging the chain.
		if len(files) >= 3 {
			k := 1 + w.r.Intn(len(files)-2)
			a, _, _, _, err := mergeFiles(t, w, files[:k+1], MergeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			b, _, _, _, err := mergeFiles(t, w, files[k+1:], MergeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ab, _, _, _, err := mergeFiles(t, w, []string{a, b}, MergeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got := applyOnto(t, w, nil, ab); !bytes.Equal(got, imgs[len(imgs)-1].data) {
				t.Fatalf("round %d: merging merged files 0..%d and %d..%d gives another volume", round, k, k+1, len(files)-1)
			}
		}
	}
}

func checkMergedHeader(t *testing.T, where string, h *archive.Header, imgs []*image, i, j int) {
	t.Helper()
	if h.Snapshot != imgs[j].snap || h.VolumeSize != int64(len(imgs[j].data)) || h.VolumeName != "vol" || h.VolumeUUID != "vol-uuid" {
		t.Fatalf("%s: merged header %+v is not the last file's snapshot and volume", where, h)
	}
	if i == 0 {
		if !h.IsFull() || h.ParentSize != 0 {
			t.Fatalf("%s: merging from a full gave an incremental from %v (size %d)", where, h.Parent, h.ParentSize)
		}
	} else if h.Parent != imgs[i-1].snap || h.ParentSize != int64(len(imgs[i-1].data)) {
		t.Fatalf("%s: merged parent %v size %d, want the first file's parent %v size %d", where, h.Parent, h.ParentSize, imgs[i-1].snap, len(imgs[i-1].data))
	}
	if h.Tool != "merge test" && h.Tool != "test" {
		t.Fatalf("%s: tool %q", where, h.Tool)
	}
}

// TestMergeFullAndIncremental: removing a full merges it with the next
// incremental into a new full, which restores onto any target.
func TestMergeFullAndIncremental(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(200*4096 + 555))
	v2 := w.image(append(w.mutate(v1.data, 40), w.random(30*4096)...))
	v2.snap.Name = "vg0/vm1.thinback.2"
	full, incr := w.delta(v1, nil), w.delta(v2, v1)
	var progress int64
	merged, h, tr, _, err := mergeFiles(t, w, []string{full, incr}, MergeOptions{Tool: "thinback prune", Progress: func(n int64) { progress += n }})
	if err != nil {
		t.Fatal(err)
	}
	if progress != tr.DataBytes+tr.ZeroBytes || progress != h.VolumeSize {
		t.Fatalf("progress %d, trailer %+v, volume %d", progress, tr, h.VolumeSize)
	}
	if !h.IsFull() || h.ParentSize != 0 || h.Snapshot != v2.snap || h.Tool != "thinback prune" || h.VolumeSize != int64(len(v2.data)) {
		t.Fatalf("merged header %+v, want a full of v2 by thinback prune", h)
	}
	// Onto a target holding something else entirely, with no state.
	w.n++
	target := filepath.Join(w.dir, "garbage")
	if err := os.WriteFile(target, bytes.Repeat([]byte{0xEE}, 500*4096), 0o600); err != nil {
		t.Fatal(err)
	}
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if _, err := Apply(context.Background(), tg, openInputs(t, merged), Options{}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v2.data)
}

// TestMergeCopiesWholeRecords: a record used whole is copied as it is, its
// payload not compressed again (the inputs are compressed at another level
// than the merge's, so a recompressed payload would differ), and only the
// record cut by a newer one is encoded anew.
func TestMergeCopiesWholeRecords(t *testing.T) {
	w := newWorld(t)
	base := make([]byte, 64*4096)
	for i := range base {
		base[i] = byte(i/4096*7 + 1) // compressible, no zero block
		if i%97 == 0 {
			base[i] = byte(w.r.Intn(256))
		}
	}
	v1 := w.image(base)
	next := append([]byte(nil), base...)
	w.r.Read(next[21*4096 : 22*4096]) // inside the record [16, 32) blocks
	v2 := w.image(next)
	full := w.deltaChunk(v1, nil, 16*4096, archive.LevelBetter)
	incr := w.deltaChunk(v2, v1, 16*4096, archive.LevelBetter)
	merged, _, _, _, err := mergeFiles(t, w, []string{full, incr}, MergeOptions{Level: archive.LevelFastest})
	if err != nil {
		t.Fatal(err)
	}
	_, in, _ := readAll(t, full)
	_, out, _ := readAll(t, merged)
	byRange := map[[2]int64]fileRecord{}
	for _, r := range out {
		byRange[[2]int64{r.Offset, r.End()}] = r
	}
	copied := 0
	for _, r := range in {
		m, ok := byRange[[2]int64{r.Offset, r.End()}]
		if r.Offset == 16*4096 {
			if ok {
				t.Fatal("the record cut by the incremental was kept whole")
			}
			continue
		}
		if !ok || !r.Compressed || !bytes.Equal(m.payload, r.payload) || !equalDigests(m.Digests, r.Digests) {
			t.Fatalf("record [%d, %d) was not copied as it is", r.Offset, r.End())
		}
		copied++
	}
	if copied != 3 {
		t.Fatalf("%d records copied whole, want 3", copied)
	}
	// The cut record: its blocks other than the new one keep their digests.
	for _, r := range out {
		for b := range r.Digests {
			off := r.Offset + int64(b)*4096
			if off/4096 != 21 && off >= 16*4096 && off < 32*4096 {
				if r.Digests[b] != in[1].Digests[off/4096-16] {
					t.Fatalf("block at %d: digest changed by the cut", off)
				}
			}
		}
	}
	if got := applyOnto(t, w, nil, merged); !bytes.Equal(got, next) {
		t.Fatal("merged file applies to another volume")
	}
}

func equalDigests(a, b []archive.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestMergeShrinkIntoBlock: a volume shrunk to a size inside a block leaves
// the last record cut mid-block: the merged record carries the digest of
// what is left of the block, or becomes ZERO when what is left is zeroes.
func TestMergeShrinkIntoBlock(t *testing.T) {
	for _, tc := range []struct {
		name     string
		zeroTail bool
	}{{"data left", false}, {"zeroes left", true}} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWorld(t)
			base := w.random(3 * 4096)
			w.r.Read(base)
			if tc.zeroTail {
				clear(base[2*4096 : 2*4096+100])
			}
			v1 := w.image(base)
			v2 := w.image(base[:2*4096+100])
			full, incr := w.delta(v1, nil), w.delta(v2, v1)
			if _, recs, _ := readAll(t, incr); len(recs) != 0 {
				t.Fatalf("the shrinking incremental has %d records, the test wants none", len(recs))
			}
			merged, _, _, _, err := mergeFiles(t, w, []string{full, incr}, MergeOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_, recs, _ := readAll(t, merged)
			last := recs[len(recs)-1]
			if last.End() != 2*4096+100 {
				t.Fatalf("last record ends at %d", last.End())
			}
			if tc.zeroTail != (last.Kind == archive.KindZero) {
				t.Fatalf("last record is %v", last.Kind)
			}
			if !tc.zeroTail {
				if d := last.Digests[len(last.Digests)-1]; d != blake3.Sum256(base[2*4096:2*4096+100]) {
					t.Fatal("the cut block's digest is not the digest of what is left of it")
				}
			}
			if got := applyOnto(t, w, nil, merged); !bytes.Equal(got, v2.data) {
				t.Fatal("merged file applies to another volume")
			}
		})
	}
}

// TestMergeCorruptInputs: a damaged input is refused with the archive's
// sentinel error and the file's name; what was written is never a complete
// delta file. Damage found before the merge starts (structure, truncation)
// leaves the output empty.
func TestMergeCorruptInputs(t *testing.T) {
	w := newWorld(t)
	base := make([]byte, 64*4096)
	w.r.Read(base) // no zero block: every offset is in a DATA record
	v1 := w.image(base)
	next := append([]byte(nil), v1.data...)
	w.r.Read(next[20*4096 : 21*4096])
	v2 := w.image(next)
	next = append([]byte(nil), next...)
	w.r.Read(next[50*4096 : 53*4096])
	v3 := w.image(next)
	full := w.deltaChunk(v1, nil, 16*4096, 0)
	incr2 := w.deltaChunk(v2, v1, 16*4096, 0)
	incr3 := w.deltaChunk(v3, v2, 16*4096, 0)

	truncated := filepath.Join(w.dir, "truncated.tbk")
	b, _ := os.ReadFile(incr2)
	os.WriteFile(truncated, b[:len(b)-10], 0o600)
	badMeta := filepath.Join(w.dir, "bad-meta.tbk")
	b, _ = os.ReadFile(full)
	_, recs, _ := readAll(t, full)
	b[recs[1].Pos+14] ^= 1 // a byte of the second record's offset
	os.WriteFile(badMeta, b, 0o600)
	notDelta := filepath.Join(w.dir, "not-delta.tbk")
	os.WriteFile(notDelta, bytes.Repeat([]byte("not a delta file "), 100), 0o600)

	for _, tc := range []struct {
		name  string
		files []string
		bad   string
		want  error
		empty bool // refused before anything is written
	}{
		{"payload of a record used whole", []string{flipPayload(t, full, 40*4096), incr2, incr3}, "", archive.ErrChecksum, false},
		{"payload of a record used in part", []string{flipPayload(t, full, 17*4096), incr2, incr3}, "", archive.ErrChecksum, false},
		{"payload of the last file", []string{full, incr2, flipPayload(t, incr3, firstData(t, incr3))}, "", archive.ErrChecksum, false},
		{"truncated", []string{full, truncated, incr3}, truncated, archive.ErrTruncated, true},
		{"record metadata", []string{badMeta, incr2}, badMeta, archive.ErrChecksum, true},
		{"not a delta file", []string{notDelta, incr2}, notDelta, archive.ErrHeader, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.bad
			if bad == "" {
				for _, f := range tc.files {
					if bytes.Contains([]byte(f), []byte(".flip")) {
						bad = f
					}
				}
			}
			out, _, _, _, err := mergeFiles(t, w, tc.files, MergeOptions{Workers: 2})
			mustFail(t, err, tc.want, bad)
			got, _ := os.ReadFile(out)
			if tc.empty && len(got) != 0 {
				t.Fatalf("%d bytes written before the damage was found", len(got))
			}
			rd := archive.NewReader(bytes.NewReader(got))
			for err = nil; err == nil; _, err = rd.Next() {
			}
			if err == io.EOF {
				t.Fatal("the output of a failed merge is a complete delta file")
			}
		})
	}
}

// firstData returns the volume offset of a file's first DATA record.
func firstData(t *testing.T, file string) int64 {
	_, recs, _ := readAll(t, file)
	for _, r := range recs {
		if r.Kind == archive.KindData {
			return r.Offset
		}
	}
	t.Fatalf("%s has no DATA record", file)
	return 0
}

// TestMergeSkipsSupersededRecords: a record every byte of which a newer
// file redefines is not read, so damage there does not stop a prune (the
// merged file does not contain it).
func TestMergeSkipsSupersededRecords(t *testing.T) {
	w := newWorld(t)
	base := make([]byte, 64*4096)
	w.r.Read(base)
	v1 := w.image(base)
	next := append([]byte(nil), v1.data...)
	w.r.Read(next[16*4096 : 32*4096])
	v2 := w.image(next)
	full := w.deltaChunk(v1, nil, 16*4096, 0)
	incr := w.deltaChunk(v2, v1, 16*4096, 0)
	merged, _, _, _, err := mergeFiles(t, w, []string{flipPayload(t, full, 16*4096), incr}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := applyOnto(t, w, nil, merged); !bytes.Equal(got, next) {
		t.Fatal("merged file applies to another volume")
	}
}

func TestMergeRefusals(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(32 * 4096))
	v2 := w.image(w.mutate(v1.data, 5))
	v3 := w.image(w.mutate(v2.data, 5))
	full, incr2, incr3 := w.delta(v1, nil), w.delta(v2, v1), w.delta(v3, v2)
	w.bs = 8192
	v3b := w.image(v3.data)
	incr3b := w.delta(v3b, v2)

	for _, tc := range []struct {
		name  string
		files []string
		want  error
	}{
		{"gap", []string{full, incr3}, ErrNotChain},
		{"full in the middle", []string{incr2, full}, ErrNotChain},
		{"wrong order", []string{full, incr3, incr2}, ErrNotChain},
		{"block sizes", []string{full, incr2, incr3b}, ErrBlockSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, _, _, err := mergeFiles(t, w, tc.files, MergeOptions{})
			mustFail(t, err, tc.want, "")
			if st, _ := os.Stat(out); st.Size() != 0 {
				t.Fatal("a refused merge wrote something")
			}
		})
	}
	if _, _, err := Merge(context.Background(), io.Discard, nil, MergeOptions{}); err == nil {
		t.Fatal("merging no files succeeded")
	}
	b, _ := os.ReadFile(full)
	if _, _, err := Merge(context.Background(), io.Discard, []Input{{Name: "-", R: stream{bytes.NewReader(b)}}}, MergeOptions{}); err == nil {
		t.Fatal("merging a stream succeeded")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Merge(ctx, io.Discard, openInputs(t, full, incr2), MergeOptions{}); err != context.Canceled {
		t.Fatalf("canceled merge: %v", err)
	}
}

// regionSource is a Source of a sparse volume: DATA extents over the given
// regions and, with zeroGaps, ZERO extents between them (without, the bytes
// between are an incremental's unchanged ones).
type regionSource struct {
	size    int64
	regions []region // ascending, block aligned
	extents []archive.Extent
}

type region struct {
	off  int64
	data []byte
}

func newRegionSource(size int64, zeroGaps bool, regions ...region) *regionSource {
	s := &regionSource{size: size, regions: regions}
	pos := int64(0)
	for _, r := range regions {
		if zeroGaps && r.off > pos {
			s.extents = append(s.extents, archive.Extent{Offset: pos, Length: r.off - pos, Kind: archive.KindZero})
		}
		s.extents = append(s.extents, archive.Extent{Offset: r.off, Length: int64(len(r.data)), Kind: archive.KindData})
		pos = r.off + int64(len(r.data))
	}
	if zeroGaps && pos < size {
		s.extents = append(s.extents, archive.Extent{Offset: pos, Length: size - pos, Kind: archive.KindZero})
	}
	return s
}

func (s *regionSource) Next() (archive.Extent, error) {
	if len(s.extents) == 0 {
		return archive.Extent{}, io.EOF
	}
	e := s.extents[0]
	s.extents = s.extents[1:]
	return e, nil
}

func (s *regionSource) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	for _, r := range s.regions {
		lo, hi := max(off, r.off), min(off+int64(len(p)), r.off+int64(len(r.data)))
		if lo < hi {
			copy(p[lo-off:hi-off], r.data[lo-r.off:hi-r.off])
		}
	}
	return len(p), nil
}

// TestMergeHugeSparseVolume: merging is proportional to the files, not the
// volume: a 1 TiB volume whose files hold a few MiB merges in no time (a
// merge that walked the volume would not finish), and the merged full says
// exactly what the chain says.
func TestMergeHugeSparseVolume(t *testing.T) {
	w := newWorld(t)
	const size = 1 << 40
	const bs = 64 << 10
	w.bs = bs
	blk := func(seed byte) []byte { return bytes.Repeat([]byte{seed, seed + 1, 0, 7}, 3*bs/4) }
	s1 := &image{snap: archive.Snapshot{ID: archive.NewID(), Name: "s1"}}
	s2 := &image{snap: archive.Snapshot{ID: archive.NewID(), Name: "s2"}}
	h1 := &archive.Header{BlockSize: bs, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3, VolumeName: "vol", VolumeUUID: "vol-uuid", VolumeSize: size, Snapshot: s1.snap, Tool: "test"}
	h2 := *h1
	h2.Snapshot, h2.Parent, h2.ParentSize = s2.snap, s1.snap, size
	full := filepath.Join(w.dir, "huge-full.tbk")
	incr := filepath.Join(w.dir, "huge-incr.tbk")
	w.writeDelta(full, h1, newRegionSource(size, true,
		region{0, blk(1)}, region{512 << 30, blk(2)}, region{size - 3*bs, blk(3)}), archive.SendOptions{})
	// The incremental rewrites part of the first region, zeroes the middle
	// one and writes new data far away.
	w.writeDelta(incr, &h2, newRegionSource(size, false,
		region{bs, blk(4)[:bs]}, region{512 << 30, make([]byte, 3*bs)}, region{700 << 30, blk(5)}), archive.SendOptions{})

	merged, h, tr, _, err := mergeFiles(t, w, []string{full, incr}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsFull() || tr.DataBytes+tr.ZeroBytes != size {
		t.Fatalf("merged full: %+v, trailer %+v", h, tr)
	}
	want := map[int64][]byte{0: blk(1)[:bs], bs: blk(4)[:bs], 2 * bs: blk(1)[2*bs:]}
	for i := int64(0); i < 3; i++ {
		want[700<<30+i*bs] = blk(5)[i*bs : (i+1)*bs]
		want[size-3*bs+i*bs] = blk(3)[i*bs : (i+1)*bs]
	}
	got := map[int64][]byte{}
	f, _ := os.Open(merged)
	defer f.Close()
	rd := archive.NewReader(f)
	err = archive.Scan(context.Background(), rd, archive.ScanOptions{}, func(rec *archive.Record, data []byte) error {
		for off := rec.Offset; rec.Kind == archive.KindData && off < rec.End(); off += bs {
			got[off] = append([]byte(nil), data[off-rec.Offset:off-rec.Offset+bs]...)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("merged file holds %d data blocks, want %d", len(got), len(want))
	}
	for off, b := range want {
		if !bytes.Equal(got[off], b) {
			t.Fatalf("block at %d differs", off)
		}
	}
	if st, _ := os.Stat(merged); st.Size() > 1<<20 {
		t.Fatalf("merged file of a few blocks is %d bytes", st.Size())
	}
}

// TestMergeMemoryBounded: memory does not grow with the data merged. A
// merge of 64 MiB of data in 256 KiB records allocates a fraction of it:
// the slots of the pipeline, reused, and the codecs' state.
func TestMergeMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("builds 64 MiB of files")
	}
	w := newWorld(t)
	w.bs = 64 << 10
	v1 := w.image(w.random(64 << 20))
	next := append([]byte(nil), v1.data...)
	for i := 0; i < 64; i++ { // every 256 KiB record is cut
		off := w.r.Intn(len(next) - 1<<16)
		w.r.Read(next[off : off+1<<16])
	}
	v2 := w.image(next)
	full := w.deltaChunk(v1, nil, 256<<10, 0)
	incr := w.deltaChunk(v2, v1, 256<<10, 0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, _, tr, stats, err := mergeFiles(t, w, []string{full, incr}, MergeOptions{Workers: 2})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("merged %d bytes of data allocating %d bytes; at most %d of %d records held at once", tr.DataBytes, alloc, stats.maxLive.Load(), stats.slots)
	if alloc > 24<<20 {
		t.Fatalf("a merge of %d bytes allocated %d bytes", tr.DataBytes, alloc)
	}
}

// TestMergeSnapbackFlag: an undo file merged alone stays an undo file; an
// undo file merged with an incremental that follows it is not one (it no
// longer undoes one apply), and still applies where its chain starts.
func TestMergeSnapbackFlag(t *testing.T) {
	w := newWorld(t)
	st := stateStore{}
	v1 := w.image(w.random(64 * 4096))
	v2 := w.image(w.mutate(v1.data, 10))
	v3 := w.image(w.mutate(v1.data, 10))
	target := filepath.Join(w.dir, "target")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{}); err != nil {
		t.Fatal(err)
	}
	undo := filepath.Join(w.dir, "undo.tbk")
	if _, err := st.apply(t, target, []string{w.delta(v2, v1)}, Options{Snapback: newSnapback(t, undo)}); err != nil {
		t.Fatal(err)
	}
	_, h, _, _, err := mergeFiles(t, w, []string{undo}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsSnapback() || h.Parent != v2.snap || h.Snapshot != v1.snap {
		t.Fatalf("undo file merged alone: %+v", h)
	}
	merged, h, _, _, err := mergeFiles(t, w, []string{undo, w.delta(v3, v1)}, MergeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h.IsSnapback() || h.Parent != v2.snap || h.Snapshot != v3.snap {
		t.Fatalf("undo file merged with an incremental: %+v", h)
	}
	if got := applyOnto(t, w, v2, merged); !bytes.Equal(got, v3.data) {
		t.Fatal("merged file applies to another volume")
	}
}
