package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/cmd/internal/storetest"
)

// restore from an encrypted directory store: every snapshot with the
// passphrase (from a file, from $THINBACK_PASSWORD), a snapback file
// that is encrypted and undoes the restore under the store's key; a wrong
// passphrase or none is exit 14 with nothing written, neither a new
// target nor an existing one.
func TestRestoreEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, key, c := encDirStore(t, dir)
	writePass(t, dir, "wrong", "not the passphrase")
	for i, img := range c.images {
		target := filepath.Join(dir, "t"+string(rune('1'+i)))
		r := thinbackNoTTY(t, dir, nil, "", "restore", "vm1", "--store", store, "--snapshot", string(rune('1'+i)), "--to", target, "--password-file", "pass")
		r.want(t, 0, "restore with the passphrase")
		wantFile(t, target, img, "restore")
	}
	// $THINBACK_PASSWORD, and a snapback file: restoring #3 over #1 saves
	// what it overwrites, encrypted, and applying it with the store's
	// key brings #1 back.
	r := thinbackNoTTY(t, dir, []string{"THINBACK_PASSWORD=" + encPass}, "", "restore", "vm1", "--store", store, "--to", "t1", "--snapback", "undo.tbk", "--force")
	r.want(t, 0, "restore with $THINBACK_PASSWORD and --snapback")
	wantFile(t, filepath.Join(dir, "t1"), c.images[2], "restore over #1")
	f, err := os.Open(filepath.Join(dir, "undo.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := archive.NewReader(f).Header()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !h.IsEncrypted() || h.KeyID != key.ID() {
		t.Fatalf("the snapback file is not encrypted under the store's key: encrypted %v, key %s", h.IsEncrypted(), h.KeyID)
	}
	r = thinbackNoTTY(t, dir, nil, "", "apply", "undo.tbk", "--to", "t1", "--store", store, "--password-file", "pass")
	r.want(t, 0, "apply of the snapback file with the store's key")
	wantFile(t, filepath.Join(dir, "t1"), c.images[0], "undo")

	// Wrong or missing secret: exit 14, no target created, an existing
	// one untouched.
	for name, args := range map[string][]string{
		"wrong passphrase": {"--password-file", "wrong"},
		"no passphrase":    nil,
	} {
		r := thinbackNoTTY(t, dir, nil, "", append([]string{"restore", "vm1", "--store", store, "--to", "new"}, args...)...)
		r.want(t, exitKey, name)
		wantAbsent(t, filepath.Join(dir, "new"), name)
		r = thinbackNoTTY(t, dir, nil, "", append([]string{"restore", "vm1", "--store", store, "--to", "t2", "--force"}, args...)...)
		r.want(t, exitKey, name+" over an existing target")
		wantFile(t, filepath.Join(dir, "t2"), c.images[1], name)
	}
}

// restore from an encrypted store on S3 (the real versitygw): the key
// slots and files are read from the bucket.
func TestRestoreEncryptedS3(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repo, err := s3store.Open(ctx, s3.Location{Insecure: true, Host: srv.Addr, Bucket: s3test.DefaultBucket, Prefix: "enc"},
		&s3store.Options{
			S3:     s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache:  t.TempDir(),
			Create: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	key := encKeys(t, repo)
	c := writeEncChain(t, repo, key, "vm1", 3, 0)
	if err := repo.Close(); err != nil {
		t.Fatal(err)
	}
	writePass(t, dir, "pass", encPass)
	writePass(t, dir, "wrong", "not the passphrase")
	env := s3Env(t, srv, filepath.Join(dir, "cache"))
	r := thinbackNoTTY(t, dir, env, "", "restore", "vm1", "--store", srv.Location("enc"), "--to", "t", "--password-file", "pass")
	r.want(t, 0, "restore from S3")
	wantFile(t, filepath.Join(dir, "t"), c.images[2], "restore from S3")
	r = thinbackNoTTY(t, dir, env, "", "restore", "vm1", "--store", srv.Location("enc"), "--snapshot", "1", "--to", "t1", "--password-file", "wrong")
	r.want(t, exitKey, "restore from S3 with a wrong passphrase")
	wantAbsent(t, filepath.Join(dir, "t1"), "wrong passphrase")
}

// apply of encrypted files outside a store: with the store's key
// (--store), with a key file's own key (--key-file, as send -o writes
// them), from a file and from a stream on standard input; without the
// key, exit 14 naming the key id, nothing written; plain files ask for
// no key even when --store names an encrypted store.
func TestApplyEncrypted(t *testing.T) {
	dir := t.TempDir()
	store, key, c := encDirStore(t, dir)
	var files []string
	for _, sn := range c.snaps {
		files = append(files, storedPath(store, sn))
	}
	r := thinbackNoTTY(t, dir, nil, "", append(append([]string{"apply"}, files...), "--to", "t", "--store", store, "--password-file", "pass")...)
	r.want(t, 0, "apply with the store's key")
	wantFile(t, filepath.Join(dir, "t"), c.images[2], "apply of the chain")

	r = thinbackNoTTY(t, dir, nil, "", "apply", files[0], "--to", "nokey")
	r.want(t, exitKey, "apply without a key")
	if !strings.Contains(r.stderr, key.ID().String()) {
		t.Errorf("the refusal does not name the key id %s: %s", key.ID(), r.stderr)
	}
	wantAbsent(t, filepath.Join(dir, "nokey"), "apply without a key")
	// From a pipe: the stream is read as it comes.
	cmd := thinbackCmd(t, dir, "apply", "-", "--to", "nokey-stream")
	raw, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = bytes.NewReader(raw)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err = cmd.Run()
	if code := cmd.ProcessState.ExitCode(); code != exitKey || !strings.Contains(errb.String(), key.ID().String()) {
		t.Fatalf("apply - of an encrypted stream without a key: exit %d (%v), want %d naming the key id\n%s", code, err, exitKey, errb.String())
	}
	wantAbsent(t, filepath.Join(dir, "nokey-stream"), "apply - without a key")

	// A stream encrypted under a key file's own key (send -o with
	// --key-file), from a pipe and from a file on standard input.
	kf := writeKeyFile(t, dir, "cron.key")
	stream := filepath.Join(dir, "stream.tbk")
	sk := keyFileStreamKey(t, kf)
	var b bytes.Buffer
	w := archive.NewWriter(&b, archive.WithKey(sk))
	h := encHeader(t, "vm1", &encChain{}, 0, sk)
	data, ext := encData(nil, 0, 5)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &archive.ListSource{R: bytes.NewReader(data), Extents: ext}, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stream, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd = thinbackCmd(t, dir, "apply", "-", "--to", "from-pipe", "--key-file", kf)
	cmd.Stdin = bytes.NewReader(b.Bytes()) // a pipe
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply - of a key file's stream from a pipe: %v\n%s", err, out)
	}
	wantFile(t, filepath.Join(dir, "from-pipe"), data, "apply - from a pipe")
	r = thinbackNoTTY(t, dir, nil, "stream.tbk", "apply", "-", "--to", "from-file", "--key-file", kf)
	r.want(t, 0, "apply - of a key file's stream from a file")
	wantFile(t, filepath.Join(dir, "from-file"), data, "apply - from a file")
	// The store's key is not the key file's.
	r = thinbackNoTTY(t, dir, nil, "", "apply", "stream.tbk", "--to", "other", "--store", store, "--password-file", "pass")
	r.want(t, exitKey, "apply under another key")
	wantAbsent(t, filepath.Join(dir, "other"), "apply under another key")

	// A plain file with --store naming an encrypted store: no key is
	// unlocked (no passphrase given here), and it applies.
	plain := filepath.Join(dir, "plain.tbk")
	craft(t, plain, encHeader(t, "p", &encChain{}, 0, nil), data)
	r = thinbackNoTTY(t, dir, nil, "", "apply", plain, "--to", "p", "--store", store)
	r.want(t, 0, "apply of a plain file")
	wantFile(t, filepath.Join(dir, "p"), data, "apply of a plain file")
}

// The tamper matrix of an encrypted store, for restore: whoever can
// write to the store but has no key changes its files (and, where that
// is what it takes, its catalog). Each change is refused with its exact
// error before the target is touched: the target's bytes are the same
// after as before.
func TestRestoreEncryptedTamper(t *testing.T) {
	cases := []struct {
		name   string
		tamper func(t *testing.T, store string, c *encChain, key *archive.Key)
		want   error
		code   int
	}{
		{"flip a byte", func(t *testing.T, store string, c *encChain, _ *archive.Key) {
			p := storedPath(store, c.snaps[2])
			b := readAll(t, p)
			b[len(b)/2] ^= 0x40
			writeAll(t, p, b)
		}, archive.ErrChecksum, exitCorrupt}, // the digest chain over the ciphertext
		{"swap two files", func(t *testing.T, store string, c *encChain, _ *archive.Key) {
			p1, p2 := storedPath(store, c.snaps[1]), storedPath(store, c.snaps[2])
			b1, b2 := readAll(t, p1), readAll(t, p2)
			writeAll(t, p1, b2)
			writeAll(t, p2, b1)
		}, record.ErrNotRecorded, exitCorrupt},
		{"replay an older file as the newest", func(t *testing.T, store string, c *encChain, _ *archive.Key) {
			writeAll(t, storedPath(store, c.snaps[2]), readAll(t, storedPath(store, c.snaps[1])))
		}, record.ErrNotRecorded, exitCorrupt},
		{"truncate", func(t *testing.T, store string, c *encChain, _ *archive.Key) {
			p := storedPath(store, c.snaps[2])
			b := readAll(t, p)
			writeAll(t, p, b[:len(b)-100])
		}, record.ErrNotRecorded, exitCorrupt}, // its END is gone: not the file recorded
		{"append", func(t *testing.T, store string, c *encChain, _ *archive.Key) {
			p := storedPath(store, c.snaps[2])
			writeAll(t, p, append(readAll(t, p), make([]byte, 64)...))
		}, record.ErrNotRecorded, exitCorrupt},
		{"change the key id", func(t *testing.T, store string, c *encChain, key *archive.Key) {
			p := storedPath(store, c.snaps[2])
			b := readAll(t, p)
			id := key.ID()
			i := bytes.Index(b, id[:])
			if i < 0 {
				t.Fatal("the key id is not in the file")
			}
			b[i] ^= 1
			writeAll(t, p, b)
		}, archive.ErrChecksum, exitCorrupt}, // the header's digest: never "wrong key"
		{"splice another store's file under the same key, catalog rewritten", func(t *testing.T, store string, c *encChain, key *archive.Key) {
			spliceOther(t, store, c, key)
		}, archive.ErrNotChain, exitChain},
		{"splice another volume's file under the same key name", func(t *testing.T, store string, c *encChain, key *archive.Key) {
			s, err := catalog.OpenStore(store)
			if err != nil {
				t.Fatal(err)
			}
			vm2 := writeEncChain(t, s, key, "vm2", 3, 7)
			s.Close()
			writeAll(t, storedPath(store, c.snaps[2]), readAll(t, storedPath(store, vm2.snaps[2])))
		}, record.ErrNotRecorded, exitCorrupt},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store, key, c := encDirStore(t, dir)
			// The target holds #1, restored before the tampering.
			target := filepath.Join(dir, "target")
			if err := restoreInProcess(t, dir, store, "1", target, key); err != nil {
				t.Fatal(err)
			}
			tc.tamper(t, store, c, key)
			before := readAll(t, target)
			snap := "3"
			err := restoreInProcess(t, dir, store, snap, target, key)
			if !errors.Is(err, tc.want) {
				t.Fatalf("restore after the tampering: %v, want %v", err, tc.want)
			}
			if code := exitCode(err); code != tc.code {
				t.Errorf("exit code %d, want %d", code, tc.code)
			}
			if !bytes.Equal(readAll(t, target), before) {
				t.Fatal("the target was written to")
			}
		})
	}
}

// spliceOther puts into store, as the newest snapshot of vm1 after #2,
// an incremental written under the same key into another store, from a
// full that has #2's snapshot id there but was a block longer; the
// catalog record is rewritten to match the file, as whoever can write to
// the store can. Every record check passes; the chain's sizes do not
// (and the parent binding under the key would not either).
func spliceOther(t *testing.T, store string, c *encChain, key *archive.Key) {
	t.Helper()
	other, err := catalog.OpenStore(filepath.Join(filepath.Dir(store), "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// other's chain: #1 with the snapshot id of this store's #2 and a
	// block more, then an incremental bound to it that shrinks back.
	oc := &encChain{}
	h := encHeader(t, "vm1", oc, 0, key)
	if h.Snapshot, err = record.ParentOf(c.snaps[1]); err != nil {
		t.Fatal(err)
	}
	data := append(bytes.Clone(c.images[1]), bytes.Repeat([]byte{9}, encBlockSize)...)
	h.VolumeSize = int64(len(data))
	ext := []archive.Extent{{Offset: 0, Length: h.VolumeSize, Kind: archive.KindData}}
	unlock, err := other.LockVolume("vm1")
	if err != nil {
		t.Fatal(err)
	}
	rec, tr := storetest.Write(t, other, h, data, ext, key)
	unlock()
	oc.snaps, oc.trailers, oc.images = append(oc.snaps, rec), append(oc.trailers, tr), append(oc.images, data)
	ih := encHeader(t, "vm1", oc, 1, key)
	data2, ext2 := encData(data[:encVolSize], 1, 9)
	unlock, err = other.LockVolume("vm1")
	if err != nil {
		t.Fatal(err)
	}
	irec, _ := storetest.Write(t, other, ih, data2, ext2, key)
	unlock()
	b := readAll(t, filepath.Join(other.Dir(), filepath.FromSlash(irec.File)))

	// Replace this store's #3 by it: file and record.
	s, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	old := c.snaps[2]
	if err := s.Update(func(tx *catalog.Tx) error { return tx.DeleteSnapshot(old.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(storedPath(store, old)); err != nil {
		t.Fatal(err)
	}
	irec.Seq = old.Seq
	irec.File = old.File[:strings.LastIndex(old.File, "/")+1] + filepath.Base(irec.File)
	writeAll(t, filepath.Join(store, filepath.FromSlash(irec.File)), b)
	if err := s.Update(func(tx *catalog.Tx) error { return tx.PutSnapshot(&irec) }); err != nil {
		t.Fatal(err)
	}
	c.snaps[2] = irec
}

// writeKeyFile creates a key file dir/name.
func writeKeyFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	kf, err := keys.CreateKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	kf.Destroy()
	return p
}

// keyFileStreamKey is the key a key file's streams are encrypted under.
func keyFileStreamKey(t *testing.T, path string) *archive.Key {
	t.Helper()
	kf, err := keys.ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer kf.Destroy()
	mk, err := kf.StreamKey()
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Destroy()
	k, err := archive.NewKey(mk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func readAll(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeAll(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
