package sshstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
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

// served is a client connected through an in-process pipe to Serve on a
// directory store.
type served struct {
	*Client
	conn net.Conn // the client's end
	done chan error
}

// serve starts Serve on the store at dir and connects a client to it;
// the test's cleanup closes the client and waits for Serve.
func serve(t *testing.T, dir string) *served {
	t.Helper()
	s, err := catalog.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	cc, sc := net.Pipe()
	done := make(chan error, 1)
	go func() {
		err := Serve(context.Background(), sc, s)
		sc.Close()
		done <- err
	}()
	cl, err := NewClient(cc, "ssh://test"+dir)
	if err != nil {
		t.Fatal(err)
	}
	sv := &served{Client: cl, conn: cc, done: done}
	t.Cleanup(func() {
		cl.Close()
		<-done
	})
	return sv
}

// wait closes the client and returns Serve's result.
func (sv *served) wait(t *testing.T) error {
	t.Helper()
	if err := sv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	err := <-sv.done
	sv.done <- err // for the cleanup
	return err
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

var baseTime = time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)

func testVolume(name string) catalog.Volume {
	return catalog.Volume{Name: name, Kind: catalog.KindLVMThin, Source: name, BlockSize: 64 << 10}
}

// writer returns a write callback that writes data and returns the
// record of snapshot id of volume with parent.
func writer(volume, id, parent string, n int, data []byte) func(io.Writer) (catalog.Snapshot, error) {
	return func(w io.Writer) (catalog.Snapshot, error) {
		// In pieces of odd sizes, as a pipeline writes.
		for rest := data; len(rest) > 0; {
			k := min(len(rest), 77777)
			if _, err := w.Write(rest[:k]); err != nil {
				return catalog.Snapshot{}, err
			}
			rest = rest[k:]
		}
		sn := catalog.Snapshot{ID: id, Volume: volume, Parent: parent, Time: baseTime.Add(time.Duration(n) * time.Hour),
			DataBytes: int64(len(data)), VolumeSize: 1 << 30, FileDigest: digest(data)}
		if parent != "" {
			sn.ParentSize = 1 << 30
		}
		return sn, nil
	}
}

var ids = []string{
	"0b7f6a4e-8a0e-4b5b-9d0e-1f2a3b4c5d01", "0b7f6a4e-8a0e-4b5b-9d0e-1f2a3b4c5d02",
	"0b7f6a4e-8a0e-4b5b-9d0e-1f2a3b4c5d03", "0b7f6a4e-8a0e-4b5b-9d0e-1f2a3b4c5d04",
}

// dirEntries lists the names in dir (none when it does not exist).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}
