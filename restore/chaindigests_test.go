package restore

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/zeebo/blake3"
)

// ChainDigests is archive's; these tests run it over the random chains of
// delta files that restore's tests make, next to the merges and applies of
// the same chains.

// openChainDigests opens the chain of inputs, which must be seekable.
func openChainDigests(inputs []Input) (*archive.ChainDigests, error) {
	files := make([]archive.ChainInput, len(inputs))
	for i, in := range inputs {
		files[i] = archive.ChainInput{Name: in.Name, File: in.R.(archive.ReadSeekerAt)}
	}
	return archive.OpenChainDigests(files)
}

// countingFile counts the bytes read from a file, by Read (front to back)
// and by ReadAt (payloads).
type countingFile struct {
	*os.File
	read, readAt int64
}

func (c *countingFile) Read(p []byte) (int, error) {
	n, err := c.File.Read(p)
	c.read += int64(n)
	return n, err
}

func (c *countingFile) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.File.ReadAt(p, off)
	c.readAt += int64(n)
	return n, err
}

func countingInputs(t testing.TB, files ...string) ([]Input, []*countingFile) {
	t.Helper()
	var inputs []Input
	var counters []*countingFile
	for _, in := range openInputs(t, files...) {
		c := &countingFile{File: in.R.(*os.File)}
		counters = append(counters, c)
		inputs = append(inputs, Input{Name: in.Name, R: c})
	}
	return inputs, counters
}

// checkDigests reads cd to its end and checks that its extents describe
// img block by block: in order, without gaps, DATA digests equal to the
// blocks' own, ZERO only over zeroes.
func checkDigests(t testing.TB, where string, cd *archive.ChainDigests, img []byte) {
	t.Helper()
	bs := cd.BlockSize()
	pos := int64(0)
	for {
		e, err := cd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		if e.Offset != pos || e.Length <= 0 || e.Offset%bs != 0 || e.End() > int64(len(img)) {
			t.Fatalf("%s: extent %v [%d, %d) after %d, volume of %d bytes", where, e.Kind, e.Offset, e.End(), pos, len(img))
		}
		switch e.Kind {
		case archive.KindZero:
			if !allZero(img[e.Offset:e.End()]) {
				t.Fatalf("%s: ZERO extent [%d, %d) over data", where, e.Offset, e.End())
			}
		case archive.KindData:
			if int64(len(e.Digests)) != (e.Length+bs-1)/bs {
				t.Fatalf("%s: DATA extent [%d, %d) with %d digests", where, e.Offset, e.End(), len(e.Digests))
			}
			for i, d := range e.Digests {
				lo := e.Offset + int64(i)*bs
				b := img[lo:min(lo+bs, e.End())]
				if d != blake3.Sum256(b) || allZero(b) {
					t.Fatalf("%s: the digest of block [%d, %d) is wrong", where, lo, lo+int64(len(b)))
				}
			}
		default:
			t.Fatalf("%s: extent of kind %v", where, e.Kind)
		}
		pos = e.End()
	}
	if pos != int64(len(img)) {
		t.Fatalf("%s: extents end at %d, the volume at %d", where, pos, len(img))
	}
	if _, err := cd.Next(); err != io.EOF {
		t.Fatalf("%s: Next after the end: %v", where, err)
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// TestChainDigestsRandom: the digests of every snapshot of random chains
// describe the snapshot block by block, and are found by reading only the
// files' metadata (payloads are seeked over; at most one record is read,
// when the volume shrank into a block).
func TestChainDigestsRandom(t *testing.T) {
	w := newWorld(t)
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	for round := 0; round < rounds; round++ {
		w.bs = []int64{4096, 8192, 16384}[w.r.Intn(3)]
		imgs, files := w.randomChain(1 + w.r.Intn(6))
		for j := range imgs {
			where := fmt.Sprintf("round %d, snapshot %d (block size %d, volume %d bytes)", round, j, w.bs, len(imgs[j].data))
			inputs, counters := countingInputs(t, files[:j+1]...)
			cd, err := openChainDigests(inputs)
			if err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if cd.BlockSize() != w.bs || cd.Header().Snapshot != imgs[j].snap || cd.Header().VolumeSize != int64(len(imgs[j].data)) {
				t.Fatalf("%s: block size %d, header %+v", where, cd.BlockSize(), cd.Header())
			}
			checkDigests(t, where, cd, imgs[j].data)
			var readAt, maxPayload int64
			for i, c := range counters {
				st, _ := c.Stat()
				_, recs, tr := readAll(t, files[i])
				if meta := st.Size() - tr.PayloadBytes; c.read > meta {
					t.Fatalf("%s: read %d bytes of %s, which has %d bytes of metadata", where, c.read, files[i], meta)
				}
				for _, r := range recs {
					maxPayload = max(maxPayload, r.PayloadLen)
				}
				readAt += c.readAt
			}
			if readAt > maxPayload {
				t.Fatalf("%s: read %d bytes of payloads, more than one record", where, readAt)
			}
		}
	}
}

// TestChainDigestsShrinkIntoBlock: when the volume shrank into a block, the
// digest of what is left of it comes from the record's data, and is ZERO
// when that is zeroes.
func TestChainDigestsShrinkIntoBlock(t *testing.T) {
	for _, zeroTail := range []bool{false, true} {
		w := newWorld(t)
		base := make([]byte, 3*4096)
		w.r.Read(base)
		if zeroTail {
			clear(base[2*4096 : 2*4096+100])
		}
		v1 := w.image(base)
		v2 := w.image(base[:2*4096+100])
		inputs, counters := countingInputs(t, w.delta(v1, nil), w.delta(v2, v1))
		cd, err := openChainDigests(inputs)
		if err != nil {
			t.Fatal(err)
		}
		checkDigests(t, fmt.Sprintf("zero tail %v", zeroTail), cd, v2.data)
		if counters[0].readAt == 0 {
			t.Fatal("the cut block's record was not read")
		}
	}
}

func TestChainDigestsRefusals(t *testing.T) {
	w := newWorld(t)
	v1 := w.image(w.random(32 * 4096))
	v2 := w.image(w.mutate(v1.data, 5))
	v3 := w.image(w.mutate(v2.data, 5))
	full, incr2, incr3 := w.delta(v1, nil), w.delta(v2, v1), w.delta(v3, v2)
	w.bs = 8192
	incr3b := w.delta(w.image(v3.data), v2)

	for _, tc := range []struct {
		name  string
		files []string
		want  error
	}{
		{"no full", []string{incr2, incr3}, ErrNotChain},
		{"gap", []string{full, incr3}, ErrNotChain},
		{"block sizes", []string{full, incr2, incr3b}, ErrBlockSize},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := openChainDigests(openInputs(t, tc.files...))
			mustFail(t, err, tc.want, "")
		})
	}
	if _, err := openChainDigests(nil); err == nil {
		t.Fatal("no files accepted")
	}

	// Damage is found as the files are read, and is sticky.
	b, _ := os.ReadFile(incr3)
	truncated := filepath.Join(w.dir, "truncated.tbk")
	os.WriteFile(truncated, b[:len(b)-1], 0o600)
	_, recs, _ := readAll(t, incr2)
	b, _ = os.ReadFile(incr2)
	b[recs[len(recs)-1].Pos+13] ^= 4
	badMeta := filepath.Join(w.dir, "bad-meta.tbk")
	os.WriteFile(badMeta, b, 0o600)
	for _, tc := range []struct {
		name  string
		files []string
		bad   string
		want  error
	}{
		{"truncated", []string{full, incr2, truncated}, truncated, archive.ErrTruncated},
		{"record metadata", []string{full, badMeta, incr3}, badMeta, archive.ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cd, err := openChainDigests(openInputs(t, tc.files...))
			if err != nil {
				t.Fatal(err)
			}
			for err == nil {
				_, err = cd.Next()
			}
			mustFail(t, err, tc.want, tc.bad)
			if _, again := cd.Next(); again != err {
				t.Fatalf("error not sticky: %v, then %v", err, again)
			}
		})
	}
}

// TestChainDigestsHugeVolume: the digests of a 1 TiB volume whose files hold
// a few blocks come in a handful of extents, without walking the volume.
func TestChainDigestsHugeVolume(t *testing.T) {
	w := newWorld(t)
	const size, bs = 1 << 40, 64 << 10
	w.bs = bs
	data := bytes.Repeat([]byte("thinback"), 2*bs/8)
	s1 := archive.Snapshot{ID: archive.NewID(), Name: "s1"}
	h := &archive.Header{BlockSize: bs, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3, VolumeName: "vol", VolumeSize: size, Snapshot: s1, Tool: "test"}
	full := filepath.Join(w.dir, "huge.tbk")
	w.writeDelta(full, h, newRegionSource(size, true, region{300 << 30, data}), archive.SendOptions{})
	cd, err := openChainDigests(openInputs(t, full))
	if err != nil {
		t.Fatal(err)
	}
	var got []archive.DigestExtent
	for {
		e, err := cd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e)
	}
	d := archive.Digest(blake3.Sum256(data[:bs]))
	if len(got) != 3 || got[0].Kind != archive.KindZero || got[0].End() != 300<<30 ||
		got[1].Kind != archive.KindData || len(got[1].Digests) != 2 || got[1].Digests[0] != d || got[1].Digests[1] != d ||
		got[2].Kind != archive.KindZero || got[2].End() != size {
		t.Fatalf("extents %+v", got)
	}
}
