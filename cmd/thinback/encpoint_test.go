package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
)

// cat of an encrypted store: every point in time with the passphrase;
// a wrong one or none is exit 14 and no output file.
func TestCatEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, _, c := encDirStore(t, dir)
	writePass(t, dir, "wrong", "not the passphrase")
	for i, img := range c.images {
		out := filepath.Join(dir, "img"+string(rune('1'+i)))
		thinbackNoTTY(t, dir, nil, "", "cat", "vm1", "--store", store, "--snapshot", string(rune('1'+i)), "-o", out, "--password-file", "pass").want(t, 0, "cat")
		wantFile(t, out, img, "cat")
	}
	for name, args := range map[string][]string{"wrong passphrase": {"--password-file", "wrong"}, "no passphrase": nil} {
		r := thinbackNoTTY(t, dir, nil, "", append([]string{"cat", "vm1", "--store", store, "-o", "x"}, args...)...)
		r.want(t, exitKey, "cat with a "+name)
		wantAbsent(t, filepath.Join(dir, "x"), name)
	}
}

// verify of an encrypted store: with the key, every record; without it
// (no secret, or --no-key), the structure, plainly saying the contents
// were not checked, exit 0 while sound and 10 once a file is damaged; a
// wrong passphrase is exit 14. verify --device compares a device with a
// point in time under the key, and needs it.
func TestVerifyEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, _, c := encDirStore(t, dir)
	writePass(t, dir, "wrong", "not the passphrase")
	const unchecked = "contents not checked: the store is encrypted and no key was given"

	r := thinbackNoTTY(t, dir, nil, "", "verify", "--store", store, "--password-file", "pass")
	r.want(t, 0, "verify with the key")
	if strings.Contains(r.stdout, unchecked) || strings.Contains(r.stdout, "structure only") {
		t.Errorf("verify with the key says it did not check the contents:\n%s", r.stdout)
	}
	for _, args := range [][]string{nil, {"--no-key"}, {"--no-key", "--quiet"}} {
		r = thinbackNoTTY(t, dir, nil, "", append([]string{"verify", "--store", store}, args...)...)
		r.want(t, 0, "verify without the key")
		if !strings.Contains(r.stdout, unchecked) {
			t.Errorf("verify %q without the key does not say the contents were not checked:\n%s", args, r.stdout)
		}
	}
	thinbackNoTTY(t, dir, nil, "", "verify", "--store", store, "--password-file", "wrong").want(t, exitKey, "verify with a wrong passphrase")

	// verify --device.
	dev := filepath.Join(dir, "dev")
	writeAll(t, dev, c.images[1])
	thinbackNoTTY(t, dir, nil, "", "verify", "vm1", "--store", store, "--snapshot", "2", "--device", dev, "--password-file", "pass").want(t, 0, "verify --device")
	changed := bytes.Clone(c.images[1])
	changed[5*encBlockSize+10] ^= 1
	writeAll(t, dev, changed)
	r = thinbackNoTTY(t, dir, nil, "", "verify", "vm1", "--store", store, "--snapshot", "2", "--device", dev, "--password-file", "pass")
	r.want(t, exitVerify, "verify --device of a changed device")
	if !strings.Contains(r.stdout, "DIFF") {
		t.Errorf("the difference is not shown:\n%s", r.stdout)
	}
	thinbackNoTTY(t, dir, nil, "", "verify", "vm1", "--store", store, "--snapshot", "2", "--device", dev).want(t, exitKey, "verify --device without the key")

	// A damaged file is found without the key.
	p := storedPath(store, c.snaps[1])
	b := readAll(t, p)
	b[len(b)/2] ^= 1
	writeAll(t, p, b)
	r = thinbackNoTTY(t, dir, nil, "", "verify", "--store", store, "--no-key")
	r.want(t, exitVerify, "verify without the key of a damaged store")
	if !strings.Contains(r.stdout, "BAD  vm1 #2") {
		t.Errorf("the damaged file is not named:\n%s", r.stdout)
	}
}

// serve of an encrypted store: the store's key unlocked once, every
// point in time read back through NBD as it was.
func TestServeEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, key, c := encDirStore(t, dir)
	sock := filepath.Join(dir, "nbd.sock")
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: io.Discard}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, e, serveOptions{store: store, addr: "unix:" + sock, quiet: true,
			unlock:  func(context.Context, catalog.Repository) (*archive.Key, error) { return key, nil },
			started: func(*nbd.Server, *nbd.Shared, *archive.SnapshotCache) { close(started) }})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	for i, name := range []string{"vm1@1", "vm1@2", "vm1"} {
		k := nbdtest.Dial(t, "unix", sock)
		if final := k.Go(name); final != nbd.RepAck {
			t.Fatalf("NBD_OPT_GO %s: reply %#x", name, final)
		}
		want := c.images[i] // vm1: the newest
		k.Request(nbd.CmdRead, 1, 0, uint32(len(want)), nil)
		if _, code, b := k.Reply(uint32(len(want))); code != 0 || !bytes.Equal(b, want) {
			t.Fatalf("%s: code %d, the image read differs", name, code)
		}
	}
}

// serve and mount refuse to start on an encrypted store without its key
// (exit 14), before they listen or mount.
func TestServeMountEncryptedNoKey(t *testing.T) {
	dir := t.TempDir()
	store, _, _ := encDirStore(t, dir)
	r := thinbackNoTTY(t, dir, nil, "", "serve", "--store", store, "--nbd", "unix:"+filepath.Join(dir, "s.sock"))
	r.want(t, exitKey, "serve without the key")
	wantAbsent(t, filepath.Join(dir, "s.sock"), "serve without the key")
	if err := os.Mkdir(filepath.Join(dir, "mnt"), 0o700); err != nil {
		t.Fatal(err)
	}
	r = thinbackNoTTY(t, dir, nil, "", "mount", "--store", store, filepath.Join(dir, "mnt"))
	r.want(t, exitKey, "mount without the key")
}

// mount of an encrypted store: each point in time reads back through the
// FUSE tree as it was (where FUSE can mount: as root; TestGuest runs it
// in the guest).
func TestMountEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, _, c := encDirStore(t, dir)
	m := startMount(t, dir, store, "--password-file", filepath.Join(dir, "pass"))
	for i, img := range c.images {
		matches, err := filepath.Glob(filepath.Join(m.dir, "vm1", string(rune('1'+i))+"-*.img"))
		if err != nil || len(matches) != 1 {
			t.Fatalf("#%d: %v %v", i+1, matches, err)
		}
		wantFile(t, matches[0], img, "mount")
	}
	wantFile(t, filepath.Join(m.dir, "vm1", "latest.img"), c.images[2], "mount latest.img")
	m.stop(t, syscall.SIGINT)
}
