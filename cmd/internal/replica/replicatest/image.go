// Package replicatest helps test replicate's two sides without LVM.
package replicatest

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/replica"
)

// Block is the images' block size.
const Block = 64 << 10

// ImageSource is a volume kept as an image whose snapshots are copies of
// it: a real source of deltas (backup.OpenFileSend) without LVM, for
// tests of replicate's two sides.
type ImageSource struct {
	dir string
	// Live is the image written to; Snaps its snapshots, oldest first,
	// and Paths their files.
	Live  string
	n     int
	Snaps []replica.Local
	Paths map[archive.ID]string
}

// NewImageSource makes an image of size bytes, all zero, in a new
// directory of t.
func NewImageSource(t testing.TB, size int64) *ImageSource {
	dir := t.TempDir()
	s := &ImageSource{dir: dir, Live: filepath.Join(dir, "live.img"), Paths: map[archive.ID]string{}}
	if err := os.WriteFile(s.Live, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(s.Live, size); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *ImageSource) Snapshots(context.Context) ([]replica.Local, error) {
	return append([]replica.Local(nil), s.Snaps...), nil
}

func (s *ImageSource) Take(context.Context) (replica.Local, error) {
	s.n++
	path := filepath.Join(s.dir, fmt.Sprintf("snap%d.img", s.n))
	b, err := os.ReadFile(s.Live)
	if err != nil {
		return replica.Local{}, err
	}
	if err := os.WriteFile(path, b, 0o400); err != nil {
		return replica.Local{}, err
	}
	out, err := backup.OpenFileSend(backup.FileSendOptions{File: path, BlockSize: Block, Volume: "vol", Progress: noProgress})
	if err != nil {
		return replica.Local{}, err
	}
	out.Close()
	l := replica.Local{ID: out.Header.Snapshot.ID, Name: filepath.Base(path), Time: out.Header.Snapshot.Time}
	s.Snaps = append(s.Snaps, l)
	s.Paths[l.ID] = path
	return l, nil
}

func (s *ImageSource) Open(_ context.Context, snap replica.Local, base *replica.Local, from int64) (*backup.Outgoing, error) {
	o := backup.FileSendOptions{File: s.Paths[snap.ID], BlockSize: Block, Volume: "vol", Progress: noProgress}
	if base != nil {
		o.BaseFile = s.Paths[base.ID]
	}
	out, err := backup.OpenFileSend(o)
	if err == nil && from > 0 {
		out.Header.ResumeFrom = from
	}
	return out, err
}

func (s *ImageSource) Resumable() bool { return true }

func (s *ImageSource) Remove(_ context.Context, l replica.Local) error {
	if err := os.Remove(s.Paths[l.ID]); err != nil {
		return err
	}
	for i, x := range s.Snaps {
		if x.ID == l.ID {
			s.Snaps = append(s.Snaps[:i], s.Snaps[i+1:]...)
			break
		}
	}
	return nil
}

// Write writes n runs of random bytes of r at random places of the image.
func (s *ImageSource) Write(t testing.TB, r *rand.Rand, n int) {
	f, err := os.OpenFile(s.Live, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	for range n {
		p := make([]byte, 1+r.Intn(3*Block))
		r.Read(p)
		if _, err := f.WriteAt(p, r.Int63n(fi.Size()-int64(len(p)))); err != nil {
			t.Fatal(err)
		}
	}
}

func noProgress(int64) backup.Progress { return backup.NoProgress{} }
