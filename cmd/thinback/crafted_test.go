package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// A stream whose volume name holds a control, a C1 control or a bidi
// override is not recorded as a volume; inspect and apply show the name
// escaped, and apply still works.
func TestCraftedVolumeNameRefused(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	for i, name := range []string{"vm\x1b[2J", "vm\u009b2J", "mv\u202e", "a\u2066b"} {
		f := fmt.Sprintf("bad%d.tbk", i)
		craft(t, filepath.Join(dir, f), &archive.Header{VolumeName: name,
			Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "s", Time: time.Now().UTC()}}, make([]byte, 8192))
		r := thinback(t, dir, f, "receive", "--store", store)
		r.want(t, 1, "receive "+f)
		noRawControls(t, "receive", r.stderr)
		if !strings.Contains(r.stderr, "--volume") {
			t.Errorf("the refusal does not say what to do: %s", r.stderr)
		}
		r = thinback(t, dir, "", "inspect", f)
		r.want(t, 0, "inspect "+f)
		noRawControls(t, "inspect", r.stdout)
		// apply needs no volume record: it writes the file and records
		// the name, exact, in the state file.
		r = thinback(t, dir, "", "apply", f, "--to", f+".img")
		r.want(t, 0, "apply "+f)
		noRawControls(t, "apply", r.stderr)
	}
	r := thinback(t, dir, "", "list", "--store", store)
	r.want(t, 0, "list")
	if !strings.Contains(r.stdout, "no volumes") {
		t.Errorf("a volume was recorded: %s", r.stdout)
	}
}

// An incremental whose ParentSize is not its parent's volume size would
// restore with stale bytes beyond what it covers. receive --store refuses
// it (exit 5, naming both sizes, nothing recorded); a store that holds one
// anyway (written by an older thinback, or tampered with) is reported
// damaged by verify (exit 10).
func TestCraftedParentSize(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	data := bytes.Repeat([]byte{7}, 1<<20)
	full := &archive.Header{VolumeName: "v", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "full", Time: time.Now().UTC()}}
	craft(t, filepath.Join(dir, "full.tbk"), full, data)
	// The incremental claims its parent was half the size: it covers only
	// what changed in the first half and the "grown" second half.
	bad := &archive.Header{VolumeName: "v", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "bad", Time: time.Now().UTC()},
		Parent: full.Snapshot, ParentSize: 1 << 19}
	craft(t, filepath.Join(dir, "bad.tbk"), bad, data, archive.Extent{Offset: 1 << 19, Length: 1 << 19, Kind: archive.KindData})

	thinback(t, dir, "full.tbk", "receive", "--store", store).want(t, 0, "receive full")
	r := thinback(t, dir, "bad.tbk", "receive", "--store", store)
	r.want(t, 5, "receive of a wrong parent size")
	for _, n := range []string{"524288", "1048576"} {
		if !strings.Contains(r.stderr, n) {
			t.Errorf("the refusal does not name the size %s: %s", n, r.stderr)
		}
	}
	r = thinback(t, dir, "", "list", "--json", "--store", store)
	if strings.Contains(r.stdout, bad.Snapshot.ID.String()) {
		t.Fatal("the incremental was recorded")
	}
	thinback(t, dir, "", "verify", "--store", store).want(t, 0, "verify before")

	// Plant it: the file under its store name, recorded as an older
	// thinback would have (no parent size in the record).
	s, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.CreateTemp("v")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bad.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	h, tr, err := readDelta(context.Background(), filepath.Join(dir, "bad.tbk"), false)
	if err != nil {
		t.Fatal(err)
	}
	rec := record.OfFile(h, tr)
	// Commit itself refuses the record...
	if err := s.Commit(f, &rec); !errors.Is(err, catalog.ErrParentSize) {
		t.Fatalf("Commit of the crafted incremental: %v, want ErrParentSize", err)
	}
	// ... so put it there by hand.
	rec.File = "volumes/v/00000002-" + rec.ID + ".tbk"
	rec.FileSize, rec.ParentSize = int64(len(b)), 0
	if err := os.WriteFile(s.Path(rec.File), b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(func(tx *catalog.Tx) error { return tx.PutSnapshot(&rec) }); err != nil {
		t.Fatal(err)
	}
	r = thinback(t, dir, "", "verify", "--store", store)
	r.want(t, 10, "verify of a store holding it (record without a parent size)")
	if !strings.Contains(r.stdout, "BAD  v #2") || !strings.Contains(r.stdout, "524288") || !strings.Contains(r.stdout, "1048576") {
		t.Errorf("verify does not name the file and both sizes:\n%s", r.stdout)
	}
	// With the wrong size in the record as well, the catalog check says
	// so too.
	rec.ParentSize = 1 << 19
	if err := s.Update(func(tx *catalog.Tx) error { return tx.PutSnapshot(&rec) }); err != nil {
		t.Fatal(err)
	}
	r = thinback(t, dir, "", "verify", "--store", store)
	r.want(t, 10, "verify of a store holding it (record with the wrong size)")
	if !strings.Contains(r.stdout, "parent size is not its parent's volume size") {
		t.Errorf("verify does not report the record:\n%s", r.stdout)
	}
}

// The volume identity of a received incremental is checked against its
// parent's record: exit 5 for another volume.
func TestCraftedVolumeIdentity(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	data := bytes.Repeat([]byte{3}, 256<<10)
	full := &archive.Header{VolumeName: "v", VolumeUUID: "uuid-one",
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "full", Time: time.Now().UTC()}}
	craft(t, filepath.Join(dir, "full.tbk"), full, data)
	thinback(t, dir, "full.tbk", "receive", "--store", store).want(t, 0, "receive full")

	// Same name, another volume's uuid.
	other := &archive.Header{VolumeName: "v", VolumeUUID: "uuid-two",
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "other", Time: time.Now().UTC()}}
	craft(t, filepath.Join(dir, "other.tbk"), other, data)
	r := thinback(t, dir, "other.tbk", "receive", "--store", store)
	r.want(t, 5, "receive of another volume under the same name")
	// An incremental of v's full that says it is of volume w.
	cross := &archive.Header{VolumeName: "w", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "cross", Time: time.Now().UTC()},
		Parent: full.Snapshot, ParentSize: int64(len(data))}
	craft(t, filepath.Join(dir, "cross.tbk"), cross, data, archive.Extent{Offset: 0, Length: 4096, Kind: archive.KindData})
	r = thinback(t, dir, "cross.tbk", "receive", "--store", store)
	r.want(t, 5, "receive of an incremental whose parent is of another volume")
	// An incremental whose parent is not in the store.
	orphan := &archive.Header{VolumeName: "v", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "orphan", Time: time.Now().UTC()},
		Parent: archive.Snapshot{ID: archive.NewID(), Name: "gone"}, ParentSize: int64(len(data))}
	craft(t, filepath.Join(dir, "orphan.tbk"), orphan, data, archive.Extent{Offset: 0, Length: 4096, Kind: archive.KindData})
	r = thinback(t, dir, "orphan.tbk", "receive", "--store", store)
	r.want(t, 5, "receive of an incremental whose parent is not in the store")
	r = thinback(t, dir, "", "list", "--store", store)
	if strings.Contains(r.stdout, "\nw ") || strings.Count(r.stdout, "full") != 1 {
		t.Errorf("something was recorded:\n%s", r.stdout)
	}
}
