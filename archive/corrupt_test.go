package archive

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/zeebo/blake3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/delta")

const goldenDir = "../testdata/delta"

// goldenVolume is a small volume whose delta files are the golden files: a
// compressible block, a random (raw) block, zeroes and a short last block.
func goldenVolumes() (base, next []byte) {
	r := rand.New(rand.NewSource(1))
	base = make([]byte, 6*4096+1000)
	copy(base, bytes.Repeat([]byte("thinback golden data "), 400))
	r.Read(base[4096 : 2*4096])
	r.Read(base[6*4096:])
	next = append([]byte(nil), base...)
	copy(next[3*4096:], bytes.Repeat([]byte("changed "), 512))
	clear(next[:4096])
	return base, next
}

func goldenFiles(t testing.TB) (full, incr []byte) {
	base, next := goldenVolumes()
	h := testHeader(int64(len(base)))
	full = build(t, h, fullSource(base), SendOptions{Workers: 1})
	hi := testHeader(int64(len(next)))
	hi.Snapshot = Snapshot{ID: DeriveID("test", "snap2"), Name: "vg0/vm1.snap2", Time: h.Snapshot.Time.Add(3600e9)}
	hi.Parent, hi.ParentSize = h.Snapshot, h.VolumeSize
	incr = build(t, hi, &memSource{data: next, extents: []Extent{{0, 4096, KindZero}, {3 * 4096, 4096, KindData}}}, SendOptions{Workers: 1})
	return full, incr
}

// TestGolden keeps testdata/delta in step with the writer (run with
// -update after a deliberate format change, and record it in FORMAT.md).
func TestGolden(t *testing.T) {
	full, incr := goldenFiles(t)
	files := map[string][]byte{"full.tbk": full, "incr.tbk": incr}
	if *update {
		if err := os.MkdirAll(goldenDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			if err := os.WriteFile(filepath.Join(goldenDir, name), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for name, b := range files {
		if got := readFile(t, filepath.Join(goldenDir, name)); !bytes.Equal(got, b) {
			t.Errorf("%s: the writer no longer produces the golden file: a format change? (see FORMAT.md; -update rewrites it)", name)
		}
	}
	// Files written by earlier builds must still apply.
	base, next := goldenVolumes()
	vol, err := applyTo(readFile(t, filepath.Join(goldenDir, "full.tbk")), nil)
	if err != nil || !bytes.Equal(vol, base) {
		t.Fatalf("golden full: %v", err)
	}
	vol, err = applyTo(readFile(t, filepath.Join(goldenDir, "incr.tbk")), vol)
	if err != nil || !bytes.Equal(vol, next) {
		t.Fatalf("golden incremental: %v", err)
	}
}

// span is a region of a file and the errors a change there may produce.
type span struct {
	name     string
	from, to int
	want     []error
}

// fileMap walks a valid file independently of Reader and names its regions.
func fileMap(t testing.TB, b []byte) []span {
	bodyLen := int(binary.LittleEndian.Uint32(b[10:]))
	hdrEnd := 14 + bodyLen + 32
	lengths := []error{ErrHeader, ErrChecksum, ErrTruncated}
	m := []span{
		{"magic", 0, 8, []error{ErrHeader}},
		{"version", 8, 10, []error{ErrVersion}},
		{"header_len", 10, 14, lengths},
		{"header body", 14, 14 + bodyLen, []error{ErrChecksum}},
		{"header tag", 14 + bodyLen, hdrEnd, []error{ErrChecksum}},
	}
	for pos, i := hdrEnd, 1; pos < len(b); i++ {
		metaLen := int(binary.LittleEndian.Uint32(b[pos+4:]))
		payLen := int(binary.LittleEndian.Uint32(b[pos+8:]))
		name := fmt.Sprintf("record %d (type %d)", i, b[pos])
		m = append(m,
			span{name + " type/flags/reserved", pos, pos + 4, []error{ErrChecksum}},
			span{name + " meta_len", pos + 4, pos + 8, lengths},
			span{name + " payload_len", pos + 8, pos + 12, []error{ErrChecksum, ErrHeader}},
			span{name + " meta", pos + 12, pos + 12 + metaLen, []error{ErrChecksum}},
			span{name + " tag", pos + 12 + metaLen, pos + 44 + metaLen, []error{ErrChecksum}})
		if payLen > 0 {
			m = append(m, span{name + " payload", pos + 44 + metaLen, pos + 44 + metaLen + payLen, []error{ErrChecksum}})
		}
		pos += 44 + metaLen + payLen
	}
	if last := m[len(m)-1]; last.to != len(b) {
		t.Fatalf("file map ends at %d, file at %d", last.to, len(b))
	}
	return m
}

// checkApply applies file onto a copy of start and checks that every byte
// it wrote is the byte of want: a corrupt file may stop an apply, never make
// it write something wrong.
func checkApply(t *testing.T, file, start, want []byte) error {
	t.Helper()
	rd := NewReader(bytes.NewReader(file))
	if _, err := rd.Header(); err != nil {
		return err
	}
	return Scan(context.Background(), rd, ScanOptions{Workers: 2}, func(rec *Record, data []byte) error {
		if rec.End() > int64(len(want)) {
			t.Fatalf("record [%d, %d) past the volume", rec.Offset, rec.End())
		}
		exp := want[rec.Offset:rec.End()]
		if rec.Kind == KindZero {
			data = make([]byte, rec.Length)
		}
		if !bytes.Equal(data, exp) {
			t.Fatalf("record %d [%d, %d) handed out data that differs from the volume", rec.Num, rec.Offset, rec.End())
		}
		return nil
	})
}

func isAny(err error, want []error) bool {
	for _, w := range want {
		if errors.Is(err, w) {
			return true
		}
	}
	return false
}

func TestCorruptBitFlips(t *testing.T) {
	base, next := goldenVolumes()
	full, incr := goldenFiles(t)
	for _, f := range []struct {
		name string
		file []byte
		want []byte
	}{{"full", full, base}, {"incr", incr, next}} {
		t.Run(f.name, func(t *testing.T) {
			for _, s := range fileMap(t, f.file) {
				for pos := s.from; pos < s.to; pos++ {
					bad := append([]byte(nil), f.file...)
					bad[pos] ^= 1 << (pos % 8)
					err := checkApply(t, bad, base, f.want)
					if !isAny(err, s.want) {
						t.Fatalf("flip at byte %d (%s): got %v, want one of %v", pos, s.name, err, s.want)
					}
					var fe *FormatError
					if !errors.As(err, &fe) {
						t.Fatalf("flip at byte %d (%s): %v is not a *FormatError", pos, s.name, err)
					}
				}
			}
		})
	}
}

func TestCorruptTruncation(t *testing.T) {
	base, _ := goldenVolumes()
	full, _ := goldenFiles(t)
	for n := 0; n < len(full); n++ {
		err := checkApply(t, full[:n], nil, base)
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated to %d bytes: got %v, want ErrTruncated", n, err)
		}
		// The same through the structure-only path, which seeks over payloads.
		rd := NewReader(bytes.NewReader(full[:n]))
		for err = nil; err == nil; _, err = rd.Next() {
		}
		if !errors.Is(err, ErrTruncated) {
			t.Fatalf("truncated to %d bytes, read with seeks: got %v, want ErrTruncated", n, err)
		}
	}
}

// records returns the byte ranges of a file's records (END excluded).
func records(t testing.TB, file []byte) (hdrEnd int, recs [][2]int) {
	for _, s := range fileMap(t, file) {
		if s.name == "header tag" {
			hdrEnd = s.to
		}
	}
	pos := hdrEnd
	for pos < len(file) && file[pos] != typeEnd {
		metaLen := int(binary.LittleEndian.Uint32(file[pos+4:]))
		payLen := int(binary.LittleEndian.Uint32(file[pos+8:]))
		recs = append(recs, [2]int{pos, pos + 44 + metaLen + payLen})
		pos += 44 + metaLen + payLen
	}
	return hdrEnd, recs
}

func TestCorruptStructure(t *testing.T) {
	base, next := goldenVolumes()
	full, incr := goldenFiles(t)
	hdrEnd, recs := records(t, full)
	if len(recs) < 3 {
		t.Fatalf("golden full has %d records, the test needs 3", len(recs))
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	rec := func(f []byte, i int) []byte { _, r := records(t, f); return f[r[i][0]:r[i][1]] }
	end := full[recs[len(recs)-1][1]:]
	incrHdrEnd, _ := records(t, incr)

	// The same header, another snapshot: records of one spliced into the other.
	h2 := testHeader(int64(len(base)))
	h2.Snapshot.ID = DeriveID("test", "other")
	other := build(t, h2, fullSource(base), SendOptions{Workers: 1})
	_, orecs := records(t, other)

	for _, tc := range []struct {
		name   string
		file   []byte
		want   error
		record int64 // record number the error must name, 0: any
	}{
		{"empty", nil, ErrTruncated, 0},
		{"not a delta file", []byte("#!/bin/sh\necho hello, this is not a delta file\n"), ErrHeader, 0},
		{"text-mode mangled", cat([]byte("\x89TBK\n\x1a\n"), full[8:]), ErrHeader, 0},
		{"two files concatenated", cat(full, incr), ErrTrailingData, 0},
		{"one byte after END", cat(full, []byte{0}), ErrTrailingData, 0},
		{"records swapped", cat(full[:hdrEnd], full[recs[1][0]:recs[1][1]], full[recs[0][0]:recs[0][1]], full[recs[2][0]:]), ErrChecksum, 1},
		{"record dropped", cat(full[:recs[1][0]], full[recs[2][0]:]), ErrChecksum, 2},
		{"record duplicated", cat(full[:recs[1][1]], full[recs[1][0]:]), ErrChecksum, 3},
		{"spliced from another file", cat(full[:recs[1][0]], other[orecs[1][0]:]), ErrChecksum, 2},
		{"END from another file", cat(full[:recs[len(recs)-1][1]], rec(incr, 0)), ErrChecksum, int64(len(recs) + 1)},
		{"END missing", full[:len(full)-len(end)], ErrTruncated, 0},
		{"incremental records after a full header", cat(full[:hdrEnd], incr[incrHdrEnd:]), ErrChecksum, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkApply(t, tc.file, base, base)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("%v is not a *FormatError", err)
			}
			if tc.record != 0 && fe.Record != tc.record {
				t.Fatalf("error names record %d, want %d: %v", fe.Record, tc.record, err)
			}
		})
	}
	_ = next
}

// craft builds a file from a header body modified by mod and raw records,
// with valid digests throughout: what a newer or buggy writer would make.
func craft(t *testing.T, version uint16, h *Header, recs func(w *Writer)) []byte {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	recs(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if version != Version {
		binary.LittleEndian.PutUint16(b[8:], version)
	}
	return b
}

// rehead replaces the header of file by one with required features set,
// re-chaining every record so that only the feature bits are "wrong".
func withRequired(t *testing.T, h *Header, bits Feature) []byte {
	body := h.appendBody(nil)
	binary.LittleEndian.PutUint64(body[0:], uint64(bits))
	for len(body) < minHeaderBody {
		body = append(body, 0)
	}
	b := append([]byte(magic), 1, 0, 0, 0, 0, 0)
	binary.LittleEndian.PutUint32(b[10:], uint32(len(body)))
	b = append(b, body...)
	tag := blake3.Sum256(b)
	b = append(b, tag[:]...)
	var rh [rhdrLen]byte
	rh[0] = typeEnd
	binary.LittleEndian.PutUint32(rh[4:], endMetaLen)
	meta := make([]byte, endMetaLen)
	next := chainNext(blake3.New(), tag, rh[:], meta)
	b = append(b, rh[:]...)
	b = append(b, meta...)
	return append(b, next[:]...)
}

func TestVersionsAndFeatures(t *testing.T) {
	h := testHeader(0)
	plain := func(w *Writer) {}
	for _, tc := range []struct {
		name string
		file []byte
		want error
	}{
		{"future version", craft(t, 2, h, plain), ErrVersion},
		{"unknown required feature", withRequired(t, h, 1<<5), ErrVersion},
		{"unknown required record type", craft(t, 1, testHeader(0), func(w *Writer) { w.writeRaw(5, 0, nil, nil) }), ErrHeader},
		{"all-zero block stored as DATA", craft(t, 1, testHeader(4096), func(w *Writer) {
			d := zeroDigest(4096)
			meta := binary.LittleEndian.AppendUint64(nil, 0)
			meta = binary.LittleEndian.AppendUint32(meta, 4096)
			w.writeRaw(typeData, encRaw, append(meta, d[:]...), make([]byte, 4096))
			w.lay.add(KindData, 0, 4096)
		}), ErrHeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd := NewReader(bytes.NewReader(tc.file))
			var err error
			for err == nil {
				_, err = rd.Next()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	// Unknown optional records and optional features are skipped.
	h.Optional = 1 << 40
	file := craft(t, 1, h, func(w *Writer) { w.writeRaw(0x81, 0, []byte("future metadata"), []byte("future payload")) })
	rd := NewReader(bytes.NewReader(file))
	if _, err := rd.Next(); err != io.EOF {
		t.Fatalf("file with an optional record: %v", err)
	}
	if rd.SkippedOptional() != 1 || rd.Trailer().Records != 1 {
		t.Fatalf("skipped %d optional records, trailer %+v", rd.SkippedOptional(), rd.Trailer())
	}
}

// TestErrorNamesPosition checks that a corrupt payload is reported at its
// record's position, so the message can tell the user where.
func TestErrorNamesPosition(t *testing.T) {
	base, _ := goldenVolumes()
	full, _ := goldenFiles(t)
	_, recs := records(t, full)
	bad := append([]byte(nil), full...)
	bad[recs[1][1]-1] ^= 0xFF // last payload byte of record 2
	err := checkApply(t, bad, nil, base)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Record != 2 || fe.Offset != int64(recs[1][0]) || !errors.Is(err, ErrChecksum) {
		t.Fatalf("got %v, want a checksum error at record 2, byte %d", err, recs[1][0])
	}
}
