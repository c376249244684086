package thinmeta

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os/exec"
	"reflect"
	"sort"
	"sync"
	"testing"
)

// image is a metadata image with changed blocks over a base, read through
// ReadAt without copying the base (16 MiB) for every damaged variant.
type image struct {
	base    []byte
	blocks  map[uint64][]byte
	nblocks uint64
}

func newImage(base []byte) *image {
	return &image{base: base, blocks: map[uint64][]byte{}, nblocks: uint64(len(base) / BlockSize)}
}

func (im *image) size() int64 { return int64(im.nblocks) * BlockSize }

// block returns a writable copy of block blk.
func (im *image) block(blk uint64) []byte {
	if b, ok := im.blocks[blk]; ok {
		return b
	}
	b := make([]byte, BlockSize)
	copy(b, im.base[blk*BlockSize:])
	im.blocks[blk] = b
	return b
}

func (im *image) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		o := off + int64(n)
		if o >= im.size() {
			return n, io.EOF
		}
		blk := uint64(o / BlockSize)
		src := im.base[blk*BlockSize : (blk+1)*BlockSize]
		if b, ok := im.blocks[blk]; ok {
			src = b
		}
		n += copy(p[n:], src[o%BlockSize:])
	}
	return n, nil
}

// bytes returns the whole image, for the tools.
func (im *image) bytes() []byte {
	out := make([]byte, im.size())
	if _, err := im.ReadAt(out, 0); err != nil {
		panic(err)
	}
	return out
}

// nodes lists the blocks of an image's held snapshot: its superblocks,
// every node of the top-level, details and device trees; and the internal
// nodes among them.
func nodes(t testing.TB, im *image) (all, internal []uint64) {
	t.Helper()
	m, err := NewReader(im, im.size(), "image", Options{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[uint64]bool{0: true, m.sb.Block: true}
	var walk func(root uint64, vsize int, top bool)
	walk = func(root uint64, vsize int, top bool) {
		c := newCursor(context.Background(), m, root, vsize, math.MaxUint64, "tree")
		for {
			it := c.front()
			switch it.kind {
			case itemEnd:
				return
			case itemTree:
				if err := c.expand(it); err != nil {
					t.Fatal(err)
				}
				f := &c.stack[c.depth-1]
				if !seen[f.blk] && !f.n.leaf {
					internal = append(internal, f.blk)
				}
				seen[f.blk] = true
				if top && f.n.leaf { // walk every device
					for i := 0; i < f.n.n; i++ {
						walk(f.n.value64(i), mappingValueSize, false)
					}
				}
				if f.n.leaf {
					f.i = f.n.n
				}
			}
		}
	}
	walk(m.sb.MappingRoot, blockValueSize, true)
	walk(m.sb.DetailsRoot, detailsValueSize, false)
	for b := range seen {
		all = append(all, b)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return all, internal
}

// damage applies a damage program to an image: each 8 bytes are one
// change to a block of the held snapshot (or to the superblocks): a
// flipped bit (with and without a valid checksum), a zeroed block, a
// truncated image, a child pointer set to another node (cycles, shared
// nodes at other places), to the superblock or past the end, a key or a
// header field overwritten, a block sealed with another kind's salt, a
// superblock field changed. It returns what it did, for messages.
func damage(im *image, all, internal []uint64, prog []byte) []string {
	var did []string
	le := binary.LittleEndian
	for len(prog) >= 8 {
		op, a, v := prog[0], le.Uint16(prog[1:]), le.Uint32(prog[4:])
		prog = prog[8:]
		blk := all[int(a)%len(all)]
		reseal := func(b []byte) {
			salt := uint32(nodeSalt)
			if blk == 0 || le.Uint64(b[sbMagic:]) == superblockMagic && blk == le.Uint64(b[sbBlocknr:]) {
				salt = superblockSalt
			}
			sealBlock(b, salt)
		}
		switch op % 10 {
		case 0: // a flipped bit, checksum left wrong
			b := im.block(blk)
			b[v%BlockSize] ^= 1 << (v >> 29)
			did = append(did, fmt.Sprintf("flip bit %d of byte %d of block %d", v>>29, v%BlockSize, blk))
		case 1: // a flipped bit under a valid checksum
			b := im.block(blk)
			off := 4 + v%(BlockSize-4)
			b[off] ^= 1 << (v >> 29)
			reseal(b)
			did = append(did, fmt.Sprintf("flip bit %d of byte %d of block %d, resealed", v>>29, off, blk))
		case 2:
			clear(im.block(blk))
			did = append(did, fmt.Sprintf("zero block %d", blk))
		case 3:
			if n := uint64(v) % (im.nblocks + 1); n < im.nblocks {
				im.nblocks = n
				did = append(did, fmt.Sprintf("truncate to %d blocks", n))
			}
		case 4, 5: // a child pointer elsewhere
			if len(internal) == 0 {
				continue
			}
			nb := internal[int(a)%len(internal)]
			b := im.block(nb)
			nr := le.Uint32(b[nodeNrEntries:])
			max := le.Uint32(b[nodeMaxEntries:])
			if nr == 0 || nr > max || max > 500 {
				continue
			}
			i := v % nr
			var to uint64
			switch (v >> 16) % 4 {
			case 0:
				to = 0 // the superblock
			case 1:
				to = nb // itself
			case 2:
				to = all[int(v>>8)%len(all)] // another node, maybe an ancestor
			case 3:
				to = im.nblocks + uint64(v>>20) // past the end
			}
			le.PutUint64(b[nodeHeaderSize+8*int(max)+8*int(i):], to)
			sealBlock(b, nodeSalt)
			did = append(did, fmt.Sprintf("child %d of block %d -> %d", i, nb, to))
		case 6: // a key
			b := im.block(blk)
			max := le.Uint32(b[nodeMaxEntries:])
			if max == 0 || max > 500 {
				continue
			}
			i := v % max
			le.PutUint64(b[nodeHeaderSize+8*int(i):], uint64(v>>8))
			sealBlock(b, nodeSalt)
			did = append(did, fmt.Sprintf("key %d of block %d = %d", i, blk, v>>8))
		case 7: // a header field
			b := im.block(blk)
			fields := []int{nodeFlags, nodeNrEntries, nodeMaxEntries, nodeValueSize}
			f := fields[v%4]
			val := v >> 2
			if v&(1<<31) != 0 {
				val = v >> 24 // mostly small values
			}
			le.PutUint32(b[f:], val)
			sealBlock(b, nodeSalt)
			did = append(did, fmt.Sprintf("header offset %d of block %d = %d", f, blk, val))
		case 8: // another kind's salt
			salts := []uint32{superblockSalt, nodeSalt, indexSalt, bitmapSalt, 0}
			sealBlock(im.block(blk), salts[v%5])
			did = append(did, fmt.Sprintf("block %d sealed with salt %d", blk, salts[v%5]))
		case 9: // a superblock field, of the live one or the held copy
			sb := uint64(0)
			if v&1 != 0 {
				sb = heldOf(im)
				if sb >= im.nblocks {
					continue
				}
			}
			b := im.block(sb)
			offs := []int{sbHeldRoot, sbMappingRoot, sbDetailsRoot, sbDataBlockSize, sbVersion, sbIncompatFlags, sbMetaBlockSize, sbBlocknr}
			off := offs[(v>>1)%uint32(len(offs))]
			val := uint64(v >> 8)
			if (v>>4)&1 != 0 {
				val = all[int(v>>8)%len(all)]
			}
			if off == sbDataBlockSize || off == sbVersion || off == sbIncompatFlags || off == sbMetaBlockSize {
				le.PutUint32(b[off:], uint32(val))
			} else {
				le.PutUint64(b[off:], val)
			}
			sealBlock(b, superblockSalt)
			did = append(did, fmt.Sprintf("superblock %d offset %d = %d", sb, off, val))
		}
	}
	return did
}

func heldOf(im *image) uint64 {
	b := make([]byte, BlockSize)
	if _, err := im.ReadAt(b, 0); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b[sbHeldRoot:])
}

// answers is everything the reader says about an image.
type answers struct {
	openErr error
	devices []DeviceDetails
	maps    map[uint64][]Mapping
	mapErr  map[uint64]error
	diffs   map[[2]uint64][]Range
	diffErr map[[2]uint64]error
}

// checkDamaged reads a damaged image every way the reader can and checks
// the promise: no panic (the fuzzer would report it), an error only
// ErrMetadata (a *MetadataError), ErrNoDevice or ErrNoSnapshot, and where
// both devices' trees read whole without error, a diff that succeeds and
// equals the one computed from the whole trees. It returns the answers.
func checkDamaged(t testing.TB, im *image, ids []uint64, did []string) answers {
	t.Helper()
	ctx := context.Background()
	a := answers{maps: map[uint64][]Mapping{}, mapErr: map[uint64]error{}, diffs: map[[2]uint64][]Range{}, diffErr: map[[2]uint64]error{}}
	allowed := func(what string, err error) {
		t.Helper()
		if err == nil || isMetadataError(err) || errors.Is(err, ErrNoDevice) || errors.Is(err, ErrNoSnapshot) {
			return
		}
		t.Fatalf("%s after %v: %v: not ErrMetadata, ErrNoDevice or ErrNoSnapshot", what, did, err)
	}
	m, err := NewReader(im, im.size(), "image", Options{Snapshot: true})
	allowed("Open", err)
	if err != nil {
		a.openErr = err
		for _, id := range ids {
			a.mapErr[id] = err
			for _, r := range ids {
				a.diffErr[[2]uint64{id, r}] = err
			}
		}
		return a
	}
	err = m.Devices(ctx, func(d DeviceDetails) error { a.devices = append(a.devices, d); return nil })
	allowed("Devices", err)
	for _, id := range ids {
		_, err := m.Device(id)
		allowed("Device", err)
		var ms []Mapping
		err = m.Mappings(ctx, id, 0, func(x Mapping) error { ms = append(ms, x); return nil })
		allowed("Mappings", err)
		a.maps[id], a.mapErr[id] = ms, err
		rs, err := mappedRanges(m, id, 0)
		allowed("MappedRanges", err)
		if (err == nil) != (a.mapErr[id] == nil) || err == nil && !reflect.DeepEqual(rs, runsOf(ms)) {
			t.Fatalf("after %v: MappedRanges of %d = %v, %v; Mappings %v", did, id, rs, err, a.mapErr[id])
		}
	}
	for _, l := range ids {
		for _, r := range ids {
			if l == r {
				continue
			}
			whole, err := diffRanges(m, l, r, DiffOptions{})
			allowed("Diff", err)
			skip, serr := diffRanges(m, l, r, DiffOptions{SameFrom: math.MaxUint64})
			allowed("Diff", serr)
			a.diffs[[2]uint64{l, r}], a.diffErr[[2]uint64{l, r}] = whole, err
			if a.mapErr[l] != nil || a.mapErr[r] != nil {
				continue // damage the diff may not see, where the trees share it
			}
			want := naiveDiff(a.maps[l], a.maps[r])
			if err != nil || !reflect.DeepEqual(whole, want) {
				t.Fatalf("after %v: both trees read whole, but the whole diff %d -> %d is %v, %v; want %v", did, l, r, whole, err, want)
			}
			if w := filterDiff(want, DiffOptions{SameFrom: math.MaxUint64}); serr != nil || !reflect.DeepEqual(skip, w) {
				t.Fatalf("after %v: both trees read whole, but the diff %d -> %d is %v, %v; want %v", did, l, r, skip, serr, w)
			}
		}
	}
	return a
}

// naiveDiff compares two devices' mapping lists block by block.
func naiveDiff(left, right []Mapping) []Range {
	var out []Range
	add := func(k Kind, b uint64) {
		if n := len(out); n > 0 && out[n-1].Kind == k && out[n-1].End() == b {
			out[n-1].Length++
			return
		}
		out = append(out, Range{Kind: k, Begin: b, Length: 1})
	}
	i, j := 0, 0
	for i < len(left) || j < len(right) {
		switch {
		case j == len(right) || i < len(left) && left[i].Block < right[j].Block:
			add(LeftOnly, left[i].Block)
			i++
		case i == len(left) || right[j].Block < left[i].Block:
			add(RightOnly, right[j].Block)
			j++
		default:
			if left[i].DataBlock == right[j].DataBlock {
				add(Same, left[i].Block)
			} else {
				add(Different, left[i].Block)
			}
			i++
			j++
		}
	}
	return out
}

// fuzzImages are the images FuzzReader damages: the kernel's, and one
// thin_restore wrote (three levels, no sharing), made once.
var fuzzImages struct {
	once     sync.Once
	imgs     [][]byte
	all, int [][]uint64
	ids      [][]uint64
}

func loadFuzzImages(t testing.TB) {
	fuzzImages.once.Do(func() {
		for _, name := range kernelImages {
			fuzzImages.imgs = append(fuzzImages.imgs, kernelImage(t, name))
		}
		for _, img := range fuzzImages.imgs {
			im := newImage(img)
			all, internal := nodes(t, im)
			fuzzImages.all = append(fuzzImages.all, all)
			fuzzImages.int = append(fuzzImages.int, internal)
			m, err := NewReader(im, im.size(), "image", Options{Snapshot: true})
			if err != nil {
				t.Fatal(err)
			}
			var ids []uint64
			if err := m.Devices(context.Background(), func(d DeviceDetails) error { ids = append(ids, d.ID); return nil }); err != nil {
				t.Fatal(err)
			}
			// And a device that is not there.
			fuzzImages.ids = append(fuzzImages.ids, append(ids, 1<<20))
		}
	})
}

// FuzzReader damages kernel-written metadata images with programs of
// changes (see damage) and checks that the reader never panics or hangs
// and answers with ErrMetadata or correctly (checkDamaged).
func FuzzReader(f *testing.F) {
	for i := range kernelImages {
		f.Add(uint8(i), []byte{})
		for op := byte(0); op < 10; op++ {
			f.Add(uint8(i), []byte{op, 3, 0, 0, 0x55, 0x12, 0x9a, 0x4f})
			f.Add(uint8(i), []byte{op, 7, 1, 0, 2, 0, 0, 0x80, op + 1, 9, 0, 0, 0xff, 0xff, 0xff, 0x01})
		}
	}
	f.Fuzz(func(t *testing.T, which uint8, prog []byte) {
		loadFuzzImages(t)
		if len(prog) > 8*16 {
			prog = prog[:8*16]
		}
		i := int(which) % len(fuzzImages.imgs)
		im := newImage(fuzzImages.imgs[i])
		did := damage(im, fuzzImages.all[i], fuzzImages.int[i], prog)
		checkDamaged(t, im, fuzzImages.ids[i], did)
	})
}

// TestDamaged runs many random damage programs (FuzzReader's check
// without the fuzzer).
func TestDamaged(t *testing.T) {
	loadFuzzImages(t)
	r := testRand(t)
	n := 600
	if testing.Short() {
		n = 100
	}
	for k := 0; k < n; k++ {
		i := r.IntN(len(fuzzImages.imgs))
		prog := make([]byte, 8*(1+r.IntN(3)))
		for j := range prog {
			prog[j] = byte(r.Uint32())
		}
		im := newImage(fuzzImages.imgs[i])
		did := damage(im, fuzzImages.all[i], fuzzImages.int[i], prog)
		checkDamaged(t, im, fuzzImages.ids[i], did)
	}
}

// TestDamagedAgainstTools damages kernel images at random, writes each
// out and asks thin_check -m whether it is valid and thin_delta -m and
// thin_dump -m what it holds: wherever the reader and a tool both answer,
// the answers must be the same. The reader may refuse what thin_check
// accepts (it checks more: the kernel's limits on the superblock's
// fields, no empty nodes below a root, a held copy that agrees with the
// live superblock); those refusals are counted and logged.
func TestDamagedAgainstTools(t *testing.T) {
	needTools(t, "thin_check", "thin_delta", "thin_dump")
	loadFuzzImages(t)
	r := testRand(t)
	n := 20
	if testing.Short() {
		n = 6
	}
	var valid, invalid, answered, stricter, compared int
	for k := 0; k < n; k++ {
		i := r.IntN(len(fuzzImages.imgs))
		prog := make([]byte, 8)
		for j := range prog {
			prog[j] = byte(r.Uint32())
		}
		im := newImage(fuzzImages.imgs[i])
		did := damage(im, fuzzImages.all[i], fuzzImages.int[i], prog)
		ids := fuzzImages.ids[i][:len(fuzzImages.ids[i])-1]
		got := checkDamaged(t, im, ids, did)
		path := writeImage(t, im.bytes())
		ok := exec.Command("thin_check", "-m", path).Run() == nil
		if ok {
			valid++
		} else {
			invalid++
		}
		refusedValid := ""
		for _, id := range ids {
			want, err := toolDump(path, true, id)
			switch {
			case got.mapErr[id] != nil:
				if ok && err == nil {
					refusedValid = got.mapErr[id].Error()
				}
			case err == nil:
				compared++
				answered++
				if !reflect.DeepEqual(got.maps[id], want) && (len(want) > 0 || len(got.maps[id]) > 0) {
					t.Fatalf("after %v (thin_check accepts: %v): mappings of %d differ from thin_dump's", did, ok, id)
				}
			default:
				answered++
			}
		}
		for _, l := range ids {
			for _, rt := range ids {
				if l == rt || r.IntN(3) != 0 {
					continue
				}
				want, err := toolDelta(path, true, l, rt)
				gotD, gotErr := got.diffs[[2]uint64{l, rt}], got.diffErr[[2]uint64{l, rt}]
				switch {
				case gotErr != nil:
					if ok && err == nil {
						refusedValid = gotErr.Error()
					}
				case err == nil:
					compared++
					if !reflect.DeepEqual(gotD, want) {
						t.Fatalf("after %v (thin_check accepts: %v): diff %d %d: %v, thin_delta %v", did, ok, l, rt, gotD, want)
					}
				}
			}
		}
		if refusedValid != "" {
			stricter++
			t.Logf("refused where thin_check and the tools accept, after %v: %s", did, refusedValid)
		}
	}
	t.Logf("%d damaged images: thin_check accepts %d, refuses %d; the reader refused %d that thin_check accepts; %d answers compared with the tools",
		n, valid, invalid, stricter, compared)
	if compared == 0 {
		t.Error("no answer compared")
	}
}
