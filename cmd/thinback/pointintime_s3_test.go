package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// mount and serve read a store on S3 as they read a directory: the local
// store's tests of mount (mount_test.go) and serve (serve_test.go) run
// again against the real versitygw here; cat and verify --device run in
// testdata/store-script/pointintime.txtar against every kind of store.

// s3PointStore backs up three states of an image into a new store on srv
// (a full and two incrementals, each changing a few hundred KiB) and
// returns the store's address with the states.
func s3PointStore(t *testing.T, srv *s3test.Server, work, prefix string) (store string, states [][]byte) {
	t.Helper()
	setS3Env(t, srv, filepath.Join(work, "cache"))
	store = srv.Location(prefix)
	run(t, work, "init", "--store", store, "--no-encrypt")
	r := seededRand(t)
	img := make([]byte, 6<<20+12345)
	r.Read(img[:4<<20])
	for i := 0; i < 3; i++ {
		if i > 0 {
			off := r.Intn(len(img) - 600000)
			r.Read(img[off : off+500000])
		}
		if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, work, "backup", "--file", "disk.img", "--store", store)
		states = append(states, bytes.Clone(img))
	}
	return store, states
}

// TestMountS3: every point in time of an S3 store reads back byte for
// byte through the FUSE tree. A point in time open while a prune merges
// its files away reads what it had cached, and EIO for the rest (its
// objects are deleted from the bucket), never other bytes; the mount
// then shows the store as the prune left it, the kept point read from
// the merged object.
func TestMountS3(t *testing.T) {
	srv := s3test.Start(t)
	work := t.TempDir()
	store, states := s3PointStore(t, srv, work, "mount")
	m := startMount(t, work, store)
	vol := filepath.Join(m.dir, "disk.img")
	names := imageNames(t, vol)
	if len(names) != 4 || names[3] != "latest.img" {
		t.Fatalf("the volume's directory holds %v", names)
	}
	for i := 1; i < 3; i++ {
		got, err := os.ReadFile(filepath.Join(vol, names[i]))
		if err != nil || !bytes.Equal(got, states[i]) {
			t.Fatalf("%s: %v, or other bytes than the image at its time", names[i], err)
		}
	}

	// Point #1, opened (indexed) and read in its first 64 KiB only, then
	// pruned away: its files are merged into #3's and deleted.
	f, err := os.OpenFile(filepath.Join(vol, names[0]), os.O_RDONLY|syscall.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := directBuffer(64 << 10)
	if n, err := f.ReadAt(p, 0); err != nil || !bytes.Equal(p[:n], states[0][:n]) {
		t.Fatalf("point #1 at 0: %v, or other bytes", err)
	}
	run(t, work, "prune", "--store", store, "disk.img", "--keep-last", "1")
	bad, good := 0, 0
	for off := int64(0); off < int64(len(states[0])); off += int64(len(p)) {
		n, err := f.ReadAt(p, off)
		switch {
		case errors.Is(err, syscall.EIO):
			bad++
		case err != nil && err != io.EOF:
			t.Fatalf("point #1 at %d after the prune: %v, want its bytes or EIO", off, err)
		case !bytes.Equal(p[:n], states[0][off:off+int64(n)]):
			t.Fatalf("point #1 at %d after the prune: other bytes than the image's", off)
		default:
			good++
		}
	}
	if bad == 0 || good == 0 {
		t.Fatalf("point #1 across its prune: %d reads of 64 KiB gave EIO, %d its bytes; want both (cached records read, the rest EIO); said:\n%s", bad, good, m.out.String())
	}
	if !strings.Contains(m.out.String(), "not found") && !strings.Contains(m.out.String(), "NoSuchKey") {
		t.Logf("mount said:\n%s", m.out.String())
	}
	t.Logf("point #1 across its prune: %d reads of 64 KiB gave EIO, %d read its bytes", bad, good)
	f.Close()

	// The mount brings its catalog up to date (at most every few
	// seconds): #3 alone, read from the merged object.
	deadline := time.Now().Add(60 * time.Second)
	for len(names) != 2 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		names = imageNames(t, vol)
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "3-") {
		t.Fatalf("after the prune the volume's directory holds %v, want #3 and latest.img", names)
	}
	got, err := os.ReadFile(filepath.Join(vol, "latest.img"))
	if err != nil || !bytes.Equal(got, states[2]) {
		t.Fatalf("latest.img after the prune: %v, or other bytes; said:\n%s", err, m.out.String())
	}
	m.stop(t, os.Interrupt)
}

func imageNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestServeS3: TestServeNbdinfo against a store on S3: libnbd's nbdinfo
// lists every point in time with its size, and nbdcopy copies each byte
// for byte over several connections at once.
func TestServeS3(t *testing.T) {
	nbdtest.NeedLibnbd(t)
	srv := s3test.Start(t)
	work := t.TempDir()
	store, states := s3PointStore(t, srv, work, "serve")
	sock, _, x, _, log := startServe(t, store, nbd.Options{})
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	sizes := nbdtest.NbdinfoList(t, uri(""))
	want := map[string]int64{}
	for i, st := range states {
		want[fmt.Sprintf("disk.img@%d", i+1)] = int64(len(st))
	}
	want["disk.img"] = int64(len(states[2]))
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --list: %v, want %v", sizes, want)
	}
	for i, st := range states {
		nbdtest.Nbdcopy(t, uri(fmt.Sprintf("disk.img@%d", i+1)), st)
	}
	nbdtest.Nbdcopy(t, uri("disk.img"), states[2])
	if st := x.Stats(); st.Built != 3 {
		t.Fatalf("3 points in time copied: %d indexes built, want 3", st.Built)
	}
	if s := log.String(); s != "" {
		t.Logf("serve said:\n%s", s)
	}
}

// TestRecordCacheFlag: --record-cache outside 1 MiB to 1 TiB is a usage
// error (exit 2) naming the flag, before any store is opened.
func TestRecordCacheFlag(t *testing.T) {
	work := t.TempDir()
	for _, args := range [][]string{
		{"serve", "--store", "nosuch", "--nbd", "unix:" + filepath.Join(work, "s"), "--record-cache", "0"},
		{"mount", "--store", "nosuch", "--record-cache", "-5", work},
		{"mount", "--store", "nosuch", "--record-cache", "2000000", work},
	} {
		r := thinbackEnv(t, work, nil, args...)
		if r.code != 2 || !strings.Contains(r.stderr, "--record-cache") {
			t.Errorf("thinback %s: exit %d, %q; want exit 2 naming --record-cache", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}
