package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

// Encrypted stores for the tests of the commands that read them. Their
// key slots and files are written here with archive/keys and storetest,
// as init --encrypt and backup write them.

const (
	encVolSize   = 2 << 20
	encBlockSize = 64 << 10
	encPass      = "correct horse battery staple"
)

// encChain is what writeEncChain wrote: the records of a chain, full
// first, the volume as each snapshot holds it, and each file's trailer.
type encChain struct {
	snaps    []catalog.Snapshot
	images   [][]byte
	trailers []archive.Trailer
}

// encKeys makes a master key and writes its passphrase slot (encPass)
// into repo, as init --encrypt does; it returns the key the files are
// encrypted under.
func encKeys(t *testing.T, repo keys.Storage) *archive.Key {
	t.Helper()
	mk, err := keys.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Destroy()
	return encSlot(t, repo, mk)
}

// encSlot writes a passphrase slot (encPass) of mk into repo.
func encSlot(t *testing.T, repo keys.Storage, mk *keys.MasterKey) *archive.Key {
	t.Helper()
	slot, err := keys.NewPassphraseSlot(mk, []byte(encPass), keys.Argon2Params{Time: 1, MemoryKiB: keys.MinArgon2MemoryKiB, Threads: 1}, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Init(repo, slot); err != nil {
		t.Fatal(err)
	}
	k, err := archive.NewKey(mk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// encHeader is the header of snapshot n of volume vol (parent: the last
// of c, bound by its tag when key is given).
func encHeader(t *testing.T, vol string, c *encChain, n int, key *archive.Key) *archive.Header {
	t.Helper()
	h := &archive.Header{
		BlockSize: encBlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: vol, VolumeUUID: "uuid-" + vol, VolumeSize: encVolSize,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: vol + "-snap", Time: time.Date(2026, 11, 20, 1+n, 0, 0, 0, time.UTC)},
		Tool:     "thinback test",
	}
	if len(c.snaps) > 0 {
		prev := c.snaps[len(c.snaps)-1]
		var err error
		if h.Parent, err = record.ParentOf(prev); err != nil {
			t.Fatal(err)
		}
		h.ParentSize = prev.VolumeSize
		if key != nil {
			h.ParentTag = c.trailers[len(c.trailers)-1].Tag
		}
	}
	return h
}

// encData is the volume at snapshot n of a chain with the given seed:
// each snapshot changes a few blocks of the one before.
func encData(prev []byte, n int, seed byte) ([]byte, []archive.Extent) {
	if prev == nil {
		data := make([]byte, encVolSize)
		for i := range data {
			data[i] = byte(i/encBlockSize) ^ seed ^ byte(i*7)
		}
		// A hole, stored as ZERO.
		clear(data[10*encBlockSize : 12*encBlockSize])
		return data, []archive.Extent{
			{Offset: 0, Length: 10 * encBlockSize, Kind: archive.KindData},
			{Offset: 10 * encBlockSize, Length: 2 * encBlockSize, Kind: archive.KindZero},
			{Offset: 12 * encBlockSize, Length: encVolSize - 12*encBlockSize, Kind: archive.KindData},
		}
	}
	data := bytes.Clone(prev)
	ext := []archive.Extent{{Offset: int64(3+n) * encBlockSize, Length: 2 * encBlockSize, Kind: archive.KindData}}
	for _, x := range ext {
		copy(data[x.Offset:x.End()], bytes.Repeat([]byte{0xa0 + byte(n) ^ seed}, int(x.Length)))
	}
	return data, ext
}

// writeEncChain writes a chain of n snapshots of volume vol into repo,
// encrypted under key (plain when nil).
func writeEncChain(t *testing.T, repo catalog.Repository, key *archive.Key, vol string, n int, seed byte) *encChain {
	t.Helper()
	unlock, err := repo.LockVolume(vol)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	c := &encChain{}
	var data []byte
	for i := 0; i < n; i++ {
		var ext []archive.Extent
		data, ext = encData(data, i, seed)
		rec, tr := storetest.Write(t, repo, encHeader(t, vol, c, i, key), data, ext, key)
		c.snaps = append(c.snaps, rec)
		c.images = append(c.images, data)
		c.trailers = append(c.trailers, tr)
	}
	return c
}

// encDirStore makes an encrypted directory store in dir/store holding a
// chain of 3 snapshots of vm1, and the password file dir/pass.
func encDirStore(t *testing.T, dir string) (string, *archive.Key, *encChain) {
	t.Helper()
	store := filepath.Join(dir, "store")
	repo, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	key := encKeys(t, repo)
	c := writeEncChain(t, repo, key, "vm1", 3, 0)
	writePass(t, dir, "pass", encPass)
	return store, key, c
}

func writePass(t *testing.T, dir, name, pass string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// thinbackNoTTY is thinbackEnv run without a controlling terminal (its
// own session), so that a command that would ask for a passphrase at the
// terminal finds none, wherever the tests run.
func thinbackNoTTY(t *testing.T, dir string, env []string, stdin string, args ...string) result {
	t.Helper()
	return runNoTTY(t, dir, stdin, env, args...)
}

// wantFile fails unless path holds want.
func wantFile(t *testing.T, path string, want []byte, what string) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %s differs from what it should hold", what, path)
	}
}

// wantAbsent fails if path exists.
func wantAbsent(t *testing.T, path, what string) {
	t.Helper()
	if _, err := os.Lstat(path); err == nil {
		t.Fatalf("%s: %s was created", what, path)
	}
}

// storedPath is where a directory store keeps a snapshot's file.
func storedPath(store string, sn catalog.Snapshot) string {
	return filepath.Join(store, filepath.FromSlash(sn.File))
}

// restoreInProcess runs restore in this process with key as the store's
// key, so that its error can be compared with errors.Is.
func restoreInProcess(t *testing.T, dir, store, snapshot, target string, key *archive.Key) error {
	t.Helper()
	var log bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: &log, stderr: &log}
	err := runRestore(context.Background(), e, restoreOptions{store: store, volume: "vm1", snapshot: snapshot,
		unlock: func(context.Context, catalog.Repository) (*archive.Key, error) { return key, nil },
		apply:  applyOptions{target: target, state: filepath.Join(dir, "state.db"), quiet: true}})
	t.Logf("restore #%s: %v\n%s", snapshot, err, log.String())
	return err
}
