package catalog_test

import (
	"fmt"
	"os"
	"time"

	"github.com/thinback/thinback/catalog"
)

// A backup run: lock the volume, write the delta file under a temporary
// name, commit it. Commit makes the file durable under its final name
// before it records the snapshot.
func ExampleStore_Commit() {
	dir, err := os.MkdirTemp("", "thinback-example-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	store, err := catalog.OpenStore(dir) // the first backup creates the store
	if err != nil {
		fmt.Println(err)
		return
	}
	unlock, err := store.LockVolume("vg0/vm1")
	if err != nil {
		fmt.Println(err) // errors.Is(err, catalog.ErrLocked): the previous run is still going
		return
	}
	defer unlock()

	err = store.Update(func(tx *catalog.Tx) error {
		if _, err := tx.Volume("vg0/vm1"); err == nil {
			return nil
		}
		return tx.PutVolume(&catalog.Volume{Name: "vg0/vm1", Kind: catalog.KindLVMThin, Source: "vg0/vm1", BlockSize: 64 << 10})
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	f, err := store.CreateTemp("vg0/vm1")
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := f.WriteString("delta file contents"); err != nil {
		_ = store.Discard(f)
		fmt.Println(err)
		return
	}
	snap := &catalog.Snapshot{
		ID:         "7d0c1d4e-5f7a-4c55-9a8e-2f1b0c3d4e5f", // from the delta file's header
		Volume:     "vg0/vm1",
		Time:       time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC),
		LVName:     "vm1.thinback.20261120T030000Z",
		FileDigest: "9f2c",
	}
	if err := store.Commit(f, snap); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(snap.Seq, snap.File, snap.FileSize)

	err = store.View(func(tx *catalog.Tx) error {
		latest, err := tx.Latest("vg0/vm1")
		fmt.Println(latest.ID == snap.ID, latest.IsFull())
		return err
	})
	if err != nil {
		fmt.Println(err)
	}
	// Output:
	// 1 volumes/vg0%2Fvm1/00000001-7d0c1d4e-5f7a-4c55-9a8e-2f1b0c3d4e5f.tbk 19
	// true true
}

// Hourly backups for three days, pruned to the last 4 and one per day for
// a week, as Proxmox Backup Server would.
func ExampleRetention_Select() {
	var snaps []catalog.Snapshot
	start := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	for h := 0; h < 72; h += 6 {
		snaps = append(snaps, catalog.Snapshot{Seq: uint64(h + 1), Time: start.Add(time.Duration(h) * time.Hour)})
	}
	policy := catalog.Retention{KeepLast: 4, KeepDaily: 7}
	keep, remove := policy.Select(snaps, time.UTC)
	for _, s := range keep {
		fmt.Println("keep", s.Time.Format("Mon 02 15:04"))
	}
	fmt.Println("remove", len(remove))
	// Output:
	// keep Fri 20 18:00
	// keep Sat 21 18:00
	// keep Sun 22 00:00
	// keep Sun 22 06:00
	// keep Sun 22 12:00
	// keep Sun 22 18:00
	// remove 6
}
