package archive

import (
	"io"
	"runtime"
	"testing"
)

// TestWriterSealedBuffer: an encrypted Writer seals payloads of growing
// sizes (compressed payloads grow unevenly) into one buffer sized for the
// record, not into a new one each time a payload outgrows the last, which
// left a send's memory peak megabytes above a plain one's. The bound is on
// bytes allocated, not on time.
func TestWriterSealedBuffer(t *testing.T) {
	const length, n = 1 << 20, 32
	h := testHeader(n * length)
	digests := make([]Digest, length/h.BlockSize)
	for i := range digests {
		digests[i][0] = 1 // not the digest of a zero block
	}
	payload := make([]byte, length-1)
	w := NewWriter(io.Discard, WithKey(testKey(t, 1)))
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		// Payloads of 32 KiB, 64 KiB, ... up to just under the record.
		p := payload[:min((i+1)*length/n, length-1)]
		if err := w.WriteRecord(&Record{Kind: KindData, Offset: int64(i) * length, Length: length, Compressed: true, Digests: digests, Payload: p}); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// One buffer of a record's payload and tag, and the metadata of each
	// record (its digests, framed and sealed): ~1.5 MiB. A buffer per
	// growth would be ~16 MiB.
	most := uint64(length + aeadOverhead + 4*n*len(digests)*DigestSize + 1<<18)
	if got := after.TotalAlloc - before.TotalAlloc; got > most {
		t.Errorf("writing %d encrypted records of growing payloads allocated %d bytes, want at most %d", n, got, most)
	}
}
