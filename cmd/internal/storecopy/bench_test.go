package storecopy

import (
	"context"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

// go test -run '^$' -bench CopyToS3 -benchtime 1x ./cmd/internal/storecopy -copy.benchsize 256 -copy.rounds 3
var (
	benchSize   = flag.Int64("copy.benchsize", 128, "MiB of volume in the store copied (a full and three incrementals of an eighth each)")
	benchRounds = flag.Int("copy.rounds", 3, "alternating rounds of copy and PUT; medians are reported")
)

// BenchmarkCopyToS3 copies a local store into a new prefix of a bucket
// (versitygw on 127.0.0.1) and, alternating with it, uploads the same
// bytes as one object through thinback's own S3 client (s3.Upload: the
// streaming multipart upload the S3 store writes delta files with),
// and reports the median throughput of each and their ratio.
func BenchmarkCopyToS3(b *testing.B) {
	srv := s3test.Start(b)
	src, err := catalog.OpenStoreOptions(filepath.Join(b.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		b.Fatal(err)
	}
	size := *benchSize << 20
	rng := mrand.New(mrand.NewPCG(1, 2))
	data := make([]byte, size)
	for i := 0; i < len(data); i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8; j++ {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	var parent *catalog.Snapshot
	for i := range 4 {
		ext := []archive.Extent{{Offset: 0, Length: size, Kind: archive.KindData}}
		if parent != nil {
			off := int64(i) * size / 8
			ext = []archive.Extent{{Offset: off, Length: size / 8, Kind: archive.KindData}}
			for k := off; k < off+size/8; k += 8 {
				data[k] ^= 0xff
			}
		}
		h := &archive.Header{
			BlockSize: 64 << 10, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
			VolumeName: "vg0/bench", VolumeUUID: "uuid-bench", VolumeSize: size,
			Snapshot: archive.Snapshot{ID: archive.NewID(), Time: time.Date(2026, 12, 1, i, 0, 0, 0, time.UTC)},
		}
		if parent != nil {
			if h.Parent, err = record.ParentOf(*parent); err != nil {
				b.Fatal(err)
			}
			h.ParentSize = size
		}
		rec, _ := storetest.Write(b, src, h, data, ext, nil)
		parent = &rec
	}
	var snaps []catalog.Snapshot
	var total int64
	if err := src.View(func(tx *catalog.Tx) (err error) { snaps, err = tx.Snapshots("vg0/bench"); return err }); err != nil {
		b.Fatal(err)
	}
	for _, sn := range snaps {
		total += sn.FileSize
	}
	client, err := s3.Open(context.Background(), s3.Location{Insecure: true, Host: srv.Addr, Bucket: srv.Bucket, Prefix: "put"},
		&s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		var copyRates, putRates []float64
		for round := range *benchRounds {
			dst := s3Store(b, srv, fmt.Sprintf("copy-%d-%d", b.N, round))
			start := time.Now()
			res, err := Copy(context.Background(), src, dst, Options{})
			if err != nil || len(res) != 1 || len(res[0].Copied) != len(snaps) {
				b.Fatalf("copy: %v, %+v", err, res)
			}
			copyRates = append(copyRates, float64(total)/time.Since(start).Seconds()/(1<<20))

			start = time.Now()
			up, err := client.NewUpload(context.Background(), fmt.Sprintf("put-%d-%d", b.N, round))
			if err != nil {
				b.Fatal(err)
			}
			for _, sn := range snaps {
				f, err := src.OpenDelta(sn.File)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(up, f); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
			if _, err := up.Complete(); err != nil {
				b.Fatal(err)
			}
			putRates = append(putRates, float64(total)/time.Since(start).Seconds()/(1<<20))
		}
		// Each round's copy against the PUT right after it, so that the
		// load of others on a shared machine weighs on both alike.
		var ratios []float64
		for i := range copyRates {
			ratios = append(ratios, 100*copyRates[i]/putRates[i])
		}
		c, p := median(copyRates), median(putRates)
		b.ReportMetric(c, "copy-MiB/s")
		b.ReportMetric(p, "put-MiB/s")
		b.ReportMetric(100*c/p, "copy/put-%")
		b.ReportMetric(median(ratios), "median-round-%")
		b.Logf("%d MiB of files, %d rounds: copy %v MiB/s, PUT %v MiB/s", total>>20, *benchRounds, copyRates, putRates)
	}
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
