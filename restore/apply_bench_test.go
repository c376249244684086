package restore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkApply applies a full and an incremental of a 64 MiB volume (see
// benchChain) to a regular file in the page cache: from seekable files,
// whose payloads the workers read themselves, and the full alone from a
// stream, whose payloads are read in order by one goroutine. MB/s are of
// the DATA bytes of the inputs.
func BenchmarkApply(b *testing.B) {
	files, data := benchChain(b, 1<<20)
	dir := b.TempDir()
	b.Run("files", func(b *testing.B) {
		b.SetBytes(data)
		for i := 0; i < b.N; i++ {
			benchApply(b, filepath.Join(dir, "files"), openInputs(b, files...))
		}
	})
	b.Run("stream", func(b *testing.B) {
		full, err := os.ReadFile(files[0])
		if err != nil {
			b.Fatal(err)
		}
		_, _, tr := readAll(b, files[0])
		b.SetBytes(tr.DataBytes)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			benchApply(b, filepath.Join(dir, "stream"), []Input{{Name: "-", R: stream{bytes.NewReader(full)}}})
		}
	})
}

func benchApply(b *testing.B, target string, inputs []Input) {
	b.Helper()
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer tg.Close()
	if _, err := Apply(context.Background(), tg, inputs, Options{Force: true}); err != nil {
		b.Fatal(err)
	}
}
