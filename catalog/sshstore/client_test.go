package sshstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/thinback/thinback/catalog"
)

// TestRepository: every method of catalog.Repository through a client,
// against what the directory store at the other end then holds.
func TestRepository(t *testing.T) {
	r := newRand(t)
	dir := t.TempDir()
	cl := serve(t, dir)

	unlock, err := cl.LockVolume("v")
	if err != nil {
		t.Fatal(err)
	}
	// A full of several blocks, so reads cross them.
	full := randBytes(r, 3*chunkSize+12345)
	a, err := cl.WriteVolumeDelta(testVolume("v"), ids[0], writer("v", ids[0], "", 0, full))
	if err != nil {
		t.Fatal(err)
	}
	if a.Seq != 1 || a.FileSize != int64(len(full)) || a.File == "" {
		t.Fatalf("WriteVolumeDelta returned %+v", a)
	}
	incr := randBytes(r, 1000)
	b, err := cl.WriteDelta("v", ids[1], writer("v", ids[1], a.ID, 1, incr))
	if err != nil {
		t.Fatal(err)
	}
	// The files are the store's own, durable under their names.
	local, err := catalog.OpenStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		sn   catalog.Snapshot
		data []byte
	}{{a, full}, {b, incr}} {
		got, err := os.ReadFile(local.Path(c.sn.File))
		if err != nil || !bytes.Equal(got, c.data) {
			t.Fatalf("%s in the store: %d bytes, %v; want the %d written", c.sn.File, len(got), err, len(c.data))
		}
	}
	var chain []catalog.Snapshot
	if err := cl.View(func(tx *catalog.Tx) (err error) {
		chain, err = tx.Chain(b.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(chain) != 2 || chain[0].ID != a.ID || chain[1].FileDigest != digest(incr) {
		t.Fatalf("View: chain %+v", chain)
	}

	// Reads at offsets across blocks, front to back, and seeks.
	f, err := cl.OpenDelta(a.File)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		off := r.Int64N(int64(len(full)))
		n := r.IntN(3 * chunkSize)
		buf := make([]byte, n)
		got, err := f.ReadAt(buf, off)
		want := min(n, len(full)-int(off))
		if got != want || (got < n) != errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, io.EOF)) {
			t.Fatalf("ReadAt(%d bytes, %d) = %d, %v; want %d", n, off, got, err, want)
		}
		if !bytes.Equal(buf[:got], full[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes, %d): wrong bytes", n, off)
		}
	}
	if _, err := f.Seek(-100, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	tail, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(tail, full[len(full)-100:]) {
		t.Fatalf("read after Seek: %d bytes, %v", len(tail), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := cl.OpenStream(a.File)
	if err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(all, full) {
		t.Fatalf("OpenStream: %d bytes, %v", len(all), err)
	}
	st.Close()

	files, err := cl.Files()
	if err != nil || len(files) != 2 || files[0].Path != a.File || files[1].Path != b.File || files[0].Size != int64(len(full)) {
		t.Fatalf("Files: %+v, %v", files, err)
	}

	// A merge: b's file replaced by a full, a removed in the same step.
	merged := randBytes(r, 5000)
	c, err := cl.ReplaceDelta("v", b.ID, []string{a.ID}, writer("v", b.ID, "", 1, merged))
	if err != nil {
		t.Fatal(err)
	}
	if c.File == b.File || c.Seq != b.Seq {
		t.Fatalf("ReplaceDelta returned %+v", c)
	}
	if _, err := os.Stat(local.Path(a.File)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the removed snapshot's file is still there: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}

	if err := cl.SetRetention("v", catalog.Retention{KeepLast: 3}); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetRetention("nosuch", catalog.Retention{KeepLast: 3}); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("SetRetention of an unknown volume: %v, want ErrNotFound", err)
	}
	var ret catalog.Retention
	if err := cl.View(func(tx *catalog.Tx) error {
		v, err := tx.Volume("v")
		ret = v.Retention
		return err
	}); err != nil || ret.KeepLast != 3 {
		t.Fatalf("retention after SetRetention: %+v, %v", ret, err)
	}

	// Rebuild from the records as they are, after an orphan and a temp
	// file of a dead writer appeared.
	orphan := filepath.Join(dir, "volumes", catalog.DirName("v"), catalog.FileName("v", 9, ids[3], 0)[len("volumes/v/"):])
	if err := os.WriteFile(orphan, []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	dead := filepath.Join(dir, "tmp", "tbk.999999999.0123456789ab.v.tmp")
	if err := os.WriteFile(dead, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	problems, err := cl.Check(catalog.CheckOptions{})
	if err != nil || len(problems) != 1 || !errors.Is(problems[0], catalog.ErrOrphan) {
		t.Fatalf("Check with an orphan: %v, %v", problems, err)
	}
	var ce *catalog.CheckError
	if !errors.As(problems[0], &ce) || ce.File != "volumes/v/"+filepath.Base(orphan) {
		t.Errorf("the orphan's CheckError: %+v", ce)
	}
	removed, err := cl.RemoveOrphans()
	if err != nil || len(removed) != 1 {
		t.Fatalf("RemoveOrphans: %v, %v", removed, err)
	}
	if cleaned, err := cl.CleanTemp(); err != nil || len(cleaned) != 1 {
		t.Fatalf("CleanTemp: %v, %v", cleaned, err)
	}
	if err := cl.Rebuild([]catalog.Volume{testVolume("v")}, []catalog.Snapshot{c}); err != nil {
		t.Fatal(err)
	}
	// Verify runs here, on the files that passed the store's checks.
	var verified []string
	problems, err = cl.Check(catalog.CheckOptions{Verify: func(sn catalog.Snapshot, file string) error {
		verified = append(verified, file)
		rd, err := cl.OpenStream(file)
		if err != nil {
			return err
		}
		defer rd.Close()
		data, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		if digest(data) != sn.FileDigest {
			return fmt.Errorf("digest %s, recorded %s", digest(data), sn.FileDigest)
		}
		return errors.New("made up")
	}})
	if err != nil || len(problems) != 1 || !errors.Is(problems[0], catalog.ErrFileDigest) || !slices.Equal(verified, []string{c.File}) {
		t.Fatalf("Check with Verify: %v, %v; verified %v", problems, err, verified)
	}

	// Key slots.
	if slots, err := cl.KeySlots(); err != nil || len(slots) != 0 {
		t.Fatalf("KeySlots of a store without: %v, %v", slots, err)
	}
	kunlock, err := cl.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.PutKeySlot("k1", []byte("slot one")); err != nil {
		t.Fatal(err)
	}
	if err := cl.PutKeySlot("k1", []byte("again")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("PutKeySlot of a taken id: %v, want fs.ErrExist", err)
	}
	if err := cl.PutKeySlot("k2", []byte("slot two")); err != nil {
		t.Fatal(err)
	}
	slots, err := cl.KeySlots()
	if err != nil || len(slots) != 2 || string(slots["k1"]) != "slot one" || string(slots["k2"]) != "slot two" {
		t.Fatalf("KeySlots: %q, %v", slots, err)
	}
	if err := cl.RemoveKeySlot("k1"); err != nil {
		t.Fatal(err)
	}
	if err := cl.RemoveKeySlot("k1"); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("RemoveKeySlot of a removed slot: %v, want ErrNotFound", err)
	}
	if err := kunlock(); err != nil {
		t.Fatal(err)
	}

	if err := cl.Remove("v", c.ID); err != nil {
		t.Fatal(err)
	}
	if got := dirEntries(t, filepath.Join(dir, "volumes", "v")); len(got) != 0 {
		t.Errorf("files left after Remove: %v", got)
	}
	if err := cl.wait(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
	problems, err = local.Check(catalog.CheckOptions{})
	if err != nil || len(problems) != 0 {
		t.Errorf("the store after all: %v, %v", problems, err)
	}
}

// TestViewRefetch: a client's View sees what another client committed
// since it last looked, and fetches the catalog only when it changed.
func TestViewRefetch(t *testing.T) {
	dir := t.TempDir()
	a, b := serve(t, dir), serve(t, dir)
	count := func(cl *served) int {
		var n int
		if err := cl.View(func(tx *catalog.Tx) error {
			all, err := tx.AllSnapshots()
			n = len(all)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(b); n != 0 {
		t.Fatalf("empty store: %d snapshots", n)
	}
	if _, err := a.WriteVolumeDelta(testVolume("v"), ids[0], writer("v", ids[0], "", 0, []byte("one"))); err != nil {
		t.Fatal(err)
	}
	if n := count(b); n != 1 {
		t.Fatalf("after another client's write: %d snapshots, want 1", n)
	}
	gen := b.gen
	if n := count(b); n != 1 || b.gen != gen {
		t.Fatalf("unchanged: %d snapshots, generation %v then %v", n, gen, b.gen)
	}
	if _, err := a.WriteDelta("v", ids[1], writer("v", ids[1], ids[0], 1, []byte("two"))); err != nil {
		t.Fatal(err)
	}
	if n := count(b); n != 2 {
		t.Fatalf("after the second write: %d snapshots, want 2", n)
	}
	// A catalog removed and made again starts its transactions over: the
	// copy must not be taken for current because the ids meet.
	if err := os.Remove(filepath.Join(dir, "catalog.db")); err != nil {
		t.Fatal(err)
	}
	if n := count(b); n != 0 {
		t.Fatalf("after the catalog was removed: %d snapshots, want 0", n)
	}
}

// TestLockDroppedConnection: a volume lock is the server's while the
// client holds it, and is released when the connection drops without an
// unlock.
func TestLockDroppedConnection(t *testing.T) {
	dir := t.TempDir()
	a, b := serve(t, dir), serve(t, dir)
	if _, err := a.LockVolume("v"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.LockVolume("v"); !errors.Is(err, catalog.ErrLocked) {
		t.Fatalf("a second LockVolume: %v, want ErrLocked", err)
	}
	if _, err := a.LockKeySlots(); err != nil {
		t.Fatal(err)
	}
	a.conn.Close() // the connection drops; the server ends
	if err := <-a.done; err != nil {
		t.Errorf("Serve after the connection dropped: %v", err)
	}
	a.done <- nil
	unlock, err := b.LockVolume("v")
	if err != nil {
		t.Fatalf("LockVolume after the holder's connection dropped: %v", err)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	kunlock, err := b.LockKeySlots()
	if err != nil {
		t.Fatalf("LockKeySlots after the holder's connection dropped: %v", err)
	}
	if err := kunlock(); err != nil {
		t.Fatal(err)
	}
}

// TestWriteFails: a write whose callback fails, and one whose connection
// drops in the middle, leave nothing: no record, no file, no temp file.
func TestWriteFails(t *testing.T) {
	r := newRand(t)
	dir := t.TempDir()
	cl := serve(t, dir)
	boom := errors.New("the source could not be read")
	_, err := cl.WriteVolumeDelta(testVolume("v"), ids[0], func(w io.Writer) (catalog.Snapshot, error) {
		if _, err := w.Write(randBytes(r, 2*chunkSize+5)); err != nil {
			return catalog.Snapshot{}, err
		}
		return catalog.Snapshot{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("a failing write: %v, want the callback's error", err)
	}
	// A record of another snapshot than announced is refused by the store.
	_, err = cl.WriteVolumeDelta(testVolume("v"), ids[0], writer("v", ids[1], "", 0, []byte("x")))
	if err == nil {
		t.Fatal("a record of another snapshot than announced was committed")
	}
	// The client still works after both.
	if _, err := cl.Files(); err != nil {
		t.Fatal(err)
	}

	cut := serve(t, dir)
	_, err = cut.WriteVolumeDelta(testVolume("v"), ids[0], func(w io.Writer) (catalog.Snapshot, error) {
		if _, err := w.Write(randBytes(r, chunkSize+5)); err != nil {
			return catalog.Snapshot{}, err
		}
		cut.conn.Close()
		_, err := w.Write(randBytes(r, chunkSize+5))
		return catalog.Snapshot{}, err
	})
	if err == nil {
		t.Fatal("a write over a dropped connection succeeded")
	}
	<-cut.done
	cut.done <- nil
	if err := cl.wait(t); err != nil {
		t.Errorf("Serve: %v", err)
	}
	if got := dirEntries(t, filepath.Join(dir, "tmp")); len(got) != 0 {
		t.Errorf("temp files left: %v", got)
	}
	if got := dirEntries(t, filepath.Join(dir, "volumes")); len(got) != 0 {
		t.Errorf("volume files left: %v", got)
	}
	if err := catalog.View(filepath.Join(dir, "catalog.db"), nil, func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		if len(vols) != 0 {
			t.Errorf("volumes recorded: %+v", vols)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// TestNamesRefused: names outside the store's layout are refused by the
// server's store, as its local callers' are.
func TestNamesRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	cl := serve(t, dir)
	secret := filepath.Join(filepath.Dir(dir), "secret")
	if err := os.WriteFile(secret, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "../secret", "catalog.db", "volumes/../../secret", "/etc/passwd", "volumes/v"} {
		if _, err := cl.OpenDelta(bad); err == nil {
			t.Errorf("OpenDelta(%q) succeeded", bad)
		}
	}
	if _, err := cl.LockVolume("../x\n"); err == nil {
		t.Error("LockVolume of an invalid name succeeded")
	}
	if err := cl.PutKeySlot("../k", []byte("x")); !errors.Is(err, catalog.ErrInvalidRecord) {
		t.Errorf("PutKeySlot of an invalid id: %v", err)
	}
	if err := cl.RemoveKeySlot("../../secret"); !errors.Is(err, catalog.ErrInvalidRecord) {
		t.Errorf("RemoveKeySlot of an invalid id: %v", err)
	}
	if _, err := os.Stat(secret); err != nil {
		t.Errorf("the file outside the store: %v", err)
	}
}
