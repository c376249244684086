package s3store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os/exec"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

func TestKeySlots(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	st := h.open()
	got, err := st.KeySlots()
	if err != nil || len(got) != 0 {
		t.Fatalf("slots of a new store: %v, %v", got, err)
	}
	want := map[string][]byte{"0011223344556677": []byte(`{"slot":"a"}`), "8899aabbccddeeff": []byte(`{"slot":"b"}`)}
	for id, data := range want {
		if err := st.PutKeySlot(id, data); err != nil {
			t.Fatal(err)
		}
	}
	// Another host sees them: they live in the bucket, not in a cache.
	other := newHost(t, srv).open()
	if got, err = other.KeySlots(); err != nil || !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("slots %q, %v", got, err)
	}
	if objs := withPrefix(objects(srv), "keys/"); len(objs) != 2 {
		t.Fatalf("objects %q", objs)
	}
	// Never replaced.
	err = other.PutKeySlot("0011223344556677", []byte("other"))
	if !errors.Is(err, fs.ErrExist) || !errors.Is(err, s3.ErrExist) {
		t.Fatalf("put over a slot: %v", err)
	}
	if got, _ = st.KeySlots(); !bytes.Equal(got["0011223344556677"], want["0011223344556677"]) {
		t.Fatal("put over a slot changed it")
	}
	// Removed once.
	if err := st.RemoveKeySlot("0011223344556677"); err != nil {
		t.Fatal(err)
	}
	if err := other.RemoveKeySlot("0011223344556677"); !errors.Is(err, catalog.ErrNotFound) {
		t.Fatalf("remove again: %v", err)
	}
	delete(want, "0011223344556677")
	if got, err = other.KeySlots(); err != nil || !maps.EqualFunc(got, want, bytes.Equal) {
		t.Fatalf("slots %q, %v", got, err)
	}
	for _, id := range []string{"", "..", "a/b", "../records"} {
		if err := st.PutKeySlot(id, []byte("x")); !errors.Is(err, catalog.ErrInvalidRecord) {
			t.Errorf("put %q: %v", id, err)
		}
	}
	if err := st.PutKeySlot("big", make([]byte, catalog.MaxKeySlotSize+1)); !errors.Is(err, catalog.ErrInvalidRecord) {
		t.Fatalf("put of a big slot: %v", err)
	}
	// Objects under keys/ that are not slot ids are skipped; one too
	// large for a slot is refused before its body is read.
	cl := srv.Client()
	put := func(name string, data []byte) {
		t.Helper()
		if _, err := cl.PutObject(context.Background(), srv.Bucket, "p/keys/"+name, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	put("sub/0011223344556677", []byte("x"))
	if got, err = st.KeySlots(); err != nil || len(got) != 1 {
		t.Fatalf("slots %q, %v", got, err)
	}
	put("big", make([]byte, catalog.MaxKeySlotSize+1))
	if _, err := st.KeySlots(); !errors.Is(err, s3.ErrTooLarge) {
		t.Fatalf("slots with a big object: %v", err)
	}
}

// The key slots' lock object: one holder at a time, across hosts, and
// apart from every volume's lock.
func TestLockKeySlots(t *testing.T) {
	srv := s3test.Start(t)
	st := newHost(t, srv).open()
	other := newHost(t, srv).open()
	unlock, err := st.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	_, err = other.LockKeySlots()
	var le *LockedError
	if !errors.Is(err, catalog.ErrLocked) || !errors.As(err, &le) || le.Volume != "" || le.Object != "locks/.keys.lock" {
		t.Fatalf("second LockKeySlots: %v, want a LockedError of the key slots", err)
	}
	if !strings.Contains(err.Error(), "key slots") {
		t.Errorf("message %q does not say the key slots", err)
	}
	u, err := other.LockVolume(".keys")
	if err != nil {
		t.Fatalf("a volume named .keys while the key slots are locked: %v", err)
	}
	if err := u(); err != nil {
		t.Fatal(err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	unlock, err = other.LockKeySlots()
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}

	// The lock of a run of this host that was killed is broken by the
	// next, as a volume's is, saying whose it was.
	ctx := testCtx(t)
	h := newHost(t, srv)
	sh := h.open()
	unlock, err = sh.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	owner, _, err := sh.s3.ReadLock(ctx, keySlotsLock)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	owner.PID, owner.Token = dead.Process.Pid, "a killed run"
	data, err := json.Marshal(owner)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sh.s3.Put(ctx, keySlotsLock, data); err != nil {
		t.Fatal(err)
	}
	h.takeNotes()
	u, err = h.open().LockKeySlots()
	if err != nil {
		t.Fatalf("the lock of a killed run: %v", err)
	}
	if notes := strings.Join(h.takeNotes(), "\n"); !strings.Contains(notes, "broke the lock of the key slots") {
		t.Errorf("notes do not say the key slots' lock was broken:\n%s", notes)
	}
	if err := u(); err != nil {
		t.Fatal(err)
	}
	_ = unlock() // lost to the break: its release fails, as it should
}
