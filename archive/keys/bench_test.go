package keys

import (
	"fmt"
	"testing"
)

// BenchmarkArgon2id measures unlocking a passphrase slot (one Argon2id
// derivation and the unwrap) under candidate parameters, to choose
// DefaultArgon2 (BENCHMARKS.md, "Encryption (key slots)").
func BenchmarkArgon2id(b *testing.B) {
	mk, err := NewMasterKey()
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []Argon2Params{
		{Time: 1, MemoryKiB: 64 << 10, Threads: 2},
		{Time: 4, MemoryKiB: 64 << 10, Threads: 2},
		{Time: 1, MemoryKiB: 128 << 10, Threads: 2},
		DefaultArgon2, // t=3, 128 MiB, 2 lanes
		{Time: 2, MemoryKiB: 128 << 10, Threads: 1},
		{Time: 1, MemoryKiB: 256 << 10, Threads: 2},
		{Time: 2, MemoryKiB: 256 << 10, Threads: 2},
	} {
		s, err := NewPassphraseSlot(mk, []byte("benchmark passphrase"), p, "")
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("t=%d/m=%dMiB/p=%d", p.Time, p.MemoryKiB>>10, p.Threads), func(b *testing.B) {
			for b.Loop() {
				k, err := s.OpenPassphrase([]byte("benchmark passphrase"))
				if err != nil {
					b.Fatal(err)
				}
				k.Destroy()
			}
		})
	}
}
