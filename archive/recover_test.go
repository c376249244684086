package archive

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
)

// tornFile is a file written with a checkpoint, then more records: what a
// snapback file goes through for each range it saves.
type tornFile struct {
	vol        []byte
	durable    []byte // the file at its checkpoint, END included
	whole      []byte // the file once the next records overwrote that END and it was closed
	p          int64  // where the checkpoint's END starts
	checkpoint int64  // the volume bytes the checkpoint covers
}

func newTornFile(t *testing.T) *tornFile {
	t.Helper()
	r := testRand(t)
	const bs = 4096
	kinds := "DzDRzzCDRzCRDzC" // D compressible, R random, z zero, C compressible again
	vol := make([]byte, len(kinds)*bs)
	for i, k := range kinds {
		b := vol[i*bs : (i+1)*bs]
		switch k {
		case 'D', 'C':
			for j := range b {
				b[j] = byte(r.Intn(3)) + 1
			}
		case 'R':
			r.Read(b)
			b[0] |= 1
		}
	}
	h := testHeader(int64(len(vol)))
	h.Parent.ID = DeriveID("test", "parent")
	h.ParentSize = h.VolumeSize
	cut := int64(4 * bs)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	send := func(from, to int64) {
		t.Helper()
		src := &memSource{data: vol, extents: []Extent{{Offset: from, Length: to - from, Kind: KindData}}}
		if err := Send(context.Background(), w, src, SendOptions{ChunkSize: bs}); err != nil {
			t.Fatal(err)
		}
	}
	send(0, cut)
	end, err := w.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	f := &tornFile{vol: vol, p: int64(buf.Len()), checkpoint: w.Covered()}
	f.durable = append(bytes.Clone(buf.Bytes()), end...)
	send(cut, int64(len(vol)))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	f.whole = bytes.Clone(buf.Bytes())
	if !bytes.Equal(f.whole[:f.p], f.durable[:f.p]) {
		t.Fatal("the records after the checkpoint changed the ones before it")
	}
	return f
}

// checkRecovered checks that what RecoverWriter made of file keeps at least
// the checkpoint, and that completed with its Checkpoint it is a delta file
// whose records are the first ones of whole and verify.
func (f *tornFile) checkRecovered(t *testing.T, file []byte) {
	t.Helper()
	rw, torn, err := RecoverWriter(bytes.NewReader(file), io.Discard)
	if err != nil {
		t.Fatalf("%d bytes: %v", len(file), err)
	}
	if !torn {
		t.Fatalf("%d bytes: not torn", len(file))
	}
	q := rw.Offset()
	if q < f.p || q > int64(len(file)) || rw.Covered() < f.checkpoint {
		t.Fatalf("%d bytes: recovered up to byte %d (volume byte %d), want at least the checkpoint's %d (%d)", len(file), q, rw.Covered(), f.p, f.checkpoint)
	}
	end, err := rw.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	got := append(bytes.Clone(file[:q]), end...)
	if !bytes.Equal(got[:q], f.whole[:q]) {
		t.Fatalf("%d bytes: the recovered records are not the file's first ones", len(file))
	}
	rd := NewReader(bytes.NewReader(got))
	if err := Scan(context.Background(), rd, ScanOptions{}, func(rec *Record, data []byte) error {
		if rec.Kind == KindData && !bytes.Equal(data, f.vol[rec.Offset:rec.End()]) {
			t.Fatalf("%d bytes: record at volume offset %d holds other data", len(file), rec.Offset)
		}
		return nil
	}); err != nil {
		t.Fatalf("%d bytes: the recovered file: %v", len(file), err)
	}
}

// TestRecoverWriterTorn: a file cut at every byte after its checkpoint's
// END started (the new size not durable, or part of it), and a file whose
// END was partly overwritten (a torn page), recovers to at least the
// checkpoint, with records that verify and nothing else.
func TestRecoverWriterTorn(t *testing.T) {
	f := newTornFile(t)
	for n := f.p; n < int64(len(f.whole)); n++ {
		if n == f.p+EndRecordLen && bytes.Equal(f.whole[f.p:n], f.durable[f.p:]) {
			continue // the checkpoint itself
		}
		f.checkRecovered(t, f.whole[:n])
	}
	for n := f.p + 1; n < int64(len(f.durable)); n++ {
		torn := append(bytes.Clone(f.whole[:n]), f.durable[n:]...)
		f.checkRecovered(t, torn)
	}
	// Not torn: the checkpoint, and the closed file.
	for _, file := range [][]byte{f.durable, f.whole} {
		rw, torn, err := RecoverWriter(bytes.NewReader(file), io.Discard)
		if err != nil || torn {
			t.Fatalf("a complete file of %d bytes: torn %v, %v", len(file), torn, err)
		}
		if rw.Offset() != int64(len(file))-EndRecordLen {
			t.Fatalf("a complete file of %d bytes continues at %d, want its END's %d", len(file), rw.Offset(), len(file)-EndRecordLen)
		}
	}
}

// TestRecoverWriterRefuses: damage that a crash during a checkpoint does
// not cause is refused, not cut away: a record before the tail that does
// not verify (its data or its chain), bytes after the END, a bad tail
// longer than an END.
func TestRecoverWriterRefuses(t *testing.T) {
	f := newTornFile(t)
	cases := map[string][]byte{}
	flip := func(b []byte, at int) []byte {
		b = bytes.Clone(b)
		b[at] ^= 0x10
		return b
	}
	// The last byte before the checkpoint is a record's payload or chain tag.
	cases["payload or chain before the tail"] = flip(f.whole, int(f.p)-1)
	cases["a record in the middle"] = flip(f.whole, int(f.p)/2)
	cases["bytes after the END"] = append(bytes.Clone(f.whole), 0)
	long := bytes.Clone(f.whole[:f.p])
	long = append(long, bytes.Repeat([]byte{0xff}, EndRecordLen+1)...)
	cases["a bad tail longer than an END"] = long
	for name, file := range cases {
		if _, _, err := RecoverWriter(bytes.NewReader(file), io.Discard); err == nil {
			t.Errorf("%s: recovered", name)
		} else if errors.Is(err, ErrTruncated) {
			t.Errorf("%s: %v, want the damage named", name, err)
		}
	}
}
