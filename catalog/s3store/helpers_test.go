package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

var seedFlag = flag.Uint64("seed", 0, "seed for random tests (0: from THINBACK_SEED or the clock)")

func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		if v, err := strconv.ParseUint(os.Getenv("THINBACK_SEED"), 10, 64); err == nil {
			seed = v
		}
	}
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -seed %d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// The piece size of test stores: small, so a few MiB make several pieces.
const testPiece = 6 << 20

// testOptions are small parts and short timeouts, so tests move little
// data and fail fast.
func testOptions(cache string) *Options {
	return &Options{
		S3: s3.Options{
			AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath,
			PartSize: 5 << 20, Uploads: 2, ReadChunk: 1 << 20, ReadAhead: 2, MaxRetries: 4, StallTimeout: 30 * time.Second,
		},
		Cache:     cache,
		Create:    true,
		PieceSize: testPiece,
		LockTTL:   time.Minute,
	}
}

// host is one machine of a test: a cache of its own.
type host struct {
	t     *testing.T
	addr  string
	cache string
	notes []string
	mu    sync.Mutex
}

func newHost(t *testing.T, srv *s3test.Server) *host {
	return &host{t: t, addr: srv.Addr, cache: t.TempDir()}
}

func (h *host) loc(prefix string) s3.Location {
	return s3.Location{Insecure: true, Host: h.addr, Bucket: s3test.DefaultBucket, Prefix: prefix}
}

// open opens the store "p" as this host, with o changed by change.
func (h *host) open(change ...func(*Options)) *Store {
	h.t.Helper()
	o := testOptions(h.cache)
	o.Notify = func(msg string) {
		h.mu.Lock()
		h.notes = append(h.notes, msg)
		h.mu.Unlock()
	}
	for _, c := range change {
		c(o)
	}
	st, err := Open(testCtx(h.t), h.loc("p"), o)
	if err != nil {
		h.t.Fatalf("open: %v", err)
	}
	h.t.Cleanup(func() { st.Close() })
	return st
}

func (h *host) takeNotes() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := h.notes
	h.notes = nil
	return n
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func testVolume(name string) catalog.Volume {
	return catalog.Volume{Name: name, Kind: catalog.KindFile, Source: "/img/" + name, BlockSize: 64 << 10}
}

var idN struct {
	sync.Mutex
	n int
}

func newTestID() string {
	idN.Lock()
	defer idN.Unlock()
	idN.n++
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", idN.n, time.Now().UnixNano()&0xffffffffffff)
}

var baseTime = time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)

// snapOf is the record a write of data as a snapshot of volume returns.
func snapOf(volume, id, parent string, data []byte, n int) catalog.Snapshot {
	sn := catalog.Snapshot{ID: id, Volume: volume, Parent: parent, Time: baseTime.Add(time.Duration(n) * time.Hour),
		VolumeSize: 1 << 30, DataBytes: int64(len(data)), FileDigest: digest(data)}
	if parent != "" {
		sn.ParentSize = 1 << 30
	}
	return sn
}

// write commits data as a new snapshot of volume on parent, the caller
// holding the lock.
func write(t *testing.T, st *Store, volume, parent string, data []byte, n int) catalog.Snapshot {
	t.Helper()
	id := newTestID()
	sn, err := st.WriteVolumeDelta(testVolume(volume), id, func(w io.Writer) (catalog.Snapshot, error) {
		if _, err := w.Write(data); err != nil {
			return catalog.Snapshot{}, err
		}
		return snapOf(volume, id, parent, data, n), nil
	})
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return sn
}

func lock(t *testing.T, st *Store, volume string) func() {
	t.Helper()
	unlock, err := st.LockVolume(volume)
	if err != nil {
		t.Fatalf("lock %s: %v", volume, err)
	}
	return func() {
		if err := unlock(); err != nil {
			t.Errorf("unlock %s: %v", volume, err)
		}
	}
}

func snapshots(t *testing.T, st *Store, volume string) []catalog.Snapshot {
	t.Helper()
	var snaps []catalog.Snapshot
	if err := st.View(func(tx *catalog.Tx) (err error) {
		snaps, err = tx.Snapshots(volume)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return snaps
}

func ids(snaps []catalog.Snapshot) []string {
	var out []string
	for _, s := range snaps {
		out = append(out, s.ID)
	}
	return out
}

// readAll reads a file through OpenDelta's ReadAt, its Read and Seek, and
// OpenStream, and checks all three agree with want.
func readAll(t *testing.T, st *Store, file string, want []byte) {
	t.Helper()
	f, err := st.OpenDelta(file)
	if err != nil {
		t.Fatalf("open %s: %v", file, err)
	}
	defer f.Close()
	if end, err := f.Seek(0, io.SeekEnd); err != nil || end != int64(len(want)) {
		t.Fatalf("%s: size %d, %v; want %d", file, end, err, len(want))
	}
	got := make([]byte, len(want))
	if n, err := f.ReadAt(got, 0); n != len(got) || (err != nil && err != io.EOF) {
		t.Fatalf("%s: ReadAt: %d, %v", file, n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: ReadAt differs", file)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(f)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: Read differs (%d bytes, %v)", file, len(got), err)
	}
	s, err := st.OpenStream(file)
	if err != nil {
		t.Fatal(err)
	}
	got, err = io.ReadAll(s)
	s.Close()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("%s: stream differs (%d bytes, %v)", file, len(got), err)
	}
}

// check fails on any problem Check finds, but those of want (sentinels).
func check(t *testing.T, st *Store, want ...error) {
	t.Helper()
	problems, err := st.Check(catalog.CheckOptions{})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	var got, exp []string
	for _, p := range problems {
		var ce *catalog.CheckError
		if !errors.As(p, &ce) {
			t.Errorf("problem not a CheckError: %v", p)
			continue
		}
		got = append(got, ce.Problem.Error())
	}
	for _, w := range want {
		exp = append(exp, w.Error())
	}
	sort.Strings(got)
	sort.Strings(exp)
	if strings.Join(got, "|") != strings.Join(exp, "|") {
		for _, p := range problems {
			t.Logf("problem: %v", p)
		}
		t.Fatalf("check found %q, want %q", got, exp)
	}
}

// objects lists the bucket's keys under the store's prefix, sorted.
func objects(srv *s3test.Server) []string {
	var keys []string
	for _, k := range srv.Objects(srv.Bucket) {
		if n, ok := strings.CutPrefix(k, "p/"); ok {
			keys = append(keys, n)
		}
	}
	sort.Strings(keys)
	return keys
}

func withPrefix(keys []string, prefix string) []string {
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	return out
}

// Child processes: the test binary runs as a writer to kill at a hook.
const (
	envChild = "S3STORE_TEST_CHILD"
	envSpec  = "S3STORE_TEST_SPEC"
)

type childSpec struct {
	Addr, Cache string
	Op          string // "write", "replace", "remove"
	Point       string // hook point, or "midstream"
	Volume      string
	ID, Parent  string
	Data        []byte `json:"-"`
	DataFile    string // Data, which is too large for the environment
	Remove      []string
	N           int
}

func TestMain(m *testing.M) {
	if os.Getenv(envChild) == "1" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

func die() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	select {}
}

func runChild() int {
	var sp childSpec
	spec, err := os.ReadFile(os.Getenv(envSpec))
	if err == nil {
		err = json.Unmarshal(spec, &sp)
	}
	if err == nil && sp.DataFile != "" {
		sp.Data, err = os.ReadFile(sp.DataFile)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	hook = func(p string) {
		if p == sp.Point {
			die()
		}
	}
	o := testOptions(sp.Cache)
	st, err := Open(context.Background(), s3.Location{Insecure: true, Host: sp.Addr, Bucket: s3test.DefaultBucket, Prefix: "p"}, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if _, err := st.LockVolume(sp.Volume); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	before, err := listVolumes(sp.Addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	body := func(w io.Writer) (catalog.Snapshot, error) {
		half := len(sp.Data) / 2
		if _, err := w.Write(sp.Data[:half]); err != nil {
			return catalog.Snapshot{}, err
		}
		if sp.Point == "midstream" {
			if err := waitArrived(sp, before, int64(half)); err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(4)
			}
			die()
		}
		if _, err := w.Write(sp.Data[half:]); err != nil {
			return catalog.Snapshot{}, err
		}
		return snapOf(sp.Volume, sp.ID, sp.Parent, sp.Data, sp.N), nil
	}
	switch sp.Op {
	case "write":
		_, err = st.WriteVolumeDelta(testVolume(sp.Volume), sp.ID, body)
	case "replace":
		_, err = st.ReplaceDelta(sp.Volume, sp.ID, sp.Remove, body)
	case "remove":
		err = st.Remove(sp.Volume, sp.ID)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	return 3 // finished without reaching the point
}

// volumeObjects is what the bucket holds under the test stores' volumes/:
// complete objects, and the parts uploaded of each unfinished upload.
type volumeObjects struct {
	objects map[string]bool
	parts   map[string]int // upload id -> parts
}

func listVolumes(addr string) (volumeObjects, error) {
	v := volumeObjects{objects: map[string]bool{}, parts: map[string]int{}}
	c, err := minio.NewCore(addr, &minio.Options{Creds: credentials.NewStaticV4(s3test.AccessKey, s3test.SecretKey, ""),
		BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		return v, err
	}
	ctx := context.Background()
	for o := range c.Client.ListObjects(ctx, s3test.DefaultBucket, minio.ListObjectsOptions{Prefix: "p/" + volumesDir, Recursive: true}) {
		if o.Err != nil {
			return v, o.Err
		}
		v.objects[o.Key] = true
	}
	for u := range c.Client.ListIncompleteUploads(ctx, s3test.DefaultBucket, "p/"+volumesDir, true) {
		if u.Err != nil {
			return v, u.Err
		}
		parts, err := c.ListObjectParts(ctx, s3test.DefaultBucket, u.Key, u.UploadID, 0, 1000)
		if err != nil {
			return v, err
		}
		v.parts[u.UploadID] = len(parts.ObjectParts)
	}
	return v, nil
}

// waitArrived waits until what a writer was given, written bytes of a new
// file, is on the server as far as the upload sends it before more comes:
// its complete pieces as objects (new since before), and the whole parts
// of the piece in progress in an unfinished upload. The test kills the
// writer then, so the cleanup it checks has all of these to remove. The
// bound only turns an upload that never arrives into an error.
func waitArrived(sp childSpec, before volumeObjects, written int64) error {
	o := testOptions(sp.Cache)
	pieces := int(written / o.PieceSize)
	parts := int(written % o.PieceSize / o.S3.PartSize)
	var now volumeObjects
	for i := 0; i < 1200; i++ {
		var err error
		if now, err = listVolumes(sp.Addr); err != nil {
			return err
		}
		newObjects, maxParts := 0, 0
		for k := range now.objects {
			if !before.objects[k] {
				newObjects++
			}
		}
		for _, n := range now.parts {
			maxParts = max(maxParts, n)
		}
		if newObjects >= pieces && maxParts >= parts {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("after %d bytes written, the server never held %d new pieces and an upload of %d parts: %v", written, pieces, parts, now)
}

// runKilled runs a child that must die by SIGKILL at its point.
func runKilled(t *testing.T, sp childSpec) {
	t.Helper()
	dir := t.TempDir()
	sp.DataFile = filepath.Join(dir, "data")
	if err := os.WriteFile(sp.DataFile, sp.Data, 0o600); err != nil {
		t.Fatal(err)
	}
	spec, _ := json.Marshal(sp)
	specFile := filepath.Join(dir, "spec.json")
	if err := os.WriteFile(specFile, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"=1", envSpec+"="+specFile)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !ee.Sys().(syscall.WaitStatus).Signaled() {
		t.Fatalf("child %s at %s: want death by SIGKILL, got %v\n%s", sp.Op, sp.Point, err, stderr.String())
	}
}

func cacheDir(t *testing.T) string { return filepath.Join(t.TempDir(), "cache") }
