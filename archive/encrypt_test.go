package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/zeebo/blake3"
)

func testKey(t testing.TB, seed byte) *Key {
	t.Helper()
	master := bytes.Repeat([]byte{seed}, MasterKeySize)
	k, err := NewKey(master)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// buildKey writes a delta file of src with header h under key k and
// returns its bytes and trailer.
func buildKey(t testing.TB, k *Key, h *Header, src Source, opts SendOptions) ([]byte, Trailer) {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf, WithKey(k))
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := Send(context.Background(), w, src, opts); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.Trailer()
}

// encChain is randomChain's states written as files encrypted under k,
// with their file tags.
type encChain struct {
	*testChain
	tags []Digest
}

func newEncChain(t testing.TB, r *rand.Rand, k *Key, n int) *encChain {
	t.Helper()
	plain := randomChain(t, r, n, 4096)
	c := &encChain{testChain: &testChain{states: plain.states}}
	for i := range plain.states {
		h := *plain.hdrs[i]
		var src Source = fullSource(plain.states[i])
		if i > 0 {
			src = diffSource(plain.states[i-1], plain.states[i], 4096)
		}
		b, tr := buildKey(t, k, &h, src, SendOptions{ChunkSize: []int{4096, 12288, 64 << 10}[r.Intn(3)]})
		c.hdrs = append(c.hdrs, &h)
		c.files = append(c.files, b)
		c.tags = append(c.tags, tr.Tag)
	}
	return c
}

// applyKey applies file onto vol as applyTo does, reading it with opts,
// and checks that every byte Scan hands over is a byte of want (the state
// the file leads to): nothing unverified is ever returned.
func applyKey(t *testing.T, file, vol, want []byte, opts ...Option) ([]byte, int64, error) {
	t.Helper()
	rd := NewReader(bytes.NewReader(file), opts...)
	h, err := rd.Header()
	if err != nil {
		return vol, 0, err
	}
	if int64(len(vol)) < h.VolumeSize {
		vol = append(vol, make([]byte, h.VolumeSize-int64(len(vol)))...)
	}
	vol = vol[:h.VolumeSize]
	var got int64
	err = Scan(context.Background(), rd, ScanOptions{Workers: 2}, func(rec *Record, data []byte) error {
		if rec.Kind == KindZero {
			clear(vol[rec.Offset:rec.End()])
			return nil
		}
		if want != nil && !bytes.Equal(data, want[rec.Offset:rec.End()]) {
			t.Fatalf("record %d: Scan handed over data that is not the volume's", rec.Num)
		}
		copy(vol[rec.Offset:], data)
		got++
		return nil
	})
	return vol, got, err
}

// TestEncryptedRoundTrip: a chain of encrypted files reads back, file by
// file, as a chain, at random offsets, with its digest checkable without
// the key, and stores no byte of the volume's data in the clear.
func TestEncryptedRoundTrip(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 1)
	c := newEncChain(t, r, k, 4)
	var vol []byte
	for i, f := range c.files {
		var err error
		if vol, _, err = applyKey(t, f, vol, c.states[i], WithKey(k)); err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
		if !bytes.Equal(vol, c.states[i]) {
			t.Fatalf("file %d does not give its state", i)
		}
		d, err := EndDigest(bytes.NewReader(f), int64(len(f)))
		if err != nil {
			t.Fatal(err)
		}
		st, err := CheckStructure(bytes.NewReader(f))
		if err != nil {
			t.Fatalf("file %d: CheckStructure: %v", i, err)
		}
		if st.Digest != d || k.FileTag(d) != c.tags[i] || st.Contents || st.Header.KeyID != k.ID() {
			t.Fatalf("file %d: structure %+v, END digest %x, tag %x", i, st, d, c.tags[i])
		}
		// No run of the volume's non-zero data is in the file.
		for off := 0; off+64 <= len(c.states[i]); off += 4096 {
			if s := c.states[i][off : off+64]; !isZero(s) && bytes.Contains(f, s) {
				t.Fatalf("file %d holds volume bytes at %d in the clear", i, off)
			}
		}
		if !bytes.Contains(f, []byte(c.hdrs[i].VolumeName)) {
			t.Fatalf("file %d does not name its volume in the clear", i)
		}
	}

	inputs := c.open(t, 0, len(c.files))
	ch, err := OpenChain(inputs, WithKey(k))
	if err != nil {
		t.Fatal(err)
	}
	final := c.states[len(c.states)-1]
	out := make([]byte, len(final))
	if err := ch.Scan(context.Background(), ScanOptions{}, func(seg Segment, data []byte) error {
		if seg.Kind == KindData {
			copy(out[seg.Offset:], data)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, final) {
		t.Fatal("the chain's Scan does not give the last state")
	}

	s, err := OpenSnapshot(context.Background(), c.open(t, 0, len(c.files)), SnapshotOptions{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 50 {
		off := r.Int63n(int64(len(final)))
		readCheck(t, "encrypted snapshot", s, final, off, 1+r.Int63n(int64(len(final))-off))
	}

	// The block digests of the chain are keyed: an image of the last state
	// compared with them differs nowhere.
	cd, err := OpenChainDigests(c.open(t, 0, len(c.files)), WithKey(k))
	if err != nil {
		t.Fatal(err)
	}
	img := openBytes(t, filepath.Join(t.TempDir(), "img"), final)
	ds, err := NewDigestSource(img, int64(len(final)), 4096, cd, DigestSourceOptions{Key: k})
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close()
	for {
		e, err := ds.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Kind == KindData {
			t.Fatalf("the image differs from the chain's keyed digests at [%d, %d)", e.Offset, e.End())
		}
	}
}

// TestEncryptedKeys: a file is read only with its key; the errors say
// which key is needed.
func TestEncryptedKeys(t *testing.T) {
	r := testRand(t)
	k, other := testKey(t, 1), testKey(t, 2)
	if k.ID() == other.ID() || k.ID().IsZero() {
		t.Fatal("key ids do not tell keys apart")
	}
	if _, err := NewKey(make([]byte, 16)); err == nil {
		t.Fatal("NewKey took a 16-byte master key")
	}
	vol := volume(r, 16, 0)
	f, _ := buildKey(t, k, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})
	plain := build(t, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})

	rd := NewReader(bytes.NewReader(f))
	h, err := rd.Header()
	if err != nil || !h.IsEncrypted() || h.KeyID != k.ID() {
		t.Fatalf("keyless Header = %+v, %v", h, err)
	}
	if _, err := rd.Next(); !errors.Is(err, ErrKeyRequired) || !strings.Contains(err.Error(), k.ID().String()) {
		t.Fatalf("keyless Next = %v, want ErrKeyRequired naming key %s", err, k.ID())
	}
	if _, _, err := applyKey(t, f, nil, vol, WithKey(other)); !errors.Is(err, ErrWrongKey) || !strings.Contains(err.Error(), k.ID().String()) {
		t.Fatalf("another key: %v, want ErrWrongKey naming %s", err, k.ID())
	}
	if _, _, err := applyKey(t, plain, nil, vol, WithKey(k)); !errors.Is(err, ErrAuth) {
		t.Fatalf("a file that is not encrypted read with a key: %v, want ErrAuth", err)
	}
	if _, n, err := applyKey(t, plain, nil, vol); err != nil || n == 0 {
		t.Fatalf("a file that is not encrypted read without a key: %v", err)
	}
	// A writer given an encrypted header but no key refuses it.
	eh := testHeader(int64(len(vol)))
	eh.Required |= FeatureEncrypted
	if err := NewWriter(io.Discard).WriteHeader(eh); err == nil {
		t.Fatal("WriteHeader wrote an encrypted header without a key")
	}
	// An encrypted incremental gets the parent tag of its parent's
	// snapshot from the writer, whatever the caller put there; a full
	// and a snapback file get none.
	ih := testHeader(int64(len(vol)))
	parent := testHeader(int64(len(vol)) - 4096)
	parent.Snapshot = Snapshot{ID: DeriveID("test", "p"), Name: "p", Time: ih.Snapshot.Time.Add(-3600e9)}
	ih.Parent, ih.ParentSize, ih.ParentTag = parent.Snapshot, parent.VolumeSize, Digest{1}
	sb := testHeader(int64(len(vol)))
	sb.Optional |= FeatureSnapback
	sb.Parent, sb.ParentSize, sb.ParentTag = parent.Snapshot, parent.VolumeSize, Digest{1}
	fh := testHeader(int64(len(vol)))
	fh.ParentTag = Digest{1}
	for _, tc := range []struct {
		name string
		h    *Header
		want Digest
	}{{"an incremental", ih, k.ParentTag(parent)}, {"a snapback file", sb, Digest{}}, {"a full", fh, Digest{}}} {
		w := NewWriter(io.Discard, WithKey(k))
		if err := w.WriteHeader(tc.h); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := w.Header().ParentTag; got != tc.want || (tc.want == Digest{}) != (got == Digest{}) {
			t.Fatalf("%s: parent tag %x, want %x", tc.name, got, tc.want)
		}
	}
	if k.ParentTag(parent) == other.ParentTag(parent) {
		t.Fatal("two keys give one parent tag")
	}
}

// layoutOf returns where the parts of a delta file are: the header's end,
// and each record's start, payload start and end.
type recSpan struct {
	start, metaEnd, tagEnd, end int64
	typ                         byte
}

func layoutOf(t *testing.T, b []byte) (hdrEnd int64, recs []recSpan) {
	t.Helper()
	le := binary.LittleEndian
	pos := int64(fixedHeaderLen) + int64(le.Uint32(b[10:])) + DigestSize
	hdrEnd = pos
	for pos < int64(len(b)) {
		ml, pl := int64(le.Uint32(b[pos+4:])), int64(le.Uint32(b[pos+8:]))
		s := recSpan{start: pos, metaEnd: pos + rhdrLen + ml, typ: b[pos]}
		s.tagEnd = s.metaEnd + DigestSize
		s.end = s.tagEnd + pl
		recs = append(recs, s)
		pos = s.end
	}
	return hdrEnd, recs
}

// inLengths reports whether byte i is in a record header's lengths.
func inLengths(recs []recSpan, i int64) bool {
	for _, s := range recs {
		if i >= s.start+4 && i < s.start+rhdrLen {
			return true
		}
	}
	return false
}

// rechain recomputes every digest of the file's unkeyed chain, as anyone
// can: what a forger without the key makes of an altered file.
func rechain(t *testing.T, b []byte) []byte {
	t.Helper()
	b = bytes.Clone(b)
	hdrEnd, recs := layoutOf(t, b)
	chain := Digest(blake3.Sum256(b[:hdrEnd-DigestSize]))
	copy(b[hdrEnd-DigestSize:], chain[:])
	for _, s := range recs {
		if s.typ == typeEnd && s.metaEnd-s.start-rhdrLen > DigestSize {
			copy(b[s.start+rhdrLen:], chain[:]) // END's clear link
		}
		chain = chainNext(blake3.New(), chain, b[s.start:s.start+rhdrLen], b[s.start+rhdrLen:s.metaEnd])
		copy(b[s.metaEnd:], chain[:])
	}
	return b
}

// TestEncryptedTamper is the tamper matrix without the key: every byte of
// an encrypted file flipped, with and without the unkeyed chain mended
// after it, records swapped with another file's, truncation anywhere,
// bytes appended, the key id changed. Each is refused with its error, and
// no byte of a record that fails is handed over.
func TestEncryptedTamper(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 1)
	vol := volume(r, 12, 100)
	vol[0] = 1 // a DATA record first
	h := testHeader(int64(len(vol)))
	f, _ := buildKey(t, k, h, fullSource(vol), SendOptions{ChunkSize: 8192})
	hdrEnd, recs := layoutOf(t, f)
	check := func(what string, b []byte, want ...error) {
		t.Helper()
		_, _, err := applyKey(t, b, nil, vol, WithKey(k))
		for _, w := range want {
			if errors.Is(err, w) {
				return
			}
		}
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	check("the file as written", f, nil)

	// Every byte flipped. The keyless chain catches all but payloads, the
	// AEAD those; the magic and version are told apart as before.
	for i := range f {
		b := bytes.Clone(f)
		b[i] ^= 0x40
		what := fmt.Sprintf("byte %d flipped", i)
		switch {
		case i < 8:
			check(what, b, ErrHeader)
		case i < 10:
			check(what, b, ErrVersion)
		case i < fixedHeaderLen:
			check(what, b, ErrHeader, ErrTruncated, ErrChecksum)
		case int64(i) < hdrEnd:
			check(what, b, ErrChecksum)
		default:
			for _, s := range recs {
				if int64(i) >= s.start && int64(i) < s.end {
					switch {
					case int64(i) >= s.tagEnd:
						check(what+" (payload)", b, ErrAuth)
					case int64(i) >= s.start+rhdrLen:
						check(what+" (metadata or tag)", b, ErrChecksum)
					default: // the lengths may now run past the end
						check(what+" (record header)", b, ErrChecksum, ErrHeader, ErrTruncated)
					}
				}
			}
		}
	}

	// A forger mends the unkeyed chain after each change: the key catches
	// every one.
	for i := int64(fixedHeaderLen); i < int64(len(f)); i++ {
		if inLengths(recs, i) {
			continue // framing, found without the key above
		}
		b := bytes.Clone(f)
		b[i] ^= 0x01
		b = rechain(t, b)
		if bytes.Equal(b, f) {
			continue // a chain digest, mended back
		}
		what := fmt.Sprintf("byte %d flipped, chain mended", i)
		if i < hdrEnd {
			// The MAC fails; or the fields no longer parse; or the
			// feature bits now say "not encrypted" (a downgrade, refused
			// under a key) or name a feature unknown.
			check(what, b, ErrWrongKey, ErrHeader, ErrAuth, ErrVersion)
			continue
		}
		check(what, b, ErrAuth, ErrHeader)
	}

	// The ENCRYPTED bit cleared (a downgrade), the chain mended: under a
	// key, a file that is not encrypted is refused.
	b0 := bytes.Clone(f)
	b0[fixedHeaderLen] &^= byte(FeatureEncrypted)
	check("ENCRYPTED cleared", rechain(t, b0), ErrAuth)

	// The key id changed (and the chain mended): the header names another
	// key, which the reader's is not.
	b := bytes.Clone(f)
	idAt := hdrEnd - DigestSize - headerMACLen - encSectionLen + 4
	b[idAt] ^= 0xff
	check("key id changed", rechain(t, b), ErrWrongKey)

	// Records swapped with those of another file of the same volume and
	// key, at the same places (same lengths: same data).
	g, _ := buildKey(t, k, h, fullSource(vol), SendOptions{ChunkSize: 8192})
	_, grecs := layoutOf(t, g)
	for j, s := range recs {
		b := bytes.Clone(f)
		gs := grecs[j]
		if gs.end-gs.start != s.end-s.start {
			t.Fatal("the two files differ in layout")
		}
		copy(b[s.start:s.end], g[gs.start:gs.end])
		check(fmt.Sprintf("record %d of another file", j+1), rechain(t, b), ErrAuth)
	}
	// Two records of the file swapped where they have the same length.
	for i := 0; i+1 < len(recs)-1; i++ {
		a, c := recs[i], recs[i+1]
		if a.end-a.start != c.end-c.start {
			continue
		}
		b := bytes.Clone(f)
		copy(b[a.start:a.end], f[c.start:c.end])
		copy(b[c.start:c.end], f[a.start:a.end])
		check(fmt.Sprintf("records %d and %d swapped", i+1, i+2), rechain(t, b), ErrAuth, ErrHeader)
	}

	// Truncated anywhere: at a record boundary, inside a record, inside
	// the END. Then re-ended by copying the END record and mending it.
	for n := hdrEnd; n < int64(len(f)); n++ {
		check(fmt.Sprintf("truncated to %d bytes", n), f[:n], ErrTruncated)
	}
	end := recs[len(recs)-1]
	for j := 1; j < len(recs)-1; j++ {
		b := append(bytes.Clone(f[:recs[j].start]), f[end.start:]...)
		binary.LittleEndian.PutUint64(b[recs[j].start+rhdrLen+DigestSize:], uint64(j))
		check(fmt.Sprintf("cut after record %d and re-ended", j), rechain(t, b), ErrAuth)
	}
	check("a byte appended", append(bytes.Clone(f), 0), ErrTrailingData)
	check("the file appended to itself", append(bytes.Clone(f), f...), ErrTrailingData)
}

// TestEncryptedNoPayloadBeforeAuth: the Reader hands over a record's
// payload only as stored (sealed); the data comes from Decode, which
// authenticates first and returns nothing of a payload that fails.
func TestEncryptedNoPayloadBeforeAuth(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 3)
	vol := volume(r, 8, 0)
	for i := range vol {
		vol[i] |= 1 // no zero blocks: one DATA record of raw-ish data
	}
	f, _ := buildKey(t, k, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})
	_, recs := layoutOf(t, f)
	b := bytes.Clone(f)
	b[recs[0].end-1] ^= 1 // the last byte of the first payload (its AEAD tag)
	rd := NewReader(bytes.NewReader(b), WithKey(k))
	rec, err := rd.Next()
	if err != nil {
		t.Fatal(err)
	}
	p, err := rd.ReadPayload(nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(p, vol[:64]) {
		t.Fatal("ReadPayload returned data in the clear")
	}
	dec := NewDecoder()
	defer dec.Close()
	data, err := dec.Decode(nil, rec, p)
	if !errors.Is(err, ErrAuth) || data != nil {
		t.Fatalf("Decode of a tampered payload = %d bytes, %v; want none and ErrAuth", len(data), err)
	}
	if _, err := OpenPayload(rec, bytes.Clone(f[recs[0].tagEnd:recs[0].end])); err != nil {
		t.Fatalf("OpenPayload of the untouched payload: %v", err)
	}
}

// TestEncryptedChainBinding: a chain read with the key takes each
// incremental only after a file of the snapshot it was made from, of its
// volume, under the key: any such file (the one first written, one
// written again, an older one) gives the same state, and another
// volume's file, a snapback file, a file of another key, a plain file or
// a header altered to claim the parent's identity is refused when the
// chain is opened, before a record is read.
func TestEncryptedChainBinding(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 1)
	c := newEncChain(t, r, k, 3)
	dir := t.TempDir()
	open := func(name string, b []byte) ChainInput {
		return ChainInput{Name: name, File: openBytes(t, filepath.Join(dir, name), b)}
	}
	// read opens files as a chain and returns the state it leads to.
	read := func(files ...ChainInput) ([]byte, error) {
		ch, err := OpenChain(files, WithKey(k))
		if err != nil {
			return nil, err
		}
		vol := make([]byte, ch.Header().VolumeSize)
		err = ch.Scan(context.Background(), ScanOptions{}, func(seg Segment, data []byte) error {
			if seg.Kind == KindData {
				copy(vol[seg.Offset:], data)
			}
			return nil
		})
		return vol, err
	}
	if got, err := read(open("0", c.files[0]), open("1", c.files[1]), open("2", c.files[2])); err != nil || !bytes.Equal(got, c.states[2]) {
		t.Fatalf("the chain as written: %v", err)
	}

	// Other files of the same snapshots, under the key: the parent's
	// written again (another salt, so another file tag), and an older
	// file of snapshot 1 (the same incremental written earlier). They
	// hold the same states, so the chain holds and reads the same.
	h0 := *c.hdrs[0]
	again, _ := buildKey(t, k, &h0, fullSource(c.states[0]), SendOptions{ChunkSize: 8192})
	h1 := *c.hdrs[1]
	older, _ := buildKey(t, k, &h1, diffSource(c.states[0], c.states[1], 4096), SendOptions{})
	if bytes.Equal(again, c.files[0]) || bytes.Equal(older, c.files[1]) {
		t.Fatal("a file written again is the same file")
	}
	for name, files := range map[string][]ChainInput{
		"the full written again": {open("again", again), open("1", c.files[1]), open("2", c.files[2])},
		"an older file of 1":     {open("0", c.files[0]), open("older", older), open("2", c.files[2])},
	} {
		if got, err := read(files...); err != nil || !bytes.Equal(got, c.states[2]) {
			t.Fatalf("%s in the chain: %v", name, err)
		}
	}

	// Another volume whose files claim the same snapshot ids and sizes:
	// by its name, or by its UUID (which the chain rules compare only
	// when both files know it).
	hName, hUUID := *c.hdrs[0], *c.hdrs[0]
	hName.VolumeName = "vg0/vm2"
	hUUID.VolumeUUID = "" // unknown: the chain rules do not compare it
	otherData := volume(r, len(c.states[0])/4096, len(c.states[0])%4096)
	otherName, _ := buildKey(t, k, &hName, fullSource(otherData), SendOptions{})
	otherUUID, _ := buildKey(t, k, &hUUID, fullSource(otherData), SendOptions{})
	// A snapback file whose state is snapshot 0's (the state a target was
	// at before an apply): it holds only what that apply overwrote, and
	// stands for no snapshot.
	hSnap := *c.hdrs[0]
	hSnap.Optional |= FeatureSnapback
	hSnap.Parent, hSnap.ParentSize = Snapshot{ID: DeriveID("test", "post-apply")}, hSnap.VolumeSize
	snapback, _ := buildKey(t, k, &hSnap, fullSource(c.states[0]), SendOptions{})
	for name, parent := range map[string][]byte{"another volume's name": otherName, "another volume's uuid": otherUUID, "a snapback file": snapback} {
		_, err := OpenChain([]ChainInput{open(name, parent), open("1", c.files[1])}, WithKey(k))
		if !errors.Is(err, ErrParentTag) {
			t.Fatalf("parent %s: %v, want ErrParentTag", name, err)
		}
	}

	// Another volume's file altered without the key to claim the
	// parent's volume name, its header_tag computed again (anyone can):
	// its header MAC no longer verifies.
	crafted := bytes.Clone(otherName)
	hl := fixedHeaderLen + int(binary.LittleEndian.Uint32(crafted[10:]))
	at := bytes.Index(crafted[:hl], []byte("vg0/vm2"))
	if at < 0 {
		t.Fatal("the volume name is not in the header")
	}
	copy(crafted[at:], "vg0/vm1")
	tag := blake3.Sum256(crafted[:hl])
	copy(crafted[hl:], tag[:])
	if _, err := CheckStructure(bytes.NewReader(crafted[:hl+DigestSize])); errors.Is(err, ErrChecksum) {
		t.Fatalf("the crafted header's tag was not recomputed: %v", err)
	}
	if _, err := OpenChain([]ChainInput{open("crafted", crafted), open("1", c.files[1])}, WithKey(k)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("a parent header altered to claim the parent's volume: %v, want ErrWrongKey", err)
	}

	// A file of another key as the parent.
	k2 := testKey(t, 2)
	foreign, _ := buildKey(t, k2, &h0, fullSource(c.states[0]), SendOptions{})
	if _, err := OpenChain([]ChainInput{open("foreign", foreign), open("1", c.files[1])}, WithKey(k)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("a parent of another key: %v, want ErrWrongKey", err)
	}
	// A parent that is not encrypted.
	plain := build(t, &h0, fullSource(c.states[0]), SendOptions{})
	if _, err := OpenChain([]ChainInput{open("plain", plain), open("1", c.files[1])}, WithKey(k)); !errors.Is(err, ErrAuth) {
		t.Fatalf("a parent that is not encrypted: %v, want ErrAuth", err)
	}
	// A parent whose END was replaced with another file's of the same
	// snapshot: its header is genuine, so the chain opens, and its END
	// fails to authenticate when it is reached.
	b := bytes.Clone(again)
	_, recs := layoutOf(t, b)
	e := recs[len(recs)-1]
	_, orecs := layoutOf(t, c.files[0])
	oe := orecs[len(orecs)-1]
	b = append(b[:e.start], c.files[0][oe.start:oe.end]...)
	if _, err := read(open("forged end", b), open("1", c.files[1])); !errors.Is(err, ErrAuth) && !errors.Is(err, ErrChecksum) {
		t.Fatalf("a parent with another file's END: %v, want ErrAuth or ErrChecksum", err)
	}
}

// TestEncryptedResumeRecover: an encrypted snapback-style file is
// checkpointed, torn, recovered and continued under its key, and reads
// back whole.
func TestEncryptedResumeRecover(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 4)
	vol := volume(r, 16, 0)
	vol[0] = 1
	h := testHeader(int64(len(vol)))
	h.Parent.ID = DeriveID("test", "parent")
	h.ParentSize = h.VolumeSize
	h.Optional |= FeatureSnapback // a snapback's parent is no file: no tag
	half := int64(8 * 4096)
	send := func(w *Writer, from, to int64) {
		t.Helper()
		src := &memSource{data: vol, extents: []Extent{{Offset: from, Length: to - from, Kind: KindData}}}
		if err := Send(context.Background(), w, src, SendOptions{ChunkSize: 4096}); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	w := NewWriter(&buf, WithKey(k))
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	send(w, 0, half)
	end, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	durable := append(bytes.Clone(buf.Bytes()), end...)
	// The checkpoint is a complete file.
	if _, _, err := applyKey(t, durable, nil, nil, WithKey(k)); err != nil {
		t.Fatalf("checkpoint: %v", err)
	}

	// Resume it and write the rest.
	dir := t.TempDir()
	name := filepath.Join(dir, "snapback.tbk")
	if err := os.WriteFile(name, durable, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ResumeWriter(bytes.NewReader(durable), io.Discard); !errors.Is(err, ErrKeyRequired) {
		t.Fatalf("ResumeWriter without the key: %v, want ErrKeyRequired", err)
	}
	rf, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	rw, err := ResumeWriter(rf, rf, WithKey(k))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rf.Seek(rw.Offset(), io.SeekStart); err != nil {
		t.Fatal(err)
	}
	send(rw, half, int64(len(vol)))
	if err := rw.Close(); err != nil {
		t.Fatal(err)
	}
	whole := readFile(t, name)
	got, _, err := applyKey(t, whole, nil, vol, WithKey(k))
	if err != nil || !bytes.Equal(got, vol) {
		t.Fatalf("resumed file: %v", err)
	}

	// Torn: the tail of the checkpoint's END lost, then recovered.
	torn := durable[:len(durable)-10]
	rcw, isTorn, err := RecoverWriter(bytes.NewReader(torn), io.Discard, WithKey(k))
	if err != nil || !isTorn || rcw.Covered() != half {
		t.Fatalf("RecoverWriter = torn %v, covered %d, %v", isTorn, rcw.Covered(), err)
	}
	tail, err := rcw.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	fixed := append(bytes.Clone(torn[:rcw.Offset()]), tail...)
	if !bytes.Equal(fixed, durable) {
		t.Fatal("the recovered checkpoint is not the one written")
	}
	// A torn page over the whole END (longer than a plain file's END):
	// all its bytes there, one of them garbled.
	garbled := bytes.Clone(durable)
	garbled[len(garbled)-sealedEndLen+rhdrLen+endClearLen+3] ^= 1
	tf := filepath.Join(dir, "garbled.tbk")
	if err := os.WriteFile(tf, garbled, 0o600); err != nil {
		t.Fatal(err)
	}
	gf, err := os.Open(tf)
	if err != nil {
		t.Fatal(err)
	}
	defer gf.Close()
	rcw, isTorn, err = RecoverWriter(gf, io.Discard, WithKey(k))
	if err != nil || !isTorn || rcw.Offset() != int64(len(durable)-sealedEndLen) {
		t.Fatalf("RecoverWriter of a garbled END = %v, %v; want torn at %d", isTorn, err, len(durable)-sealedEndLen)
	}
}

// TestEncryptedReencrypt: a chain's records copied into a new file under a
// new salt (what a merge does) with OpenPayload, and the chain's final
// state sent again under another key.
func TestEncryptedReencrypt(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 1)
	c := newEncChain(t, r, k, 2)
	rd := NewReader(bytes.NewReader(c.files[0]), WithKey(k))
	h, err := rd.Header()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := NewWriter(&out, WithKey(k))
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Kind == KindData {
			p, err := rd.ReadPayload(nil)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Num%2 == 0 {
				if rec.Payload, err = OpenPayload(rec, p); err != nil {
					t.Fatal(err)
				}
			} else {
				// Decoded, as a merge does: the opened payload stays.
				dec := NewDecoder()
				_, err := dec.Decode(nil, rec, p)
				dec.Close()
				if err != nil {
					t.Fatal(err)
				}
				rec.Payload = p[:rec.EncodedLen()]
			}
		}
		if err := w.WriteRecord(rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	copied := out.Bytes()
	if bytes.Equal(copied, c.files[0]) {
		t.Fatal("the copy has the same bytes: the salt was reused")
	}
	if got, _, err := applyKey(t, copied, nil, c.states[0], WithKey(k)); err != nil || !bytes.Equal(got, c.states[0]) {
		t.Fatalf("copied file: %v", err)
	}

	ch, err := OpenChain(c.open(t, 0, 2), WithKey(k))
	if err != nil {
		t.Fatal(err)
	}
	final := make([]byte, ch.Header().VolumeSize)
	if err := ch.Scan(context.Background(), ScanOptions{}, func(seg Segment, data []byte) error {
		copy(final[seg.Offset:], data)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	k2 := testKey(t, 9)
	mh := *c.hdrs[1]
	mh.Parent, mh.ParentSize = Snapshot{}, 0
	merged, _ := buildKey(t, k2, &mh, fullSource(final), SendOptions{})
	if got, _, err := applyKey(t, merged, nil, c.states[1], WithKey(k2)); err != nil || !bytes.Equal(got, c.states[1]) {
		t.Fatalf("merged file under another key: %v", err)
	}
}

// TestCheckStructure: without the key, the structure and the file digest
// are checked and damage to them found; a payload's contents are not (the
// Structure says so).
func TestCheckStructure(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 1)
	vol := volume(r, 12, 0)
	vol[0] = 1
	f, tr := buildKey(t, k, testHeader(int64(len(vol))), fullSource(vol), SendOptions{ChunkSize: 8192})
	st, err := CheckStructure(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	_, recs := layoutOf(t, f)
	var data int64
	for _, s := range recs {
		if s.typ == typeData {
			data++
		}
	}
	if st.Digest != tr.Digest || st.Records != int64(len(recs)-1) || st.DataRecords != data || st.PayloadBytes != tr.PayloadBytes || st.Contents {
		t.Fatalf("structure %+v, want digest %x, %d records, %d DATA, %d payload bytes", st, tr.Digest, len(recs)-1, data, tr.PayloadBytes)
	}
	for _, c := range []struct {
		what string
		b    []byte
		want error
	}{
		{"truncated", f[:len(f)-1], ErrTruncated},
		{"appended", append(bytes.Clone(f), 1), ErrTrailingData},
		{"metadata flipped", flip(f, recs[0].start+rhdrLen), ErrChecksum},
	} {
		if _, err := CheckStructure(bytes.NewReader(c.b)); !errors.Is(err, c.want) {
			t.Fatalf("%s: %v, want %v", c.what, err, c.want)
		}
	}
	// Any byte flipped outside the payloads, or any cut, is found.
	hdrEnd, _ := layoutOf(t, f)
	for i := int64(0); i < int64(len(f)); i++ {
		inPayload := false
		for _, s := range recs {
			inPayload = inPayload || i >= s.tagEnd && i < s.end
		}
		if _, err := CheckStructure(bytes.NewReader(f[:i])); err == nil {
			t.Fatalf("cut to %d bytes: no error", i)
		}
		if inPayload {
			continue
		}
		if _, err := CheckStructure(bytes.NewReader(flip(f, i))); err == nil {
			t.Fatalf("byte %d flipped (header ends at %d): no error", i, hdrEnd)
		}
	}
	// A flipped payload is beyond it: the key finds it.
	b := flip(f, recs[0].tagEnd)
	if _, err := CheckStructure(bytes.NewReader(b)); err != nil {
		t.Fatalf("CheckStructure checked a payload: %v", err)
	}
	// A file that is not encrypted has its records' metadata checked.
	plain := build(t, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})
	if st, err := CheckStructure(bytes.NewReader(plain)); err != nil || !st.Contents || st.DataRecords == 0 {
		t.Fatalf("plain file: %+v, %v", st, err)
	}
}

func flip(b []byte, i int64) []byte {
	b = bytes.Clone(b)
	b[i] ^= 0x10
	return b
}

// FuzzEncryptedHeader feeds altered encrypted headers to the Reader, with
// and without the key: it never panics, returns only *FormatErrors, and a
// header it accepts under the key is refused with any byte changed.
func FuzzEncryptedHeader(f *testing.F) {
	k := testKey(f, 1)
	vol := bytes.Repeat([]byte("thinback"), 4096)
	full, _ := buildKey(f, k, testHeader(int64(len(vol))), fullSource(vol), SendOptions{})
	headerOf := func(b []byte) []byte {
		return b[:fixedHeaderLen+int(binary.LittleEndian.Uint32(b[10:]))+DigestSize]
	}
	ih := testHeader(int64(len(vol)))
	ih.Parent, ih.ParentSize = Snapshot{ID: DeriveID("test", "p"), Name: "p"}, ih.VolumeSize
	incr, _ := buildKey(f, k, ih, fullSource(vol), SendOptions{})
	f.Add(headerOf(full))
	f.Add(full)
	f.Add(headerOf(incr))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, opts := range [][]Option{nil, {WithKey(k)}} {
			rd := NewReader(bytes.NewReader(b), opts...)
			h, err := rd.Header()
			if err != nil {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("header error %v is not a *FormatError", err)
				}
				continue
			}
			if opts != nil && h.IsEncrypted() {
				// Every byte of a header accepted under the key counts:
				// any one changed, it is refused.
				hb := headerOf(b)
				for i := range hb {
					c := bytes.Clone(hb)
					c[i] ^= 0x01
					if _, err := NewReader(bytes.NewReader(c), WithKey(k)).Header(); err == nil {
						t.Fatalf("header byte %d changed, the header is still accepted under the key", i)
					}
				}
			}
			for {
				if _, err := rd.Next(); err != nil {
					break
				}
			}
		}
	})
}

// TestGoldenEncrypted reads the encrypted golden files, written by an
// earlier build under the master key of 32 bytes of 1: every derivation,
// nonce and associated data of docs/FORMAT.md "Encryption" must stay as it
// was for them to read. The salt is random, so -update writes new files
// rather than comparing bytes.
func TestGoldenEncrypted(t *testing.T) {
	k := testKey(t, 1)
	base, next := goldenVolumes()
	if *update {
		h := testHeader(int64(len(base)))
		full, _ := buildKey(t, k, h, fullSource(base), SendOptions{Workers: 1})
		hi := testHeader(int64(len(next)))
		hi.Snapshot = Snapshot{ID: DeriveID("test", "snap2"), Name: "vg0/vm1.snap2", Time: h.Snapshot.Time.Add(3600e9)}
		hi.Parent, hi.ParentSize = h.Snapshot, h.VolumeSize
		incr, _ := buildKey(t, k, hi, &memSource{data: next, extents: []Extent{{0, 4096, KindZero}, {3 * 4096, 4096, KindData}}}, SendOptions{Workers: 1})
		for name, b := range map[string][]byte{"encrypted-full.tbk": full, "encrypted-incr.tbk": incr} {
			if err := os.WriteFile(filepath.Join(goldenDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	full := readFile(t, filepath.Join(goldenDir, "encrypted-full.tbk"))
	incr := readFile(t, filepath.Join(goldenDir, "encrypted-incr.tbk"))
	vol, _, err := applyKey(t, full, nil, base, WithKey(k))
	if err != nil || !bytes.Equal(vol, base) {
		t.Fatalf("golden encrypted full: %v", err)
	}
	if vol, _, err = applyKey(t, incr, vol, next, WithKey(k)); err != nil || !bytes.Equal(vol, next) {
		t.Fatalf("golden encrypted incremental: %v", err)
	}
	dir := t.TempDir()
	if _, err := OpenChain([]ChainInput{
		{Name: "full", File: openBytes(t, filepath.Join(dir, "full"), full)},
		{Name: "incr", File: openBytes(t, filepath.Join(dir, "incr"), incr)},
	}, WithKey(k)); err != nil {
		t.Fatalf("golden encrypted chain: %v", err)
	}
	if _, _, err := applyKey(t, full, nil, base); !errors.Is(err, ErrKeyRequired) {
		t.Fatalf("golden encrypted full without the key: %v", err)
	}
}

// TestEncryptedLargestRecord: a DATA record of MaxDataLen that does not
// compress is stored raw and sealed, 16 bytes longer than the bound of a
// plain payload, and reads back.
func TestEncryptedLargestRecord(t *testing.T) {
	r := testRand(t)
	k := testKey(t, 5)
	vol := make([]byte, MaxDataLen)
	r.Read(vol)
	h := testHeader(int64(len(vol)))
	h.BlockSize = MaxBlockSize
	f, _ := buildKey(t, k, h, fullSource(vol), SendOptions{ChunkSize: MaxDataLen})
	if _, recs := layoutOf(t, f); recs[0].end-recs[0].tagEnd != MaxDataLen+aeadOverhead {
		t.Fatalf("the record's payload is %d bytes, want a sealed raw %d", recs[0].end-recs[0].tagEnd, MaxDataLen)
	}
	if got, _, err := applyKey(t, f, nil, vol, WithKey(k)); err != nil || !bytes.Equal(got, vol) {
		t.Fatalf("largest record: %v", err)
	}
	if _, err := CheckStructure(bytes.NewReader(f)); err != nil {
		t.Fatalf("CheckStructure of the largest record: %v", err)
	}
}
