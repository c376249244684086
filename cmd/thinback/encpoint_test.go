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

	// A damaged file is found without the key (a byte of its header: a
	// sealed payload's bytes are covered by no keyless digest).
	p := storedPath(store, c.snaps[1])
	b := readAll(t, p)
	b[40] ^= 1
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

// inspect of an encrypted file: without a key, the header (encrypted,
// key id, AEAD) and the structure, saying the contents were not checked,
// exit 0, from a file and from standard input; a damaged one is exit 3;
// with the store's key, the records too.
func TestInspectEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, key, c := encDirStore(t, dir)
	f := storedPath(store, c.snaps[1])
	writeAll(t, filepath.Join(dir, "f.tbk"), readAll(t, f))
	for _, stdin := range []string{"", "f.tbk"} {
		args := []string{"inspect", "f.tbk"}
		if stdin != "" {
			args = []string{"inspect", "-"}
		}
		r := thinbackNoTTY(t, dir, nil, stdin, args...)
		r.want(t, 0, "inspect without the key")
		for _, want := range []string{"encrypted", key.ID().String(), "AES-256-GCM", "structure only", "no key was given", "sealed"} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("inspect %s without the key does not say %q:\n%s", args[1], want, r.stdout)
			}
		}
	}
	r := thinbackNoTTY(t, dir, nil, "", "inspect", "--json", "f.tbk")
	r.want(t, 0, "inspect --json without the key")
	if !strings.Contains(r.stdout, `"structure_only": true`) || !strings.Contains(r.stdout, `"key_id": "`+key.ID().String()) {
		t.Errorf("inspect --json without the key:\n%s", r.stdout)
	}
	r = thinbackNoTTY(t, dir, nil, "", "inspect", "--records", "f.tbk", "--store", store, "--password-file", "pass")
	r.want(t, 0, "inspect with the key")
	if !strings.Contains(r.stdout, "every record and block") || !strings.Contains(r.stdout, "DATA") || strings.Contains(r.stdout, "structure only") {
		t.Errorf("inspect with the key does not show the records:\n%s", r.stdout)
	}
	b := readAll(t, filepath.Join(dir, "f.tbk"))
	b[len(b)/2] ^= 1
	writeAll(t, filepath.Join(dir, "f.tbk"), b)
	thinbackNoTTY(t, dir, nil, "", "inspect", "f.tbk").want(t, exitCorrupt, "inspect of a damaged file without the key")
}

// list needs no key, and marks an encrypted store with its key id.
func TestListEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, key, _ := encDirStore(t, dir)
	r := thinbackNoTTY(t, dir, nil, "", "list", "--store", store)
	r.want(t, 0, "list of an encrypted store")
	if !strings.Contains(r.stdout, "encrypted store: master key id "+key.ID().String()) || !strings.Contains(r.stdout, "vm1") {
		t.Errorf("list does not mark the store encrypted:\n%s", r.stdout)
	}
	r = thinbackNoTTY(t, dir, nil, "", "list", "--json", "--store", store)
	r.want(t, 0, "list --json")
	if !strings.Contains(r.stdout, `"encrypted": true`) || !strings.Contains(r.stdout, `"key_id": "`+key.ID().String()) {
		t.Errorf("list --json does not mark the store encrypted:\n%s", r.stdout)
	}
	plain := filepath.Join(dir, "plain")
	p, err := catalog.OpenStore(plain)
	if err != nil {
		t.Fatal(err)
	}
	writeEncChain(t, p, nil, "vm1", 1, 0)
	p.Close()
	r = thinbackNoTTY(t, dir, nil, "", "list", "--json", "--store", plain)
	if strings.Contains(r.stdout, "encrypted") {
		t.Errorf("a plain store is marked encrypted:\n%s", r.stdout)
	}
}

// verify FILE...: an encrypted stream with its key (--key-file's own)
// is read in full; without one, its structure, saying so; a plain file
// beside it is read in full either way; a damaged encrypted file is
// found without the key.
func TestVerifyFilesEncrypted(t *testing.T) {
	dir := t.TempDir()
	kf := writeKeyFile(t, dir, "k")
	data, ext := encData(nil, 0, 3)
	enc := filepath.Join(dir, "enc.tbk")
	var b bytes.Buffer
	sk := keyFileStreamKey(t, kf)
	w := archive.NewWriter(&b, archive.WithKey(sk))
	if err := w.WriteHeader(encHeader(t, "vm1", &encChain{}, 0, sk)); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &archive.ListSource{R: bytes.NewReader(data), Extents: ext}, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	writeAll(t, enc, b.Bytes())
	plain := filepath.Join(dir, "plain.tbk")
	craft(t, plain, encHeader(t, "p", &encChain{}, 0, nil), data)
	r := thinbackNoTTY(t, dir, nil, "", "verify", enc, plain, "--key-file", kf)
	r.want(t, 0, "verify of files with the key")
	if strings.Contains(r.stdout, "not checked") {
		t.Errorf("with the key:\n%s", r.stdout)
	}
	r = thinbackNoTTY(t, dir, nil, "", "verify", enc, plain)
	r.want(t, 0, "verify of files without the key")
	if !strings.Contains(r.stdout, "contents not checked: 1 file(s) are encrypted and no key was given") {
		t.Errorf("without the key:\n%s", r.stdout)
	}
	thinbackNoTTY(t, dir, nil, "", "verify", enc, "--key-file", writeKeyFile(t, dir, "other")).want(t, exitVerify, "verify under another key file")
	// A byte of the header: a sealed payload's bytes are covered by no
	// keyless digest (docs/FORMAT.md "Encryption"), only by the key.
	bad := readAll(t, enc)
	bad[40] ^= 1
	writeAll(t, filepath.Join(dir, "bad.tbk"), bad)
	thinbackNoTTY(t, dir, nil, "", "verify", "bad.tbk").want(t, exitVerify, "verify of a damaged encrypted file without the key")
}
