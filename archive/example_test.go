package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"time"

	"github.com/thinback/thinback/archive"
)

// image is a tiny Source: one DATA extent over a byte slice.
type image struct {
	data []byte
	done bool
}

func (s *image) Next() (archive.Extent, error) {
	if s.done {
		return archive.Extent{}, io.EOF
	}
	s.done = true
	return archive.Extent{Offset: 0, Length: int64(len(s.data)), Kind: archive.KindData}, nil
}

func (s *image) ReadAt(p []byte, off int64) (int, error) { return copy(p, s.data[off:]), nil }

// Write a full of a small volume and read it back, verifying every block.
func Example() {
	vol := make([]byte, 1<<20)
	copy(vol[200<<10:], "hello, thinback")

	var file bytes.Buffer
	w := archive.NewWriter(&file)
	err := w.WriteHeader(&archive.Header{
		BlockSize:  archive.DefaultBlockSize,
		Codec:      archive.CodecZstd,
		Hash:       archive.HashBLAKE3,
		VolumeName: "disk.img",
		VolumeSize: int64(len(vol)),
		Snapshot:   archive.Snapshot{ID: archive.DeriveID("example", "1"), Name: "disk.img", Time: time.Unix(0, 0)},
		Tool:       "example",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &image{data: vol}, archive.SendOptions{}); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}

	rd := archive.NewReader(&file)
	err = archive.Scan(context.Background(), rd, archive.ScanOptions{}, func(rec *archive.Record, data []byte) error {
		fmt.Printf("%v [%d, %d)\n", rec.Kind, rec.Offset, rec.End())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("records:", rd.Trailer().Records)
	// Output:
	// ZERO [0, 196608)
	// DATA [196608, 262144)
	// ZERO [262144, 1048576)
	// records: 3
}

// Write a full encrypted under a key, and read it back: with the key, and
// without it, where only its structure and digest can be checked.
func ExampleWithKey() {
	master := bytes.Repeat([]byte{7}, archive.MasterKeySize) // a random secret, in real use
	key, err := archive.NewKey(master)
	if err != nil {
		log.Fatal(err)
	}
	vol := make([]byte, 1<<20)
	copy(vol[200<<10:], "hello, thinback")

	var file bytes.Buffer
	w := archive.NewWriter(&file, archive.WithKey(key))
	err = w.WriteHeader(&archive.Header{
		BlockSize:  archive.DefaultBlockSize,
		Codec:      archive.CodecZstd,
		Hash:       archive.HashBLAKE3,
		VolumeName: "disk.img",
		VolumeSize: int64(len(vol)),
		Snapshot:   archive.Snapshot{ID: archive.DeriveID("example", "1"), Name: "disk.img", Time: time.Unix(0, 0)},
		Tool:       "example",
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &image{data: vol}, archive.SendOptions{}); err != nil {
		log.Fatal(err)
	}
	if err := w.Close(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("in the clear:", bytes.Contains(file.Bytes(), []byte("hello, thinback")))

	st, err := archive.CheckStructure(bytes.NewReader(file.Bytes()))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("without the key:", st.Records, "records, contents checked:", st.Contents)

	rd := archive.NewReader(bytes.NewReader(file.Bytes()), archive.WithKey(key))
	err = archive.Scan(context.Background(), rd, archive.ScanOptions{}, func(rec *archive.Record, data []byte) error {
		if rec.Kind == archive.KindData {
			fmt.Printf("%q\n", bytes.Trim(data, "\x00"))
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tag is the key's:", rd.Trailer().Tag == key.FileTag(rd.Trailer().Digest))
	// Output:
	// in the clear: false
	// without the key: 3 records, contents checked: false
	// "hello, thinback"
	// tag is the key's: true
}
