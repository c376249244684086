package restore

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

var seedFlag = flag.Int64("seed", 0, "seed for random tests (0: time-based, printed)")

func testRand(t testing.TB) *rand.Rand {
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("random seed %d (replay with -seed=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// image is a test volume's contents at one point in time.
type image struct {
	name string
	data []byte
	path string
	snap archive.Snapshot
	// tag is the file tag of the last delta file written of the image
	// under a key.
	tag archive.Digest
}

// world makes images of one volume and delta files between them, the way
// thinback send does: real files in a temp dir.
type world struct {
	t   testing.TB
	dir string
	r   *rand.Rand
	bs  int64
	n   int
	// key, if set, encrypts every delta file written.
	key *archive.Key
	// volume, if set, is the volume name of the files written ("vol").
	volume string
	// resumeFrom, if set, makes delta write resumed files from there.
	resumeFrom int64
}

func newWorld(t testing.TB) *world {
	return &world{t: t, dir: t.TempDir(), r: testRand(t), bs: 4096}
}

func (w *world) image(data []byte) *image {
	w.n++
	name := filepath.Join(w.dir, "img"+string(rune('0'+w.n%10))+"-"+time.Now().Format("150405.000000000"))
	if err := os.WriteFile(name, data, 0o600); err != nil {
		w.t.Fatal(err)
	}
	return &image{name: filepath.Base(name), data: append([]byte(nil), data...), path: name,
		snap: archive.Snapshot{ID: archive.NewID(), Name: filepath.Base(name), Time: time.Unix(int64(w.n), 0).UTC()}}
}

// mutate returns a changed copy of data: random writes, zeroed runs.
func (w *world) mutate(data []byte, writes int) []byte {
	out := append([]byte(nil), data...)
	for i := 0; i < writes; i++ {
		off := w.r.Intn(len(out))
		n := min(1+w.r.Intn(3*int(w.bs)), len(out)-off)
		if w.r.Intn(4) == 0 {
			clear(out[off : off+n])
		} else {
			w.r.Read(out[off : off+n])
		}
	}
	return out
}

func (w *world) random(n int) []byte {
	b := make([]byte, n)
	w.r.Read(b)
	for i := 0; i < 8; i++ { // some zero runs
		off := w.r.Intn(n)
		clear(b[off:min(off+int(w.bs)*(1+w.r.Intn(8)), n)])
	}
	return b
}

func (w *world) header(img *image, parent *image) *archive.Header {
	h := &archive.Header{BlockSize: w.bs, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: cmp.Or(w.volume, "vol"), VolumeUUID: "vol-uuid", VolumeSize: int64(len(img.data)), Snapshot: img.snap, Tool: "test"}
	if parent != nil {
		h.Parent, h.ParentSize = parent.snap, int64(len(parent.data))
	}
	h.ResumeFrom = w.resumeFrom
	return h
}

// delta writes the delta file of img (against parent, or a full) and
// returns its path.
func (w *world) delta(img, parent *image) string {
	w.t.Helper()
	nf, err := os.Open(img.path)
	if err != nil {
		w.t.Fatal(err)
	}
	defer nf.Close()
	var src archive.Source = archive.NewFileSource(nf, int64(len(img.data)), false)
	if parent != nil {
		bf, err := os.Open(parent.path)
		if err != nil {
			w.t.Fatal(err)
		}
		defer bf.Close()
		src = archive.NewCompareSource(nf, int64(len(img.data)), bf, int64(len(parent.data)), w.bs, nil)
	}
	out := img.path + ".tbk"
	if parent != nil {
		out = img.path + ".from-" + parent.name + ".tbk"
	}
	if w.resumeFrom != 0 {
		out = fmt.Sprintf("%s.resumed-%d.tbk", out, w.resumeFrom)
	}
	f, err := os.Create(out)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	aw := archive.NewWriter(f, archive.WithKey(w.key))
	if err := aw.WriteHeader(w.header(img, parent)); err != nil {
		w.t.Fatal(err)
	}
	if err := archive.Send(context.Background(), aw, src, archive.SendOptions{ChunkSize: 16 << 10}); err != nil {
		w.t.Fatal(err)
	}
	if err := aw.Close(); err != nil {
		w.t.Fatal(err)
	}
	img.tag = aw.Trailer().Tag
	return out
}

// stateStore keeps target states in memory, as the CLI keeps them in its
// bbolt state file.
type stateStore map[string]State

// apply applies files to target with the state kept in st.
func (st stateStore) apply(t testing.TB, target string, files []string, opts Options) (*Result, error) {
	t.Helper()
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		return nil, err
	}
	defer tg.Close()
	id, err := tg.Identity()
	if err != nil {
		t.Fatal(err)
	}
	var inputs []Input
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		inputs = append(inputs, Input{Name: filepath.Base(name), R: f})
	}
	prior, had := st[id.Key]
	opts.State = prior
	if opts.Begin == nil {
		opts.Begin = func(s State) error { st[id.Key] = s; return nil }
	}
	opts.Finish = func(s State) error { st[id.Key] = s; return nil }
	opts.Stopped = func(s State) error { st[id.Key] = s; return nil }
	also := opts.Revert
	opts.Revert = func() error {
		if also != nil {
			also()
		}
		if had {
			st[id.Key] = prior
		} else {
			delete(st, id.Key)
		}
		return nil
	}
	return Apply(context.Background(), tg, inputs, opts)
}

// newSnapback creates a snapback file for Options.Snapback, as the CLI
// does (exclusively), and closes it when the test ends.
func newSnapback(t testing.TB, path string) *os.File {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// verifyFirstLimit sets VerifyFirstLimit for the test.
func verifyFirstLimit(t testing.TB, n int64) {
	old := VerifyFirstLimit
	VerifyFirstLimit = n
	t.Cleanup(func() { VerifyFirstLimit = old })
}

func mustEqual(t testing.TB, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s differs from the expected image (%d vs %d bytes, first difference at %d)", path, len(got), len(want), i)
	}
}

// unavailable skips a test that needs what this machine lacks (root, a
// loop device, a mount), or fails it under THINBACK_REQUIRE_VM=1, as
// scripts/test sets it: the real-kernel tests need root there, so these
// tests can run too, and a skip would pass a test that tested nothing.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("THINBACK_REQUIRE_VM") == "1" {
		t.Fatalf(format+" (THINBACK_REQUIRE_VM=1: this test must run)", args...)
	}
	t.Skipf(format+" (set THINBACK_REQUIRE_VM=1 to fail instead)", args...)
}

// loopDevice attaches a loop device over a new file of size bytes, or
// skips the test where that is impossible (not root, no loop driver; see
// unavailable).
func loopDevice(t testing.TB, size int64) string {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "loop devices need root")
	}
	img := filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		unavailable(t, "no loop device: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}
