package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/storetest"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
)

// The commands that write into an encrypted store or stream: backup,
// send, receive and catalog rebuild, run as the real binary against real
// stores (a directory, and a bucket of the real S3 server).

var encSeed = flag.Int64("enc-seed", 0, "seed of the images of the encryption tests (0: from the clock)")

// encImageSeed returns the seed of the test's images, printed so that a
// failure can be replayed with -enc-seed or $THINBACK_SEED.
func encImageSeed(t *testing.T) int64 {
	seed := *encSeed
	if s := os.Getenv("THINBACK_SEED"); seed == 0 && s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("THINBACK_SEED: %v", err)
		}
	}
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("images from seed %d (replay with -enc-seed %d)", seed, seed)
	return seed
}

// encPassphrase is the passphrase of the stores these tests encrypt.
const encPassphrase = "correct horse battery staple"

// withPassphraseSlot makes repo an encrypted store of the master key mk
// (a new one when nil), with one passphrase slot of pass, as thinback init
// --encrypt would; it returns the key its files are written under.
func withPassphraseSlot(t *testing.T, repo catalog.Repository, mk *keys.MasterKey, pass string) (*keys.MasterKey, *archive.Key) {
	t.Helper()
	if mk == nil {
		var err error
		if mk, err = keys.NewMasterKey(); err != nil {
			t.Fatal(err)
		}
	}
	slot, err := keys.NewPassphraseSlot(mk, []byte(pass), keys.Argon2Params{Time: 1, MemoryKiB: keys.MinArgon2MemoryKiB, Threads: 1}, "")
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
	return mk, k
}

// encStore is a store these tests write into with the binary and read
// back with the library.
type encStore struct {
	loc string   // as the commands are given it
	env []string // the environment the commands need for it
	// open opens it with the library (a fresh cache for an S3 store).
	open func(t *testing.T) catalog.Repository
	// raw are the files that hold the store's bytes: a directory's, or
	// the S3 server's back end's of the store's prefix.
	raw string
}

// newDirStore is an empty store in a directory.
func newDirStore(t *testing.T) *encStore {
	dir := filepath.Join(t.TempDir(), "store")
	st := &encStore{loc: dir, raw: dir}
	st.open = func(t *testing.T) catalog.Repository {
		t.Helper()
		s, err := catalog.OpenStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return st
}

// newS3Store is an empty store under prefix of srv's bucket.
func newS3Store(t *testing.T, srv *s3test.Server, prefix string) *encStore {
	st := &encStore{loc: srv.Location(prefix), env: s3Env(t, srv, t.TempDir()), raw: filepath.Join(srv.Dir, srv.Bucket, prefix)}
	st.open = func(t *testing.T) catalog.Repository {
		t.Helper()
		loc, err := s3.ParseLocation(st.loc)
		if err != nil {
			t.Fatal(err)
		}
		s, err := s3store.Open(context.Background(), loc, &s3store.Options{
			S3:    s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache: t.TempDir(), Create: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return st
}

// run runs thinback in dir with the store's environment, the extra
// variables env, and standard input from the file stdin ("" for none),
// in a session of its own: with no terminal to ask a passphrase at.
func (st *encStore) run(t *testing.T, dir, stdin string, env []string, args ...string) result {
	t.Helper()
	return runNoTTY(t, dir, stdin, append(slices.Clone(st.env), env...), args...)
}

// passEnv is the environment that unlocks a store with pass.
func passEnv(pass string) []string { return []string{"THINBACK_PASSWORD=" + pass} }

// marked is an image whose distinctive 4 KiB patterns (random, so that
// compression keeps them as they are) are what must never be found in
// a store in the clear.
type marked struct {
	rnd      *rand.Rand
	data     []byte
	patterns [][]byte
}

func newMarked(seed int64, size int) *marked {
	m := &marked{rnd: rand.New(rand.NewSource(seed)), data: make([]byte, size)}
	// Text that compresses, with zero runs between.
	for off := 0; off < size; off += 64 << 10 {
		if m.rnd.Intn(3) > 0 {
			copy(m.data[off:min(off+64<<10, size)], bytes.Repeat([]byte(fmt.Sprintf("block %d of a disk image\n", off)), 64<<10/20))
		}
	}
	return m
}

// mark writes a new pattern at off.
func (m *marked) mark(off int) {
	p := make([]byte, 4096)
	m.rnd.Read(p)
	copy(m.data[off:], p)
	m.patterns = append(m.patterns, p)
}

// leaks returns the files under root that hold one of the patterns (in
// full, or its first 64 bytes).
func (m *marked) leaks(t *testing.T, root string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, p := range m.patterns {
			if bytes.Contains(b, p[:64]) {
				found = append(found, fmt.Sprintf("%s (pattern %d)", path, i))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// restoreWithKey restores every snapshot of volume from the store with the
// library, under key, and returns the images.
func restoreWithKey(t *testing.T, repo catalog.Repository, volume string, key *archive.Key) [][]byte {
	t.Helper()
	var snaps []catalog.Snapshot
	if err := repo.View(func(tx *catalog.Tx) error {
		var err error
		snaps, err = tx.Snapshots(volume)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	var images [][]byte
	for i := range snaps {
		var inputs []restore.Input
		for _, rec := range snaps[:i+1] {
			f, err := repo.OpenDelta(rec.File)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			h, err := archive.NewReader(f, archive.WithKey(key)).Header()
			if err != nil {
				t.Fatalf("%s: %v", rec.File, err)
			}
			if !h.IsEncrypted() || h.KeyID != key.ID() || h.IsFull() == (h.ParentTag != archive.Digest{}) {
				t.Fatalf("%s: encrypted %v under %s, parent tag %x: want encrypted under %s, a parent tag on incrementals only",
					rec.File, h.IsEncrypted(), h.KeyID, h.ParentTag[:4], key.ID())
			}
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			inputs = append(inputs, restore.Input{Name: rec.File, R: f})
		}
		target := filepath.Join(t.TempDir(), "restored.img")
		tg, err := restore.OpenTarget(target, restore.TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = restore.Apply(context.Background(), tg, inputs, restore.Options{Key: key})
		if cerr := tg.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatalf("restoring #%d with the key: %v", snaps[i].Seq, err)
		}
		b, err := os.ReadFile(target)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, b)
	}
	return images
}

// An image is backed up into an encrypted store (a directory, and a
// bucket of the real S3 server): a full and two incrementals, each
// restored byte for byte with the library under the store's key. No file
// of the store, and no object of the bucket, holds a byte of the image's
// distinctive blocks; the same backups into a store in the clear do
// (which shows the search finds them).
func TestEncryptedBackupRoundTrip(t *testing.T) {
	seed := encImageSeed(t)
	srv := s3test.Start(t)
	for _, tc := range []struct {
		name      string
		store     func(t *testing.T) *encStore
		encrypted bool
	}{
		{"dir", newDirStore, true},
		{"s3", func(t *testing.T) *encStore { return newS3Store(t, srv, "enc") }, true},
		{"dir in the clear", newDirStore, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			st := tc.store(t)
			var key *archive.Key
			if tc.encrypted {
				_, key = withPassphraseSlot(t, st.open(t), nil, encPassphrase)
			}
			img := filepath.Join(dir, "disk.img")
			m := newMarked(seed, 2<<20)
			var states [][]byte
			backup := func(kind string) {
				t.Helper()
				if err := os.WriteFile(img, m.data, 0o600); err != nil {
					t.Fatal(err)
				}
				states = append(states, slices.Clone(m.data))
				var env []string
				if tc.encrypted {
					env = passEnv(encPassphrase)
				}
				r := st.run(t, dir, "", env, "backup", "--store", st.loc, "--file", img)
				r.want(t, 0, "backup")
				if !strings.Contains(r.stderr, kind) {
					t.Fatalf("backup made no %s: %s", kind, r.stderr)
				}
			}
			m.mark(128 << 10)
			m.mark(1 << 20)
			backup("full")
			m.mark(640 << 10)
			backup("incremental")
			m.mark(1<<20 + 64<<10)
			copy(m.data[0:], make([]byte, 64<<10)) // and a block zeroed
			backup("incremental")

			leaks := m.leaks(t, st.raw)
			if !tc.encrypted {
				if len(leaks) == 0 {
					t.Fatal("the patterns are not found in a store in the clear: the search finds nothing")
				}
				return
			}
			if len(leaks) > 0 {
				t.Errorf("the encrypted store holds the image's blocks in the clear: %s", strings.Join(leaks, ", "))
			}
			got := restoreWithKey(t, st.open(t), "disk.img", key)
			if len(got) != len(states) {
				t.Fatalf("%d snapshots restored, want %d", len(got), len(states))
			}
			for i := range got {
				if !bytes.Equal(got[i], states[i]) {
					t.Errorf("snapshot #%d does not restore byte for byte under the key", i+1)
				}
			}
		})
	}
}

// storeState is every file of a directory store and its bytes' digest,
// and its catalog's records (catalog.db's bytes change as bbolt opens it),
// to tell whether a command changed anything.
func storeState(t *testing.T, root string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if filepath.Base(path) == "catalog.db" {
			files["catalog records"] = catalogRecords(t, root)
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files[strings.TrimPrefix(path, root)] = fmt.Sprintf("%x", sha256.Sum256(b))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// catalogRecords are the volumes and snapshots of the directory store
// root's catalog, as text.
func catalogRecords(t *testing.T, root string) string {
	t.Helper()
	repo, err := catalog.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	defer repo.Close()
	var out string
	if err := repo.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		snaps, err := tx.AllSnapshots()
		out = fmt.Sprintf("%+v\n%+v", vols, snaps)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// unchanged fails unless root is as before.
func unchanged(t *testing.T, what, root string, before map[string]string) {
	t.Helper()
	after := storeState(t, root)
	for f, d := range after {
		if before[f] != d {
			t.Errorf("%s: the store's %s was written", what, f)
		}
	}
	for f := range before {
		if _, ok := after[f]; !ok {
			t.Errorf("%s: the store's %s was removed", what, f)
		}
	}
}

// plantBase replaces the delta file of rec in the directory store repo
// with one of the same snapshot whose data is someone else's, encrypted
// under key (in the clear when nil), and records its digest as the
// store's owner of the bucket could: the catalog is in the store too.
func plantBase(t *testing.T, repo *catalog.Store, rec catalog.Snapshot, key *archive.Key) {
	t.Helper()
	f, err := repo.OpenDelta(rec.File)
	if err != nil {
		t.Fatal(err)
	}
	h, err := archive.NewReader(f).Header()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	planted := &archive.Header{
		BlockSize: h.BlockSize, Codec: h.Codec, Hash: h.Hash,
		VolumeName: h.VolumeName, VolumeUUID: h.VolumeUUID, VolumeSize: h.VolumeSize,
		Snapshot: h.Snapshot, Parent: h.Parent, ParentSize: h.ParentSize, Tool: "planted", Attrs: h.Attrs,
	}
	data := bytes.Repeat([]byte("someone else's data\n"), int(h.VolumeSize)/20+1)[:h.VolumeSize]
	var b bytes.Buffer
	w := archive.NewWriter(&b, archive.WithKey(key))
	if err := w.WriteHeader(planted); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, &archive.ListSource{R: bytes.NewReader(data),
		Extents: []archive.Extent{{Offset: 0, Length: h.VolumeSize, Kind: archive.KindData}}}, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(repo.Dir(), rec.File)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o444); err != nil {
		t.Fatal(err)
	}
	if err := repo.Update(func(tx *catalog.Tx) error {
		r, err := tx.Snapshot(rec.ID)
		if err != nil {
			return err
		}
		r.FileDigest, r.FileSize = fmt.Sprintf("%x", w.Trailer().Digest), int64(b.Len())
		r.LVUUID = "lv-uuid-planted" // for NewestBase below
		return tx.PutSnapshot(&r)
	}); err != nil {
		t.Fatal(err)
	}
}

// A backup into an encrypted store unlocks the key before anything else:
// a wrong passphrase, or none, exits with 14 having run no --pre command
// (which comes just before the snapshot) and written nothing. The base
// of an incremental must be a file of the store's key: one planted in
// its place, in the clear or under another key, with the catalog made
// to agree, stops the backup the same way, with the file's error, for
// an image and for an LV's base (NewestBase).
func TestEncryptedBackupRefused(t *testing.T) {
	seed := encImageSeed(t)
	dir := t.TempDir()
	st := newDirStore(t)
	_, key := withPassphraseSlot(t, st.open(t), nil, encPassphrase)
	m := newMarked(seed, 1<<20)
	m.mark(0)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, m.data, 0o600); err != nil {
		t.Fatal(err)
	}
	st.run(t, dir, "", passEnv(encPassphrase), "backup", "--store", st.loc, "--file", img).want(t, 0, "the first backup")
	m.mark(512 << 10)
	if err := os.WriteFile(img, m.data, 0o600); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(dir, "pre-ran")
	refused := func(t *testing.T, env []string, code int, says ...string) {
		t.Helper()
		before := storeState(t, st.raw)
		r := st.run(t, dir, "", env, "backup", "--store", st.loc, "--file", img, "--pre", "touch "+marker)
		r.want(t, code, "backup")
		for _, s := range says {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("the error does not say %q: %s", s, r.stderr)
			}
		}
		if _, err := os.Stat(marker); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the --pre command ran (%v): a snapshot would have been taken", err)
		}
		unchanged(t, "a refused backup", st.raw, before)
	}
	t.Run("wrong passphrase", func(t *testing.T) {
		refused(t, passEnv("not the passphrase"), exitKey, "passphrase")
	})
	t.Run("no secret", func(t *testing.T) {
		refused(t, nil, exitKey, "is encrypted", "THINBACK_PASSWORD")
	})

	other, err := archive.NewKey(bytes.Repeat([]byte{7}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		key  *archive.Key
		code int
		says []string
	}{
		{"planted in the clear", nil, exitCorrupt, []string{"not a file this store's key wrote", "is not encrypted"}},
		{"planted under another key", other, exitKey, []string{"not a file this store's key wrote", other.ID().String(), key.ID().String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo, err := catalog.OpenStore(st.loc)
			if err != nil {
				t.Fatal(err)
			}
			var rec catalog.Snapshot
			if err := repo.View(func(tx *catalog.Tx) error {
				rec, err = tx.Latest("disk.img")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			plantBase(t, repo, rec, tc.key)
			// An LV's backup checks its base the same way.
			lv := []*lvmthin.LV{{VG: "vg0", Name: "disk.thinback.1", UUID: "lv-uuid-planted"}}
			base, _, _, _, err := backup.NewestBase(repo, key, "disk.img", lv, "the pool")
			if base != nil || err == nil || exitCode(err) != tc.code {
				t.Errorf("NewestBase of a planted base: %v, %v (exit %d), want exit %d", base, err, exitCode(err), tc.code)
			}
			if err := repo.Close(); err != nil {
				t.Fatal(err)
			}
			refused(t, passEnv(encPassphrase), tc.code, tc.says...)
		})
	}
}

// writeStdout writes a run's standard output to path.
func writeStdout(t *testing.T, r result, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
}

// headerOf reads the header of the delta file at path, without a key.
func headerOf(t *testing.T, path string) *archive.Header {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := archive.NewReader(f).Header()
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return h
}

// send -o FILE and -o - with --key-file write a stream encrypted under
// the key file's own key, which receive --to decrypts with the same key
// file, byte for byte; with another key file, or none, receive exits
// with 14 naming the stream's key and creates no target. A send with
// --store is encrypted under that store's key, and receive --store keeps
// it as it is in another store of the same key (a directory, and a
// bucket of the real S3 server): it restores under the key. A stream
// under another key, or in the clear, is refused with nothing recorded.
func TestEncryptedStreams(t *testing.T) {
	seed := encImageSeed(t)
	dir := t.TempDir()
	m := newMarked(seed, 1<<20)
	m.mark(64 << 10)
	m.mark(700 << 10)
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), m.data, 0o600); err != nil {
		t.Fatal(err)
	}
	kf, other := filepath.Join(dir, "stream.key"), filepath.Join(dir, "other.key")
	var streamID archive.KeyID
	for _, p := range []string{kf, other} {
		f, err := keys.CreateKeyFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if p == kf {
			mk, err := f.StreamKey()
			if err != nil {
				t.Fatal(err)
			}
			streamID = mk.ID()
		}
		f.Destroy()
	}

	runNoTTY(t, dir, "", nil, "send", "--file", "disk.img", "-o", "file.tbk", "--key-file", kf).want(t, 0, "send -o FILE")
	r := runNoTTY(t, dir, "", nil, "send", "--file", "disk.img", "-o", "-", "--key-file", kf)
	r.want(t, 0, "send -o -")
	writeStdout(t, r, filepath.Join(dir, "pipe.tbk"))
	runNoTTY(t, dir, "", nil, "send", "--file", "disk.img", "-o", "plain.tbk").want(t, 0, "send in the clear")
	for _, name := range []string{"file.tbk", "pipe.tbk"} {
		if h := headerOf(t, filepath.Join(dir, name)); !h.IsEncrypted() || h.KeyID != streamID {
			t.Errorf("%s: encrypted %v under %s, want under the key file's %s", name, h.IsEncrypted(), h.KeyID, streamID)
		}
	}
	if h := headerOf(t, filepath.Join(dir, "plain.tbk")); h.IsEncrypted() {
		t.Error("send without a key encrypted its file")
	}
	if leaks := m.leaks(t, filepath.Join(dir, "file.tbk")); len(leaks) > 0 {
		t.Errorf("an encrypted stream holds the image's blocks: %s", leaks)
	}
	if leaks := m.leaks(t, filepath.Join(dir, "pipe.tbk")); len(leaks) > 0 {
		t.Errorf("an encrypted stream holds the image's blocks: %s", leaks)
	}

	t.Run("receive --to", func(t *testing.T) {
		for _, name := range []string{"file.tbk", "pipe.tbk"} {
			target := filepath.Join(dir, "to-"+name+".img")
			runNoTTY(t, dir, name, nil, "receive", "--to", target, "--key-file", kf).want(t, 0, "receive --to with the key file")
			if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, m.data) {
				t.Errorf("%s does not receive byte for byte (%v)", name, err)
			}
		}
		for _, tc := range []struct {
			name string
			args []string
			says []string
		}{
			{"another key file", []string{"--key-file", other}, []string{streamID.String(), "wrong key"}},
			{"no key", nil, []string{streamID.String(), "no key was given"}},
		} {
			target := filepath.Join(dir, "refused.img")
			r := runNoTTY(t, dir, "file.tbk", nil, append([]string{"receive", "--to", target}, tc.args...)...)
			r.want(t, exitKey, "receive --to with "+tc.name)
			for _, s := range tc.says {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("%s: the error does not say %q", tc.name, s)
				}
			}
			if _, err := os.Stat(target); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: the target was created (%v)", tc.name, err)
			}
		}
	})

	srv := s3test.Start(t)
	src := newDirStore(t)
	mk, key := withPassphraseSlot(t, src.open(t), nil, encPassphrase)
	// A first backup makes the source store's catalog.
	src.run(t, dir, "", passEnv(encPassphrase), "backup", "--store", src.loc, "--file", "disk.img").want(t, 0, "backup")
	src.run(t, dir, "", passEnv(encPassphrase), "send", "--file", "disk.img", "-o", "store.tbk", "--store", src.loc).want(t, 0, "send --store")
	if h := headerOf(t, filepath.Join(dir, "store.tbk")); !h.IsEncrypted() || h.KeyID != key.ID() {
		t.Fatalf("send --store: encrypted %v under %s, want under the store's %s", h.IsEncrypted(), h.KeyID, key.ID())
	}
	sent, err := os.ReadFile(filepath.Join(dir, "store.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) *encStore
	}{
		{"dir", newDirStore},
		{"s3", func(t *testing.T) *encStore { return newS3Store(t, srv, "received") }},
	} {
		t.Run("receive --store "+tc.name, func(t *testing.T) {
			dst := tc.store(t)
			withPassphraseSlot(t, dst.open(t), mk, "another passphrase, the same key")
			env := passEnv("another passphrase, the same key")
			before := storeState(t, dst.raw)
			for _, bad := range []struct {
				stream string
				code   int
				says   []string
			}{
				{"file.tbk", exitKey, []string{streamID.String(), key.ID().String()}},
				{"plain.tbk", exitCorrupt, []string{"not encrypted", key.ID().String()}},
			} {
				r := dst.run(t, dir, bad.stream, env, "receive", "--store", dst.loc)
				r.want(t, bad.code, "receive --store of "+bad.stream)
				for _, s := range bad.says {
					if !strings.Contains(r.stderr, s) {
						t.Errorf("%s: the error does not say %q", bad.stream, s)
					}
				}
			}
			if tc.name == "dir" {
				unchanged(t, "a refused receive", dst.raw, before)
			}
			dst.run(t, dir, "store.tbk", env, "receive", "--store", dst.loc).want(t, 0, "receive --store")
			repo := dst.open(t)
			var snaps []catalog.Snapshot
			if err := repo.View(func(tx *catalog.Tx) error {
				snaps, err = tx.Snapshots("disk.img")
				return err
			}); err != nil || len(snaps) != 1 {
				t.Fatalf("the store records %d snapshots (%v), want the one received", len(snaps), err)
			}
			f, err := repo.OpenDelta(snaps[0].File)
			if err != nil {
				t.Fatal(err)
			}
			kept, err := io.ReadAll(f)
			f.Close()
			if err != nil || !bytes.Equal(kept, sent) {
				t.Errorf("the store did not keep the stream as it was sent (%v)", err)
			}
			if got := restoreWithKey(t, repo, "disk.img", key); len(got) != 1 || !bytes.Equal(got[0], m.data) {
				t.Error("the received stream does not restore under the key")
			}
		})
	}
}

// An encrypted incremental is received into an encrypted store only when
// it is bound to the file the store holds of its parent: one bound to
// another file exits with 5 and is not recorded. send cannot bind an
// encrypted incremental of two images (it has no parent file): it says
// so and writes nothing.
func TestEncryptedReceiveIncremental(t *testing.T) {
	dir := t.TempDir()
	dst := newDirStore(t)
	_, key := withPassphraseSlot(t, dst.open(t), nil, encPassphrase)
	size := int64(256 << 10)
	full := bytes.Repeat([]byte("the full's blocks\n"), int(size)/18+1)[:size]
	next := slices.Clone(full)
	copy(next[64<<10:], bytes.Repeat([]byte("changed\n"), 1024))
	vol := &archive.Header{BlockSize: 64 << 10, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3, VolumeName: "disk.img", VolumeSize: size,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "full", Time: time.Now().UTC()}, Tool: "test"}
	repo := dst.open(t)
	storetest.Write(t, repo, vol, full, []archive.Extent{{Offset: 0, Length: size, Kind: archive.KindData}}, key)
	fullHeader := *vol
	repo.Close()

	inc := func(name string, tamper bool) {
		t.Helper()
		h := *vol
		h.Parent, h.ParentSize = vol.Snapshot, size
		h.Snapshot = archive.Snapshot{ID: archive.NewID(), Name: "incremental", Time: time.Now().UTC()}
		if err := backup.BindParent(key, &h, &backup.Base{Header: &fullHeader}); err != nil {
			t.Fatal(err)
		}
		if tamper {
			// Bound to another volume's snapshot of the same id: the
			// Writer binds the header as it names its parent.
			h.VolumeUUID = "another volume"
		}
		var b bytes.Buffer
		w := archive.NewWriter(&b, archive.WithKey(key))
		if err := w.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if err := archive.Send(context.Background(), w, &archive.ListSource{R: bytes.NewReader(next),
			Extents: []archive.Extent{{Offset: 64 << 10, Length: 64 << 10, Kind: archive.KindData}}}, archive.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inc("bound.tbk", false)
	inc("misbound.tbk", true)

	before := storeState(t, dst.raw)
	r := dst.run(t, dir, "misbound.tbk", passEnv(encPassphrase), "receive", "--store", dst.loc)
	r.want(t, exitChain, "receive of an incremental bound to another file")
	if !strings.Contains(r.stderr, "not from the file the store holds of it") {
		t.Errorf("the error does not say what is wrong: %s", r.stderr)
	}
	unchanged(t, "a refused receive", dst.raw, before)
	dst.run(t, dir, "bound.tbk", passEnv(encPassphrase), "receive", "--store", dst.loc).want(t, 0, "receive of a bound incremental")
	if got := restoreWithKey(t, dst.open(t), "disk.img", key); len(got) != 2 || !bytes.Equal(got[0], full) || !bytes.Equal(got[1], next) {
		t.Error("the chain with the received incremental does not restore under the key")
	}

	for name, data := range map[string][]byte{"old.img": full, "new.img": next} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kf := filepath.Join(dir, "stream.key")
	f, err := keys.CreateKeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	f.Destroy()
	// An encrypted incremental sent from two images is bound to its
	// parent snapshot's identity, which needs no file of it.
	runNoTTY(t, dir, "", nil, "send", "--file", "new.img", "--base-file", "old.img", "--key-file", kf, "-o", "inc.tbk").want(t, 0, "send of an encrypted incremental")
	sk, err := keys.ReadKeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	mk, err := sk.StreamKey()
	if err != nil {
		t.Fatal(err)
	}
	streamKey, err := archive.NewKey(mk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	f2, err := os.Open(filepath.Join(dir, "inc.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	sh, err := archive.NewReader(f2, archive.WithKey(streamKey)).Header()
	if err != nil || sh.IsFull() || !sh.IsEncrypted() || sh.ParentTag == (archive.Digest{}) {
		t.Errorf("send of an encrypted incremental: header %+v, %v", sh, err)
	}
}

// catalog rebuild of an encrypted store needs its key (exit 14 without,
// or with a wrong passphrase, recording nothing): with it, every file is
// authenticated, and files planted in the store (one in the clear, one
// under another key) are left out and named, while the store's own
// files are recorded again and restore.
func TestEncryptedRebuild(t *testing.T) {
	seed := encImageSeed(t)
	dir := t.TempDir()
	st := newDirStore(t)
	_, key := withPassphraseSlot(t, st.open(t), nil, encPassphrase)
	m := newMarked(seed, 512<<10)
	img := filepath.Join(dir, "disk.img")
	var states [][]byte
	for _, off := range []int{0, 256 << 10} {
		m.mark(off)
		if err := os.WriteFile(img, m.data, 0o600); err != nil {
			t.Fatal(err)
		}
		states = append(states, slices.Clone(m.data))
		st.run(t, dir, "", passEnv(encPassphrase), "backup", "--store", st.loc, "--file", img).want(t, 0, "backup")
	}
	other, err := archive.NewKey(bytes.Repeat([]byte{9}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	var planted []string
	for i, k := range []*archive.Key{nil, other} {
		h := &archive.Header{BlockSize: 64 << 10, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3, VolumeName: "disk.img", VolumeSize: 512 << 10,
			Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "planted", Time: time.Now().UTC()}, Tool: "planted"}
		name := fmt.Sprintf("volumes/disk.img/%08d-%s.tbk", 8+i, h.Snapshot.ID)
		f, err := os.Create(filepath.Join(st.raw, name))
		if err != nil {
			t.Fatal(err)
		}
		w := archive.NewWriter(f, archive.WithKey(k))
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte("planted "), 64<<10)
		if err := archive.Send(context.Background(), w, &archive.ListSource{R: bytes.NewReader(data),
			Extents: []archive.Extent{{Offset: 0, Length: 512 << 10, Kind: archive.KindData}}}, archive.SendOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		planted = append(planted, name)
	}
	recorded := func() []catalog.Snapshot {
		t.Helper()
		repo := st.open(t)
		defer repo.Close()
		var snaps []catalog.Snapshot
		if err := repo.View(func(tx *catalog.Tx) error {
			var err error
			snaps, err = tx.AllSnapshots()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return snaps
	}
	if err := os.Remove(filepath.Join(st.raw, "catalog.db")); err != nil {
		t.Fatal(err)
	}
	for _, env := range [][]string{nil, passEnv("not the passphrase")} {
		st.run(t, dir, "", env, "catalog", "rebuild", "--store", st.loc).want(t, exitKey, "rebuild without the key")
		if snaps := recorded(); len(snaps) != 0 {
			t.Errorf("a rebuild without the key recorded %d snapshots", len(snaps))
		}
	}
	r := st.run(t, dir, "", passEnv(encPassphrase), "catalog", "rebuild", "--store", st.loc)
	r.want(t, exitError, "rebuild with planted files")
	for _, p := range append(planted, "not encrypted", "wrong key", "2 file(s) could not be read") {
		if !strings.Contains(r.stderr, p) {
			t.Errorf("the rebuild does not say %q", p)
		}
	}
	if snaps := recorded(); len(snaps) != 2 {
		t.Fatalf("the rebuild recorded %d snapshots, want the store's own 2", len(snaps))
	}
	got := restoreWithKey(t, st.open(t), "disk.img", key)
	for i := range states {
		if i >= len(got) || !bytes.Equal(got[i], states[i]) {
			t.Errorf("snapshot #%d does not restore after the rebuild", i+1)
		}
	}
}

// encstore DIR PASSPHRASE: makes DIR an encrypted store (a new master key,
// one passphrase slot), as thinback init --encrypt does.
func cmdEncstore(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: encstore DIR PASSPHRASE")
	}
	repo, err := catalog.OpenStore(ts.MkAbs(args[0]))
	ts.Check(err)
	defer repo.Close()
	mk, err := keys.NewMasterKey()
	ts.Check(err)
	slot, err := keys.NewPassphraseSlot(mk, []byte(args[1]), keys.Argon2Params{Time: 1, MemoryKiB: keys.MinArgon2MemoryKiB, Threads: 1}, "")
	ts.Check(err)
	_, err = keys.Init(repo, slot)
	ts.Check(err)
}

// keyrestore STORE VOLUME SEQ PASSPHRASE OUT: restores snapshot #SEQ of
// VOLUME from the encrypted directory store STORE into the new file OUT
// with the library, under the key PASSPHRASE unlocks; every file of the
// chain must be encrypted under it.
func cmdKeyrestore(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 5 {
		ts.Fatalf("usage: keyrestore STORE VOLUME SEQ PASSPHRASE OUT")
	}
	repo, err := catalog.OpenStore(ts.MkAbs(args[0]))
	ts.Check(err)
	defer repo.Close()
	ring, err := keys.Load(repo)
	ts.Check(err)
	mk, _, err := ring.UnlockPassphrase([]byte(args[3]))
	ts.Check(err)
	key, err := archive.NewKey(mk.Bytes())
	ts.Check(err)
	var chain []catalog.Snapshot
	ts.Check(repo.View(func(tx *catalog.Tx) error {
		snaps, err := tx.Snapshots(args[1])
		if err != nil {
			return err
		}
		for _, s := range snaps {
			if strconv.FormatUint(s.Seq, 10) == args[2] {
				chain, err = tx.Chain(s.ID)
				return err
			}
		}
		return fmt.Errorf("no snapshot #%s of %s", args[2], args[1])
	}))
	var inputs []restore.Input
	for _, rec := range chain {
		f, err := repo.OpenDelta(rec.File)
		ts.Check(err)
		defer f.Close()
		h, err := archive.NewReader(f, archive.WithKey(key)).Header()
		ts.Check(err)
		if !h.IsEncrypted() {
			ts.Fatalf("%s is not encrypted", rec.File)
		}
		_, err = f.Seek(0, io.SeekStart)
		ts.Check(err)
		inputs = append(inputs, restore.Input{Name: rec.File, R: f})
	}
	tg, err := restore.OpenTarget(ts.MkAbs(args[4]), restore.TargetOptions{})
	ts.Check(err)
	_, err = restore.Apply(context.Background(), tg, inputs, restore.Options{Key: key})
	if cerr := tg.Close(); err == nil {
		err = cerr
	}
	ts.Check(err)
}

// prune of an encrypted store merges under its key: backup --keep-last
// and the prune command re-encrypt merged files (no block in the clear),
// every kept snapshot restores under the key, and a prune given a wrong
// passphrase exits 14 having changed nothing (a dry run needs no key).
func TestEncryptedPrune(t *testing.T) {
	seed := encImageSeed(t)
	dir := t.TempDir()
	st := newDirStore(t)
	_, key := withPassphraseSlot(t, st.open(t), nil, encPassphrase)
	img := filepath.Join(dir, "disk.img")
	m := newMarked(seed, 1<<20)
	var states [][]byte
	for i := range 5 {
		m.mark((i*192 + 64) << 10)
		if err := os.WriteFile(img, m.data, 0o600); err != nil {
			t.Fatal(err)
		}
		states = append(states, slices.Clone(m.data))
		st.run(t, dir, "", passEnv(encPassphrase), "backup", "--store", st.loc, "--file", img, "--keep-last", "4").want(t, 0, "backup")
	}
	before := storeState(t, st.raw)
	st.run(t, dir, "", passEnv("wrong"), "prune", "--store", st.loc, "--keep-last", "2").want(t, exitKey, "prune with a wrong passphrase")
	unchanged(t, "a prune with a wrong passphrase", st.raw, before)
	st.run(t, dir, "", nil, "prune", "--store", st.loc, "--keep-last", "2", "--dry-run").want(t, 0, "a dry run without a key")
	unchanged(t, "a dry run", st.raw, before)
	st.run(t, dir, "", passEnv(encPassphrase), "prune", "--store", st.loc, "--keep-last", "2").want(t, 0, "prune")
	if leaks := m.leaks(t, st.raw); len(leaks) > 0 {
		t.Errorf("merged files hold the image's blocks in the clear: %s", strings.Join(leaks, ", "))
	}
	got := restoreWithKey(t, st.open(t), "disk.img", key)
	want := states[3:]
	if len(got) != len(want) {
		t.Fatalf("%d snapshots kept, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("kept snapshot %d does not restore byte for byte under the key", i+1)
		}
	}
}

// A key given for a store without key slots is refused (exit 14), before
// anything is read or written: an encrypted store whose slots someone
// removed would otherwise be read, or backed up into, in the clear.
func TestKeyGivenStoreWithoutSlots(t *testing.T) {
	dir := t.TempDir()
	st := newDirStore(t)
	withPassphraseSlot(t, st.open(t), nil, encPassphrase)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, bytes.Repeat([]byte("a block of the volume\n"), 50000), 0o600); err != nil {
		t.Fatal(err)
	}
	st.run(t, dir, "", passEnv(encPassphrase), "backup", "--store", st.loc, "--file", img).want(t, 0, "backup")
	if err := os.RemoveAll(filepath.Join(st.raw, "keys")); err != nil {
		t.Fatal(err)
	}
	before := storeState(t, st.raw)
	out := filepath.Join(dir, "out.img")
	for _, args := range [][]string{
		{"restore", "disk.img", "--store", st.loc, "--to", out},
		{"backup", "--store", st.loc, "--file", img},
		{"verify", "--store", st.loc},
	} {
		r := st.run(t, dir, "", passEnv(encPassphrase), args...)
		r.want(t, exitKey, args[0]+" of a store whose slots were removed, with a passphrase")
		if !strings.Contains(r.stderr, "has no key slots") || !strings.Contains(r.stderr, "$THINBACK_PASSWORD") {
			t.Errorf("%s: the message does not say what is wrong: %s", args[0], r.stderr)
		}
	}
	unchanged(t, "commands refused", st.raw, before)
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("restore made its target (%v)", err)
	}
	// Without a key, a store in the clear is read as before.
	plain := newDirStore(t)
	runNoTTY(t, dir, "", nil, "backup", "--store", plain.loc, "--file", img).want(t, 0, "backup into a plain store")
	runNoTTY(t, dir, "", nil, "restore", "disk.img", "--store", plain.loc, "--to", out).want(t, 0, "restore from a plain store")
}
