package catalog

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestOpenCreatesParentsAndModes(t *testing.T) {
	path, _ := newTestFile(t)
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{filepath.Dir(path): 0o700 | os.ModeDir, path: 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), want)
		}
	}
}

func TestUpdateCommitsOrNothing(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	boom := errors.New("boom")
	err := db.Update(func(tx *Tx) error {
		if err := tx.PutVolume(testVolume("vg0/a")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update: %v, want boom", err)
	}
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutVolume(testVolume("vg0/b")) })
	mustView(t, db, func(tx *Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		if len(vols) != 1 || vols[0].Name != "vg0/b" {
			t.Errorf("volumes %v, want only vg0/b", vols)
		}
		return nil
	})
}

func TestBusy(t *testing.T) {
	path, _ := newTestFile(t)
	db, err := Open(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// The holder keeps the file until Update has given up: only the
	// timeout can end the wait.
	done := make(chan error, 1)
	go func() {
		done <- Update(path, &Options{Timeout: 200 * time.Millisecond}, func(*Tx) error { return nil })
	}()
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute): // a bound for a stuck test, not the claim
		t.Fatal("Update with a timeout still waits for the file held by another")
	}
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Update while another holds the file: %v, want ErrBusy", err)
	}
	want := "catalog " + path + " is locked by another thinback process"
	if err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	var be *BusyError
	if !errors.As(err, &be) || be.Path != path {
		t.Errorf("error %#v is not a BusyError for %s", err, path)
	}
	// Readers wait for the writer too, and a negative timeout fails at once.
	if err := View(path, &Options{Timeout: -1}, func(*Tx) error { return nil }); !errors.Is(err, ErrBusy) {
		t.Errorf("View while a writer holds the file: %v, want ErrBusy", err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, &Options{Timeout: -1}, func(*Tx) error { return nil }); err != nil {
		t.Errorf("Update after close: %v", err)
	}
}

func TestReadersShare(t *testing.T) {
	path, _ := newTestFile(t)
	mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutVolume(testVolume("v")) })
	r1, err := Open(path, &Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	if err := View(path, &Options{Timeout: -1}, func(tx *Tx) error {
		_, err := tx.Volume("v")
		return err
	}); err != nil {
		t.Errorf("second reader: %v", err)
	}
	if err := r1.Update(func(*Tx) error { return nil }); !errors.Is(err, ErrReadOnly) {
		t.Errorf("Update on a read-only DB: %v, want ErrReadOnly", err)
	}
	if err := r1.View(func(tx *Tx) error { return tx.PutVolume(testVolume("w")) }); !errors.Is(err, ErrReadOnly) {
		t.Errorf("PutVolume in View: %v, want ErrReadOnly", err)
	}
}

func TestViewMissingFileIsEmpty(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "var", "lib", "thinback", "state.db")
	called := false
	err := View(path, nil, func(tx *Tx) error {
		called = true
		if tx.Writable() {
			t.Error("empty catalog is writable")
		}
		vols, err := tx.Volumes()
		if err != nil || len(vols) != 0 {
			t.Errorf("Volumes: %v, %v", vols, err)
		}
		if _, err := tx.Snapshot(newID()); !errors.Is(err, ErrNotFound) {
			t.Errorf("Snapshot: %v, want ErrNotFound", err)
		}
		if _, err := tx.Target("/dev/x"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Target: %v, want ErrNotFound", err)
		}
		if err := tx.PutTarget(&Target{Key: "/dev/x"}); !errors.Is(err, ErrReadOnly) {
			t.Errorf("PutTarget: %v, want ErrReadOnly", err)
		}
		if p := tx.Check(CheckOptions{}); len(p) != 0 {
			t.Errorf("Check of the empty catalog: %v", p)
		}
		return nil
	})
	if err != nil || !called {
		t.Fatalf("View: %v (called %v)", err, called)
	}
	if _, err := os.Stat(filepath.Join(dir, "var")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("View created something: %v", err)
	}
}

// setVersion rewrites the schema version with bbolt directly.
func setVersion(t *testing.T, path string, v uint32) {
	t.Helper()
	b, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.Update(func(btx *bolt.Tx) error {
		var buf [4]byte
		binary.BigEndian.PutUint32(buf[:], v)
		return btx.Bucket(bucketMeta).Put(keyVersion, buf[:])
	}); err != nil {
		t.Fatal(err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path, _ := newTestFile(t)
	mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutVolume(testVolume("v")) })
	setVersion(t, path, SchemaVersion+1)
	// The final check runs after the version is put back below.
	for name, open := range map[string]func() error{
		"Update": func() error { return Update(path, nil, func(*Tx) error { return nil }) },
		"View":   func() error { return View(path, nil, func(*Tx) error { return nil }) },
	} {
		err := open()
		var ve *VersionError
		if !errors.Is(err, ErrVersion) || !errors.As(err, &ve) || ve.Version != SchemaVersion+1 || ve.Path != path {
			t.Errorf("%s of a newer schema: %v, want a VersionError", name, err)
		}
		if errors.Is(err, ErrInvalid) {
			t.Errorf("%s: version error also matches ErrInvalid", name)
		}
	}
	// Putting the version back shows nothing else was touched.
	setVersion(t, path, SchemaVersion)
	mustView(t, fileDB(path), func(tx *Tx) error {
		_, err := tx.Volume("v")
		return err
	})
}

func TestNotACatalog(t *testing.T) {
	dir := t.TempDir()
	random := make([]byte, 16<<10)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(dir, "foreign.db")
	b, err := bolt.Open(foreign, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Update(func(btx *bolt.Tx) error {
		_, err := btx.CreateBucket([]byte("someone-else"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"random.db": random,
		"text.db":   []byte("hello, this is not a database\n"),
		"zeros.db":  make([]byte, 32<<10),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"random.db", "text.db", "zeros.db", "foreign.db"} {
		path := filepath.Join(dir, name)
		before, _ := os.ReadFile(path)
		for _, ro := range []bool{false, true} {
			db, err := Open(path, &Options{ReadOnly: ro, Timeout: -1})
			if err == nil {
				db.Close()
			}
			var ie *InvalidError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &ie) || ie.Path != path {
				t.Errorf("Open(%s, readonly=%v): %v, want an InvalidError", name, ro, err)
			}
			if errors.Is(err, ErrVersion) || errors.Is(err, ErrBusy) {
				t.Errorf("Open(%s): %v matches another open error", name, err)
			}
		}
		after, _ := os.ReadFile(path)
		if !bytes.Equal(before, after) {
			t.Errorf("%s was modified by a failed open", name)
		}
	}
}

// TestDamagedCatalog: a catalog whose meta pages fail their checksums is
// reported as damaged (to be rebuilt), one with an unknown bbolt format
// version as such: neither is "not a thinback catalog".
func TestDamagedCatalog(t *testing.T) {
	// bbolt's meta page: a 16-byte page header, then magic (4), version
	// (4), page size (4), flags (4), root (16), freelist (8), pgid (8),
	// txid (8), checksum (8). Both meta pages (pages 0 and 1) are hit, or
	// bbolt uses the intact one.
	const metaVersion, metaTxid = 16 + 4, 16 + 4 + 4 + 4 + 4 + 16 + 8 + 8
	for _, tc := range []struct {
		name string
		off  int
		want error
	}{
		{"checksum", metaTxid, ErrDamaged},
		{"version", metaVersion, ErrFormat},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "catalog.db")
			mustUpdate(t, fileDB(path), func(tx *Tx) error { return tx.PutVolume(testVolume("v")) })
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			pageSize := os.Getpagesize()
			data[tc.off] ^= 0x55
			data[pageSize+tc.off] ^= 0x55
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err = Open(path, &Options{ReadOnly: true, Timeout: -1})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open of a damaged catalog: %v, want %v", err, tc.want)
			}
			for _, other := range []error{ErrInvalid, ErrDamaged, ErrFormat, ErrVersion} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("%v also matches %v", err, other)
				}
			}
			if tc.want == ErrDamaged && !strings.Contains(err.Error(), "thinback catalog rebuild") {
				t.Errorf("the message does not say to rebuild: %v", err)
			}
		})
	}
}

// A panic in a transaction closure rolls it back and still releases the
// file, so the next transaction does not wait for a lock nobody holds.
func TestPanicReleasesFile(t *testing.T) {
	path, _ := newTestFile(t)
	func() {
		defer func() {
			if recover() == nil {
				t.Error("panic was swallowed")
			}
		}()
		_ = Update(path, nil, func(tx *Tx) error {
			if err := tx.PutVolume(testVolume("v")); err != nil {
				return err
			}
			panic("bug in a closure")
		})
	}()
	err := Update(path, &Options{Timeout: -1}, func(tx *Tx) error {
		if _, err := tx.Volume("v"); !errors.Is(err, ErrNotFound) {
			t.Errorf("panicked transaction was committed: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("file still locked after a panic: %v", err)
	}
}
