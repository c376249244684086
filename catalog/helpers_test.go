package catalog

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var seedFlag = flag.Int64("seed", 0, "seed for randomized tests; 0 picks one from the clock")

// testSeed returns the seed for a randomized test and logs how to replay it.
func testSeed(t *testing.T) int64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with: go test ./catalog -run '^%s$' -seed %d)", seed, t.Name(), seed)
	return seed
}

// Child processes: the test binary re-executes itself with
// CATALOG_TEST_CHILD set to hold a lock or to be killed at a hook point.
const (
	envChild = "CATALOG_TEST_CHILD"
	envDir   = "CATALOG_TEST_DIR"
	envPoint = "CATALOG_TEST_POINT"
	envSpec  = "CATALOG_TEST_SPEC"
)

// exitNotReached is a child's exit code when it finished without reaching
// the hook point it was to be killed at.
const exitNotReached = 3

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(runChild(mode))
	}
	os.Exit(m.Run())
}

// childSpec tells a child what to do.
type childSpec struct {
	Volume string
	Snap   Snapshot
	Data   []byte
	Remove []string
	Slot   string // a key slot's id
}

func runChild(mode string) int {
	var spec childSpec
	if err := json.Unmarshal([]byte(os.Getenv(envSpec)), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "child spec:", err)
		return 2
	}
	s, err := OpenStore(os.Getenv(envDir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if point := os.Getenv(envPoint); point != "" {
		// "name" or "name#n": die at the n-th time the point is reached.
		name, nth := point, 1
		if i := strings.IndexByte(point, '#'); i >= 0 {
			name = point[:i]
			nth, _ = strconv.Atoi(point[i+1:])
		}
		hits := 0
		hook = func(p string) {
			if p != name {
				return
			}
			if hits++; hits == nth {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
	}
	switch mode {
	case "lock":
		unlock, err := s.LockVolume(spec.Volume)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("locked")
		_, _ = io.Copy(io.Discard, os.Stdin)
		if err := unlock(); err != nil {
			return 2
		}
		return 0
	case "commit", "replace":
		f, err := s.CreateTemp(spec.Snap.Volume)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if _, err := f.Write(spec.Data); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if mode == "commit" {
			err = s.Commit(f, &spec.Snap)
		} else {
			err = s.Replace(f, &spec.Snap, spec.Remove...)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	case "keyslot":
		if err := s.PutKeySlot(spec.Slot, spec.Data); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	case "remove":
		if err := s.Remove(spec.Snap.Volume, spec.Snap.ID); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	default:
		return 2
	}
	return exitNotReached
}

// startChild starts the test binary as a child in the given mode.
func startChild(t *testing.T, mode, dir, point string, spec childSpec) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
	t.Helper()
	data, err := json.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envChild+"="+mode, envDir+"="+dir, envPoint+"="+point, envSpec+"="+string(data))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, stdin, bufio.NewReader(stdout)
}

// runKilled runs a child that must die by SIGKILL at point.
func runKilled(t *testing.T, mode, dir, point string, spec childSpec) {
	t.Helper()
	cmd, stdin, _ := startChild(t, mode, dir, point, spec)
	_ = stdin.Close()
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("child: want death by SIGKILL at %s, got %v", point, err)
	}
	ws := ee.Sys().(syscall.WaitStatus)
	if ws.Exited() && ws.ExitStatus() == exitNotReached {
		t.Fatalf("child finished without reaching hook point %s", point)
	}
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: want death by SIGKILL at %s, got %v", point, err)
	}
}

// checker runs Check when a test ends and fails it on any inconsistency,
// except the problems the test declared with want (as bbolt's btesting
// checks every test database on close).
type checker struct {
	t    *testing.T
	want []error
}

// expect declares problems (Check sentinels) the final check must find,
// exactly, in any order.
func (c *checker) expect(problems ...error) { c.want = append(c.want, problems...) }

func (c *checker) verify(what string, got []error) {
	c.t.Helper()
	var gotNames, wantNames []string
	for _, p := range got {
		var ce *CheckError
		if !errors.As(p, &ce) {
			c.t.Errorf("%s: problem is not a *CheckError: %v", what, p)
			continue
		}
		gotNames = append(gotNames, ce.Problem.Error())
	}
	for _, w := range c.want {
		wantNames = append(wantNames, w.Error())
	}
	sort.Strings(gotNames)
	sort.Strings(wantNames)
	if strings.Join(gotNames, "|") != strings.Join(wantNames, "|") {
		for _, p := range got {
			c.t.Logf("%s: %v", what, p)
		}
		c.t.Errorf("%s found %q, want %q", what, gotNames, wantNames)
	}
}

// testStore is a store in a temporary directory that is checked when the
// test ends.
type testStore struct {
	*Store
	checker
}

func newTestStore(t *testing.T) *testStore {
	t.Helper()
	return openTestStore(t, filepath.Join(t.TempDir(), "store"))
}

func openTestStore(t *testing.T, dir string) *testStore {
	t.Helper()
	s, err := OpenStoreOptions(dir, &Options{Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testStore{Store: s, checker: checker{t: t}}
	t.Cleanup(ts.finalCheck)
	return ts
}

func (ts *testStore) finalCheck() {
	ts.t.Helper()
	problems, err := ts.Check(CheckOptions{})
	if err != nil {
		ts.t.Errorf("final check: %v", err)
		return
	}
	ts.verify("Store.Check", problems)
	// The in-transaction variant must agree.
	if err := ts.View(func(tx *Tx) error {
		ts.verify("Tx.Check", tx.Check(CheckOptions{Dir: ts.Dir()}))
		return nil
	}); err != nil {
		ts.t.Errorf("final check: %v", err)
	}
}

// newTestFile returns the path of a standalone catalog (a state file) that
// is checked when the test ends.
func newTestFile(t *testing.T) (string, *checker) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state", "state.db")
	c := &checker{t: t}
	t.Cleanup(func() {
		if err := View(path, nil, func(tx *Tx) error {
			c.verify("Tx.Check", tx.Check(CheckOptions{}))
			return nil
		}); err != nil {
			t.Errorf("final check: %v", err)
		}
	})
	return path, c
}

var idCounter atomic.Uint64

// newID returns a fresh canonical UUID.
func newID() string {
	n := idCounter.Add(1)
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)
}

// mustUpdate and mustView fail the test on error.
func mustUpdate(t *testing.T, u interface{ Update(func(*Tx) error) error }, fn func(*Tx) error) {
	t.Helper()
	if err := u.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func mustView(t *testing.T, v interface{ View(func(*Tx) error) error }, fn func(*Tx) error) {
	t.Helper()
	if err := v.View(fn); err != nil {
		t.Fatal(err)
	}
}

func testVolume(name string) *Volume {
	return &Volume{Name: name, Kind: KindLVMThin, Source: name, BlockSize: 64 << 10}
}

func (ts *testStore) putVolume(name string) {
	ts.t.Helper()
	mustUpdate(ts.t, ts, func(tx *Tx) error { return tx.PutVolume(testVolume(name)) })
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

var baseTime = time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)

// commit writes data as a delta file and commits it as a new snapshot.
func (ts *testStore) commit(volume, parent string, data []byte) Snapshot {
	ts.t.Helper()
	f, err := ts.CreateTemp(volume)
	if err != nil {
		ts.t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		ts.t.Fatal(err)
	}
	n := idCounter.Load()
	snap := Snapshot{ID: newID(), Volume: volume, Parent: parent, Time: baseTime.Add(time.Duration(n) * time.Hour),
		DataBytes: int64(len(data)), VolumeSize: 1 << 30, FileDigest: digest(data)}
	if parent != "" {
		snap.ParentSize = 1 << 30
	}
	if err := ts.Commit(f, &snap); err != nil {
		ts.t.Fatal(err)
	}
	return snap
}

// read returns a stored file's contents.
func (ts *testStore) read(rel string) []byte {
	ts.t.Helper()
	data, err := os.ReadFile(ts.Path(rel))
	if err != nil {
		ts.t.Fatal(err)
	}
	return data
}

// snapshots returns a volume's snapshots.
func (ts *testStore) snapshots(volume string) []Snapshot {
	ts.t.Helper()
	var snaps []Snapshot
	mustView(ts.t, ts, func(tx *Tx) (err error) {
		snaps, err = tx.Snapshots(volume)
		return err
	})
	return snaps
}

// ids lists snapshot IDs.
func ids(snaps []Snapshot) []string {
	out := make([]string, len(snaps))
	for i, s := range snaps {
		out[i] = s.ID
	}
	return out
}

// dirFiles lists the names in a directory.
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// fileDB adapts a catalog path to mustUpdate/mustView.
type fileDB string

func (p fileDB) View(fn func(*Tx) error) error   { return View(string(p), nil, fn) }
func (p fileDB) Update(fn func(*Tx) error) error { return Update(string(p), nil, fn) }
