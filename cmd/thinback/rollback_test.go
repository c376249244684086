package main

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
)

// encryptedStore makes a directory store with a key-file slot, and sets
// $THINBACK_KEY_FILE to the key file for the commands the test runs.
func encryptedStore(t *testing.T, dir string) (store string) {
	t.Helper()
	store = filepath.Join(dir, "store")
	s, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	addKeyFileSlot(t, s, filepath.Join(dir, "store.key"))
	return store
}

// addKeyFileSlot gives a store without key slots a new master key, in a
// key-file slot whose key file it makes at kfPath, and sets
// $THINBACK_KEY_FILE to it for the commands the test runs.
func addKeyFileSlot(t *testing.T, s keys.Storage, kfPath string) {
	t.Helper()
	mk, err := keys.NewMasterKey()
	if err != nil {
		t.Fatal(err)
	}
	defer mk.Destroy()
	kf, err := keys.CreateKeyFile(kfPath)
	if err != nil {
		t.Fatal(err)
	}
	slot, err := keys.NewKeyFileSlot(mk, kf, "cron")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keys.Init(s, slot); err != nil {
		t.Fatal(err)
	}
	t.Setenv("THINBACK_KEY_FILE", kfPath)
}

// writeImage writes a 1 MiB image whose blocks carry mark.
func writeImage(t *testing.T, path, mark string) {
	t.Helper()
	b := make([]byte, 1<<20)
	for off := 0; off < len(b); off += 64 << 10 {
		copy(b[off:], mark)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// wantIn fails unless out holds every one of want.
func wantIn(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s lacks %q:\n%s", what, w, out)
		}
	}
}

// An encrypted store put back from a copy made before its newest backup
// is refused by backup (exit 5) unless --allow-rollback, reported by list
// (a warning, exit 0), verify (exit 10) and restore (a warning, and the
// restore goes on). Once allowed, the host takes the store as it is.
func TestRollbackOlderCopy(t *testing.T) {
	dir := t.TempDir()
	store := encryptedStore(t, dir)
	img := filepath.Join(dir, "disk.img")
	writeImage(t, img, "first")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "first backup")
	if out, err := exec.Command("cp", "-a", store, store+".old").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	writeImage(t, img, "second")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "second backup")
	thinback(t, dir, "", "list", "--store", store).want(t, 0, "list")

	if err := os.RemoveAll(store); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(store+".old", store); err != nil {
		t.Fatal(err)
	}
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store)
	r.want(t, exitChain, "backup into a rolled-back store")
	wantIn(t, "backup's message", r.stderr, "store "+store+" was rolled back", "volume disk.img", "this host last saw #2",
		"the store's newest is #1", "--allow-rollback")

	r = thinback(t, dir, "", "list", "--store", store)
	r.want(t, 0, "list of a rolled-back store")
	wantIn(t, "list's warning", r.stderr, "warning: store "+store+" was rolled back", "#2")
	r = thinback(t, dir, "", "verify", "--store", store)
	r.want(t, exitVerify, "verify of a rolled-back store")
	wantIn(t, "verify's report", r.stdout, "BAD  store "+store+" was rolled back")
	r = thinback(t, dir, "", "restore", "disk.img", "--store", store, "--to", "r.img")
	r.want(t, 0, "restore from a rolled-back store")
	wantIn(t, "restore's warning", r.stderr, "warning: store "+store+" was rolled back")
	// Still refused: nothing above made the host forget.
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, exitChain, "backup again")

	r = thinback(t, dir, "", "backup", "--file", img, "--store", store, "--allow-rollback")
	r.want(t, 0, "backup --allow-rollback")
	wantIn(t, "backup --allow-rollback's warning", r.stderr, "was rolled back", "going on as --allow-rollback asks")
	r = thinback(t, dir, "", "list", "--store", store)
	r.want(t, 0, "list after --allow-rollback")
	if strings.Contains(r.stderr, "rolled back") {
		t.Errorf("list after --allow-rollback still warns:\n%s", r.stderr)
	}
	thinback(t, dir, "", "verify", "--store", store).want(t, 0, "verify after --allow-rollback")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "backup after --allow-rollback")
}

// The newest file and its record deleted from an encrypted store: the
// next backup is refused. The record alone deleted: refused too, and the
// file is kept (no orphan to remove), for catalog rebuild to record it
// again. An unencrypted store is not checked.
func TestRollbackDeletedNewest(t *testing.T) {
	for _, tc := range []struct {
		name                string
		encrypted, keepFile bool
	}{
		{"encrypted", true, false},
		{"encrypted, record only", true, true},
		{"unencrypted", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			store := filepath.Join(dir, "store")
			if tc.encrypted {
				store = encryptedStore(t, dir)
			}
			img := filepath.Join(dir, "disk.img")
			writeImage(t, img, "first")
			thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "first backup")
			writeImage(t, img, "second")
			thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "second backup")
			s, err := catalog.OpenStore(store)
			if err != nil {
				t.Fatal(err)
			}
			var newest catalog.Snapshot
			if err := s.View(func(tx *catalog.Tx) error {
				newest, err = tx.Latest("disk.img")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if tc.keepFile {
				err = s.Update(func(tx *catalog.Tx) error { return tx.DeleteSnapshot(newest.ID) })
			} else {
				err = s.Remove("disk.img", newest.ID)
			}
			if err != nil {
				t.Fatal(err)
			}
			r := thinback(t, dir, "", "backup", "--file", img, "--store", store)
			if !tc.encrypted {
				r.want(t, 0, "backup into an unencrypted store")
				if _, err := os.Stat(filepath.Join(dir, "state.db")); err == nil {
					t.Error("backups into an unencrypted store made a state file")
				}
				return
			}
			r.want(t, exitChain, "backup after the newest was deleted")
			wantIn(t, "backup's message", r.stderr, "this host last saw #2 "+newest.ID, "the store's newest is #1", "--allow-rollback")
			if !tc.keepFile {
				return
			}
			if _, err := os.Stat(s.Path(newest.File)); err != nil {
				t.Fatalf("the refused backup removed the newest file: %v", err)
			}
			thinback(t, dir, "", "catalog", "rebuild", "--store", store).want(t, 0, "catalog rebuild")
			thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "backup after the rebuild")
		})
	}
}

// An encrypted store whose key slots were removed since this host last
// used it is refused by backup, which would write in the clear, and
// reported by list; with the slots back it is used again.
func TestRollbackKeySlotsGone(t *testing.T) {
	dir := t.TempDir()
	store := encryptedStore(t, dir)
	img := filepath.Join(dir, "disk.img")
	writeImage(t, img, "first")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "first backup")
	s, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	slots, err := s.KeySlots()
	if err != nil || len(slots) != 1 {
		t.Fatalf("key slots: %v %v", slots, err)
	}
	ring, err := keys.Load(s)
	if err != nil {
		t.Fatal(err)
	}
	keyID := ring.Slots()[0].KeyID.String()
	for id := range slots {
		if err := s.RemoveKeySlot(id); err != nil {
			t.Fatal(err)
		}
	}
	writeImage(t, img, "second")
	// With its key file, the command itself sees that the store has no
	// slots for it (exit 14); without, this host's memory (exit 5).
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store)
	r.want(t, exitKey, "backup with a key into a store whose key slots are gone")
	wantIn(t, "backup's message", r.stderr, "has no key slots, so it is not encrypted, yet a key file")
	keyFile := os.Getenv("THINBACK_KEY_FILE")
	t.Setenv("THINBACK_KEY_FILE", "")
	r = thinback(t, dir, "", "backup", "--file", img, "--store", store)
	r.want(t, exitChain, "backup into a store whose key slots are gone")
	wantIn(t, "backup's message", r.stderr, "store "+store+" was encrypted under key "+keyID+" when this host last used it",
		"its key slots are missing", "--allow-rollback")
	wantIn(t, "list's warning", thinback(t, dir, "", "list", "--store", store).stderr, "warning: store "+store+" was encrypted under key "+keyID)
	// restore, given no key, does not read what may have been planted
	// in the clear in the slots' absence.
	out := filepath.Join(dir, "restored.img")
	r = thinback(t, dir, "", "restore", "disk.img", "--store", store, "--to", out)
	r.want(t, exitChain, "restore from a store whose key slots are gone")
	wantIn(t, "restore's message", r.stderr, "its key slots are missing")
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the refused restore made its target (%v)", err)
	}
	t.Setenv("THINBACK_KEY_FILE", keyFile)

	for id, data := range slots {
		if err := s.PutKeySlot(id, data); err != nil {
			t.Fatal(err)
		}
	}
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "backup with the slots back")
}

// On S3 too: the newest snapshot's record and file deleted from the
// bucket (the real versitygw) are noticed by the next backup, from the
// state file outside the bucket and the cache.
func TestRollbackS3(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	setS3Env(t, srv, filepath.Join(dir, "cache"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	repo, err := s3store.Open(ctx, s3.Location{Insecure: true, Host: srv.Addr, Bucket: srv.Bucket, Prefix: "rb"},
		&s3store.Options{
			S3:     s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache:  t.TempDir(),
			Create: true,
		})
	if err != nil {
		t.Fatal(err)
	}
	addKeyFileSlot(t, repo, filepath.Join(dir, "store.key"))
	if err := repo.Close(); err != nil {
		t.Fatal(err)
	}
	store := srv.Location("rb")
	img := filepath.Join(dir, "disk.img")
	writeImage(t, img, "first")
	thinback(t, dir, "", "backup", "--file", img, "--store", store).want(t, 0, "first backup")
	writeImage(t, img, "second")
	r := thinback(t, dir, "", "backup", "--file", img, "--store", store, "--json")
	r.want(t, 0, "second backup")
	var res struct{ Snapshot string }
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Snapshot == "" {
		t.Fatalf("backup --json: %v\n%s", err, r.stdout)
	}
	cl := srv.Client()
	removed := 0
	for oi := range cl.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "rb/", Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if strings.Contains(oi.Key, res.Snapshot) {
			if err := cl.RemoveObject(ctx, srv.Bucket, oi.Key, minio.RemoveObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			removed++
		}
	}
	if removed != 2 {
		t.Fatalf("removed %d objects of snapshot %s, want its record and its file", removed, res.Snapshot)
	}
	r = thinback(t, dir, "", "backup", "--file", img, "--store", store)
	r.want(t, exitChain, "backup into a bucket rolled back")
	wantIn(t, "backup's message", r.stderr, "store "+store+" was rolled back", "this host last saw #2 "+res.Snapshot, "the store's newest is #1")
	wantIn(t, "list's warning", thinback(t, dir, "", "list", "--store", store).stderr, "warning: store "+store+" was rolled back")
}
