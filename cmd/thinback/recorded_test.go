package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/backup"
	"github.com/thinback/thinback/cmd/internal/fusefs"
	"github.com/thinback/thinback/cmd/internal/record"
	"github.com/thinback/thinback/lvmthin"
)

// recordedStore is a local store of two volumes: disk.img with three
// snapshots and other.img with one, each image written by the test
// (deterministic bytes, no randomness).
type recordedStore struct {
	dir, store string
	disk       [][]byte // disk.img at each snapshot
}

func newRecordedStore(t *testing.T) *recordedStore {
	t.Helper()
	rs := &recordedStore{dir: t.TempDir()}
	rs.store = filepath.Join(rs.dir, "store")
	thinback(t, rs.dir, "", "init", "--store", rs.store).want(t, 0, "init")
	img := bytes.Repeat([]byte("the first state of disk.img\n"), 1<<20/28+1)[:1<<20]
	for i := 0; i < 3; i++ {
		copy(img[i*200000:], bytes.Repeat([]byte(fmt.Sprintf("snapshot %d changed this\n", i+1)), 4000))
		rs.write(t, "disk.img", img)
		thinback(t, rs.dir, "", "backup", "--store", rs.store, "--file", "disk.img").want(t, 0, "backup of disk.img")
		rs.disk = append(rs.disk, append([]byte(nil), img...))
	}
	rs.write(t, "other.img", bytes.Repeat([]byte("other.img is another volume\n"), 1<<20/28+1)[:1<<20])
	thinback(t, rs.dir, "", "backup", "--store", rs.store, "--file", "other.img").want(t, 0, "backup of other.img")
	return rs
}

func (rs *recordedStore) write(t *testing.T, name string, b []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(rs.dir, name), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// file is the path of volume's snapshot #seq's delta file.
func (rs *recordedStore) file(t *testing.T, volume string, seq int) string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(rs.store, "volumes", catalog.DirName(volume), fmt.Sprintf("%08d-*.tbk", seq)))
	if err != nil || len(m) != 1 {
		t.Fatalf("the file of %s #%d: %q, %v", volume, seq, m, err)
	}
	return m[0]
}

// put puts the bytes of one snapshot's file in place of another's.
func (rs *recordedStore) put(t *testing.T, fromVol string, fromSeq int, toVol string, toSeq int) {
	t.Helper()
	b, err := os.ReadFile(rs.file(t, fromVol, fromSeq))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rs.file(t, toVol, toSeq), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// A delta file that is not the one the catalog records is refused with
// exit code 3 by restore, cat and verify --device, and by the reader
// mount and serve open, whichever file of the chain it is; nothing is
// written and the state file is unchanged.
func TestNotRecordedFileRefused(t *testing.T) {
	for _, tc := range []struct {
		name     string
		from     string
		fromSeq  int
		to, what int // the snapshot replaced, and the one read
	}{
		// Before, restore wrote other.img's data here, said "restored"
		// and recorded it in the state file.
		{"another volume's full as the full read alone", "other.img", 1, 1, 1},
		{"another volume's full as the full", "other.img", 1, 1, 2},
		{"another volume's full as the newest", "other.img", 1, 2, 2},
		{"a later snapshot's file as the newest", "disk.img", 3, 2, 2},
		{"an earlier snapshot's file as the newest", "disk.img", 1, 3, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := newRecordedStore(t)
			// A target that holds #1, as the state file says.
			thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--snapshot", "1", "--to", "target.img").want(t, 0, "restore of #1")
			state := filepath.Join(rs.dir, "state.db")
			stateBefore, err := os.ReadFile(state)
			if err != nil {
				t.Fatal(err)
			}
			rs.put(t, tc.from, tc.fromSeq, "disk.img", tc.to)
			snap := fmt.Sprint(tc.what)
			wantRefused := func(r result, what string) {
				t.Helper()
				r.want(t, exitCorrupt, what)
				if !strings.Contains(r.stderr, fmt.Sprintf("is not the delta file the catalog records for disk.img #%d", tc.to)) ||
					!strings.Contains(r.stderr, "thinback verify --store") {
					t.Errorf("%s: the message does not name the file, the snapshot and what to do:\n%s", what, r.stderr)
				}
			}

			wantRefused(thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--snapshot", snap, "--to", "new.img"), "restore to a new file")
			if _, err := os.Stat(filepath.Join(rs.dir, "new.img")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("restore refused, but new.img: %v", err)
			}
			wantRefused(thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--snapshot", snap, "--to", "target.img"), "restore onto the target")
			if got, err := os.ReadFile(filepath.Join(rs.dir, "target.img")); err != nil || !bytes.Equal(got, rs.disk[0]) {
				t.Errorf("restore refused, but the target changed (%v)", err)
			}
			if got, err := os.ReadFile(state); err != nil || !bytes.Equal(got, stateBefore) {
				t.Errorf("restore refused, but the state file changed (%v)", err)
			}

			wantRefused(thinback(t, rs.dir, "", "cat", "disk.img", "--store", rs.store, "--snapshot", snap, "-o", "cat.img"), "cat")
			if _, err := os.Stat(filepath.Join(rs.dir, "cat.img")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cat refused, but cat.img: %v", err)
			}
			rs.write(t, "want.img", rs.disk[tc.what-1])
			wantRefused(thinback(t, rs.dir, "", "verify", "disk.img", "--store", rs.store, "--snapshot", snap, "--device", "want.img"), "verify --device")

			// The reader mount opens for an image (and serve for an
			// export, through the same pointintime.Store.Open).
			s, err := openReadStore(context.Background(), &env{}, rs.store, nil)
			if err != nil {
				t.Fatal(err)
			}
			var rec catalog.Snapshot
			if err := s.View(func(tx *catalog.Tx) error {
				var err error
				rec, err = findSnapshot(tx, "disk.img", snap)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if pit, err := s.Open(func(tx *catalog.Tx) (catalog.Snapshot, error) { return tx.Snapshot(rec.ID) }); !errors.Is(err, record.ErrNotRecorded) {
				if err == nil {
					pit.Close()
				}
				t.Errorf("Open: %v, want record.ErrNotRecorded", err)
			}
			var mu sync.Mutex
			var logged []string
			logf := func(format string, args ...any) {
				mu.Lock()
				defer mu.Unlock()
				logged = append(logged, fmt.Sprintf(format, args...))
			}
			m := fusefs.New(context.Background(), storeImages{store: s, log: logf}, logf)
			if errno := openImage(t, m, rec); errno != syscall.EIO {
				t.Errorf("the mount's image of #%d opened with errno %v, want EIO", tc.what, errno)
			}
			if len(logged) != 1 || !strings.Contains(logged[0], "is not the delta file the catalog records") {
				t.Errorf("the mount logged %q", logged)
			}

			// Every other snapshot still reads.
			thinback(t, rs.dir, "", "restore", "other.img", "--store", rs.store, "--to", "other.out").want(t, 0, "restore of other.img")
		})
	}
}

// A record whose volume size disagrees with its delta file: verify
// reports it (before, it said "no problems", and the next backup took
// its parent size from the record, making an incremental no restore could
// apply), restore refuses the file, the next backup takes the size from
// the file, and catalog rebuild puts the file's size back in the record.
func TestRecordVolumeSizeMismatch(t *testing.T) {
	rs := newRecordedStore(t)
	s, err := catalog.OpenStore(rs.store)
	if err != nil {
		t.Fatal(err)
	}
	var rec catalog.Snapshot
	if err := s.Update(func(tx *catalog.Tx) error {
		var err error
		if rec, err = findSnapshot(tx, "disk.img", "3"); err != nil {
			return err
		}
		rec.VolumeSize = 2 << 20
		return tx.PutSnapshot(&rec)
	}); err != nil {
		t.Fatal(err)
	}

	r := thinback(t, rs.dir, "", "verify", "--store", rs.store)
	r.want(t, exitVerify, "verify of the store")
	if !strings.Contains(r.stdout, "BAD  disk.img #3") || !strings.Contains(r.stdout, "it holds a volume of 1048576 bytes, the record says 2097152") {
		t.Errorf("verify does not report the record of #3 against its file:\n%s", r.stdout)
	}
	r = thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--to", "r3.img")
	r.want(t, exitCorrupt, "restore of #3")

	// The next backup reads its base's chain from the files: it is not
	// built on the record's size.
	img := append([]byte(nil), rs.disk[2]...)
	copy(img[700000:], "the fourth backup")
	rs.write(t, "disk.img", img)
	r = thinback(t, rs.dir, "", "backup", "--store", rs.store, "--file", "disk.img")
	r.want(t, 0, "backup after the bad record")
	thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--to", "r4.img").want(t, 0, "restore of #4")
	if got, err := os.ReadFile(filepath.Join(rs.dir, "r4.img")); err != nil || !bytes.Equal(got, img) {
		t.Errorf("#4 does not restore to what was backed up (%v)", err)
	}

	thinback(t, rs.dir, "", "catalog", "rebuild", "--store", rs.store).want(t, 0, "catalog rebuild")
	if err := s.View(func(tx *catalog.Tx) error {
		got, err := tx.Snapshot(rec.ID)
		if err == nil && got.VolumeSize != 1<<20 {
			t.Errorf("after the rebuild, #3's record says %d bytes, want 1048576", got.VolumeSize)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	thinback(t, rs.dir, "", "verify", "--store", rs.store).want(t, 0, "verify after the rebuild")
	thinback(t, rs.dir, "", "restore", "disk.img", "--store", rs.store, "--snapshot", "3", "--to", "r3.img").want(t, 0, "restore of #3 after the rebuild")
	if got, err := os.ReadFile(filepath.Join(rs.dir, "r3.img")); err != nil || !bytes.Equal(got, rs.disk[2]) {
		t.Errorf("#3 does not restore after the rebuild (%v)", err)
	}
}

// An LVM backup's base is the newest recorded snapshot whose LV exists;
// a base whose record disagrees with its delta file (here its volume
// size) is not used: the backup makes a full and says why, instead of an
// incremental built on the record's sizes.
func TestNewestBaseChecksRecord(t *testing.T) {
	rs := newRecordedStore(t)
	s, err := catalog.OpenStore(rs.store)
	if err != nil {
		t.Fatal(err)
	}
	// Records as an LVM backup leaves them: the snapshot LV's UUID.
	setRecord := func(seq string, size int64) {
		t.Helper()
		if err := s.Update(func(tx *catalog.Tx) error {
			rec, err := findSnapshot(tx, "disk.img", seq)
			if err != nil {
				return err
			}
			rec.LVUUID, rec.VolumeSize = "lv-uuid-"+seq, size
			return tx.PutSnapshot(&rec)
		}); err != nil {
			t.Fatal(err)
		}
	}
	existing := []*lvmthin.LV{{VG: "vg0", Name: "disk.thinback.3", UUID: "lv-uuid-3"}}

	setRecord("3", 1<<20)
	base, rec, _, notes, err := backup.NewestBase(s, nil, "disk.img", existing, "the pool")
	if err != nil || base == nil || rec.Seq != 3 || len(notes) != 0 {
		t.Fatalf("newestBase with #3 as recorded: %v, #%d, %q, %v; want #3's LV", base, rec.Seq, notes, err)
	}

	setRecord("3", 2<<20)
	base, _, _, notes, err = backup.NewestBase(s, nil, "disk.img", existing, "the pool")
	if err != nil {
		t.Fatal(err)
	}
	if base != nil {
		t.Errorf("newestBase took #3 as the base though its record says 2 MiB and its file 1 MiB")
	}
	if len(notes) != 1 || !strings.Contains(notes[0], "making a full") || !strings.Contains(notes[0], "it holds a volume of 1048576 bytes, the record says 2097152") {
		t.Errorf("notes %q do not say why #3 is not the base", notes)
	}
}
