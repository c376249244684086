package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// seededRand returns a generator for a random test: its seed is logged,
// and THINBACK_SEED=N replays it.
func seededRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if v := os.Getenv("THINBACK_SEED"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", v, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// TestServeNBD: the exports of a store over NBD: listed; each point in
// time reads as the image held it, with many reads in flight at once
// answered by handle; writes are refused with EPERM and the export is
// flagged read-only; unknown exports are refused; ^C stops the server.
func TestServeNBD(t *testing.T) {
	work := t.TempDir()
	store := filepath.Join(work, "store")
	r := seededRand(t)
	img := make([]byte, 3<<20+777)
	r.Read(img[:2<<20])
	var states [][]byte
	for i := 0; i < 2; i++ {
		if i > 0 {
			r.Read(img[1<<20 : 1<<20+300000])
		}
		if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, work, "backup", "--file", "disk.img", "--store", store)
		states = append(states, append([]byte(nil), img...))
	}
	sock := filepath.Join(work, "nbd.sock")
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runServe(ctx, e, serveOptions{store: store, addr: "unix:" + sock, quiet: true}) }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}

	k := nbdtest.Dial(t, "unix", sock)
	final, names := k.List()
	if final != nbd.RepAck || strings.Join(names, " ") != "disk.img disk.img@1 disk.img@2" {
		t.Fatalf("NBD_OPT_LIST: %d, %q", final, names)
	}
	if final := k.Go("disk.img@9"); final != nbd.RepErrUnknown {
		t.Fatalf("an unknown export: reply %#x", final)
	}
	for i, name := range []string{"disk.img@1", "disk.img"} {
		k := nbdtest.Dial(t, "unix", sock)
		if final := k.Go(name); final != nbd.RepAck {
			t.Fatalf("NBD_OPT_GO %s: reply %#x", name, final)
		}
		want := states[i]
		if k.Size != uint64(len(want)) || k.Flags&nbd.FlagReadOnly == 0 {
			t.Fatalf("%s: size %d, flags %#x", name, k.Size, k.Flags)
		}
		// Many reads in flight, then their replies, matched by handle.
		k.ReadMany(r, want, 40)
		// The whole device, in one read.
		k.Request(nbd.CmdRead, 99, 0, uint32(len(want)), nil)
		if _, code, b := k.Reply(uint32(len(want))); code != 0 || !bytes.Equal(b, want) {
			at := -1
			for i := range b {
				if b[i] != want[i] {
					at = i
					break
				}
			}
			t.Fatalf("%s: a whole read: code %d, %d bytes, differs at %d: %x vs %x", name, code, len(b), at, b[:16], want[:16])
		}
		// Writes are refused, and the stream stays in step.
		k.Request(nbd.CmdWrite, 7, 0, 4096, make([]byte, 4096))
		if h, code, _ := k.Reply(0); h != 7 || code != nbd.EPERM {
			t.Fatalf("%s: a write: handle %d code %d, want EPERM", name, h, code)
		}
		k.Request(nbd.CmdRead, 8, uint64(len(want))-1, 2, nil)
		if _, code, _ := k.Reply(0); code != nbd.EINVAL {
			t.Fatalf("%s: a read past the end: code %d, want EINVAL", name, code)
		}
		k.Request(nbd.CmdRead, 9, 0, 10, nil)
		if _, code, b := k.Reply(10); code != 0 || !bytes.Equal(b, want[:10]) {
			t.Fatalf("%s: a read after the refusals: code %d", name, code)
		}
		k.Request(nbd.CmdDisc, 10, 0, 0, nil)
		if _, err := k.Conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("%s: after NBD_CMD_DISC the connection is not closed: %v", name, err)
		}
	}
	// An open connection does not keep the server from stopping.
	idle := nbdtest.Dial(t, "unix", sock)
	idle.Go("disk.img")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("serve did not stop")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket is left behind: %v", err)
	}
	if stderr.Len() > 0 {
		t.Logf("serve said:\n%s", stderr.String())
	}
}
