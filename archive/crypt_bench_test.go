package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"golang.org/x/crypto/chacha20poly1305"
)

// BenchmarkAEAD seals payloads of the sizes DATA records have with the two
// AEADs the issue names: AES-256-GCM (the format's, with AES-NI) and
// XChaCha20-Poly1305, the choice a CPU without AES instructions would
// favour. It is the measured reason for the format's choice.
func BenchmarkAEAD(b *testing.B) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	xc, err := chacha20poly1305.NewX(key)
	if err != nil {
		b.Fatal(err)
	}
	for _, a := range []struct {
		name  string
		nonce int
		seal  func(dst, nonce, p, ad []byte) []byte
	}{
		{"AES-256-GCM", nonceSize, newGCM(key).Seal},
		{"XChaCha20-Poly1305", chacha20poly1305.NonceSizeX, xc.Seal},
	} {
		for _, size := range []int{1 << 20, 4 << 20} {
			b.Run(a.name+"/"+map[int]string{1 << 20: "1MiB", 4 << 20: "4MiB"}[size], func(b *testing.B) {
				p := make([]byte, size)
				_, _ = rand.Read(p)
				out := make([]byte, 0, size+aeadOverhead)
				nonce := make([]byte, a.nonce)
				ad := make([]byte, 58)
				b.SetBytes(int64(size))
				b.ResetTimer()
				for range b.N {
					out = a.seal(out[:0], nonce, p, ad)
				}
			})
		}
	}
}

// BenchmarkSendKey is BenchmarkSend of the same volume, in the clear and
// encrypted: what encryption costs a backup's writing.
func BenchmarkSendKey(b *testing.B) {
	vol := benchVolume()
	k := testKey(b, 1)
	for _, c := range []struct {
		name string
		opts []Option
	}{{"plain", nil}, {"encrypted", []Option{WithKey(k)}}} {
		b.Run(c.name, func(b *testing.B) {
			h := testHeader(int64(len(vol)))
			h.BlockSize = DefaultBlockSize
			b.SetBytes(int64(len(vol)))
			for range b.N {
				w := NewWriter(discard{}, c.opts...)
				if err := w.WriteHeader(h); err != nil {
					b.Fatal(err)
				}
				if err := Send(context.Background(), w, fullSource(vol), SendOptions{}); err != nil {
					b.Fatal(err)
				}
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkScanKey is BenchmarkScan of the same volume's file, in the
// clear and encrypted: what encryption costs reading, verifying and
// decoding (a restore's work), and encrypted with SkipSealedDigests (a
// verify's).
func BenchmarkScanKey(b *testing.B) {
	vol := benchVolume()
	k := testKey(b, 1)
	for _, c := range []struct {
		name string
		opts []Option
		scan ScanOptions
	}{{"plain", nil, ScanOptions{}}, {"encrypted", []Option{WithKey(k)}, ScanOptions{}},
		{"encrypted-skip-sealed-digests", []Option{WithKey(k)}, ScanOptions{SkipSealedDigests: true}}} {
		b.Run(c.name, func(b *testing.B) {
			h := testHeader(int64(len(vol)))
			h.BlockSize = DefaultBlockSize
			var buf bytes.Buffer
			w := NewWriter(&buf, c.opts...)
			if err := w.WriteHeader(h); err != nil {
				b.Fatal(err)
			}
			if err := Send(context.Background(), w, fullSource(vol), SendOptions{}); err != nil {
				b.Fatal(err)
			}
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			file := buf.Bytes()
			b.SetBytes(int64(len(vol)))
			b.ResetTimer()
			for range b.N {
				rd := NewReader(bytes.NewReader(file), c.opts...)
				if err := Scan(context.Background(), rd, c.scan, func(*Record, []byte) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// discard is io.Discard without its ReaderFrom, so both runs write alike.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
