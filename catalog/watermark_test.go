package catalog

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// A host's state file keeps, per master key and volume, the newest
// snapshot it saw, and per store the key it was under; records of one key
// are apart from another's, and a volume name holding '/' stays whole.
func TestWatermarks(t *testing.T) {
	path, _ := newTestFile(t)
	db := fileDB(path)
	const k1, k2 = "0123456789abcdef", "fedcba9876543210"
	taken := time.Date(2026, 11, 20, 3, 0, 0, 0, time.UTC)
	a := Watermark{KeyID: k1, Volume: "vg0/vm1", Seq: 7, Snapshot: newID(), Name: "vm1.thinback.x", Time: taken,
		FileDigest: strings.Repeat("ab", 32), Store: "/backup"}
	b := Watermark{KeyID: k1, Volume: "vg0/vm2", Seq: 1, Snapshot: newID(), Time: taken}
	c := Watermark{KeyID: k2, Volume: "vg0/vm1", Seq: 3, Snapshot: newID(), Time: taken}
	sk := StoreKey{Store: "/backup", KeyID: k1}
	mustView(t, db, func(tx *Tx) error {
		if _, err := tx.Watermark(k1, "vg0/vm1"); !errors.Is(err, ErrNotFound) {
			t.Errorf("Watermark of an empty file: %v, want ErrNotFound", err)
		}
		if _, err := tx.StoreKey("/backup"); !errors.Is(err, ErrNotFound) {
			t.Errorf("StoreKey of an empty file: %v, want ErrNotFound", err)
		}
		return nil
	})
	mustUpdate(t, db, func(tx *Tx) error {
		for _, w := range []*Watermark{&a, &b, &c} {
			if err := tx.PutWatermark(w); err != nil {
				return err
			}
		}
		return tx.PutStoreKey(&sk)
	})
	if a.Updated.IsZero() || sk.Updated.IsZero() {
		t.Error("PutWatermark or PutStoreKey did not set Updated")
	}
	mustView(t, db, func(tx *Tx) error {
		got, err := tx.Watermark(k1, "vg0/vm1")
		if err != nil {
			return err
		}
		if !got.Time.Equal(a.Time) || !got.Updated.Equal(a.Updated) {
			t.Errorf("times: %v %v", got.Time, got.Updated)
		}
		got.Time, got.Updated = a.Time, a.Updated
		if !reflect.DeepEqual(got, a) {
			t.Errorf("Watermark = %+v, want %+v", got, a)
		}
		ws, err := tx.Watermarks(k1)
		if err != nil {
			return err
		}
		if len(ws) != 2 || ws[0].Volume != "vg0/vm1" || ws[1].Volume != "vg0/vm2" || ws[0].Seq != 7 {
			t.Errorf("Watermarks(k1) = %+v, want vm1 #7 and vm2", ws)
		}
		if ws, err := tx.Watermarks(k2); err != nil || len(ws) != 1 || ws[0].Seq != 3 {
			t.Errorf("Watermarks(k2) = %+v, %v; want vm1 #3 alone", ws, err)
		}
		if ws, err := tx.Watermarks("0123"); err != nil || len(ws) != 0 {
			t.Errorf("Watermarks of a prefix of a key id = %+v, %v; want none", ws, err)
		}
		k, err := tx.StoreKey("/backup")
		if err != nil || k.KeyID != k1 {
			t.Errorf("StoreKey = %+v, %v", k, err)
		}
		return nil
	})
	// Put replaces, whatever it replaces (the caller decides the
	// direction); Delete removes one, and says when there is none.
	back := a
	back.Seq, back.Snapshot, back.Updated = 2, newID(), time.Time{}
	mustUpdate(t, db, func(tx *Tx) error {
		if err := tx.PutWatermark(&back); err != nil {
			return err
		}
		if err := tx.DeleteWatermark(k1, "vg0/vm2"); err != nil {
			return err
		}
		if err := tx.DeleteWatermark(k1, "vg0/vm2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second DeleteWatermark: %v, want ErrNotFound", err)
		}
		if err := tx.DeleteStoreKey("/backup"); err != nil {
			return err
		}
		if err := tx.DeleteStoreKey("/backup"); !errors.Is(err, ErrNotFound) {
			t.Errorf("second DeleteStoreKey: %v, want ErrNotFound", err)
		}
		return nil
	})
	mustView(t, db, func(tx *Tx) error {
		if w, err := tx.Watermark(k1, "vg0/vm1"); err != nil || w.Seq != 2 || w.Snapshot != back.Snapshot {
			t.Errorf("after Put: %+v, %v; want #2 %s", w, err, back.Snapshot)
		}
		if ws, err := tx.Watermarks(k1); err != nil || len(ws) != 1 {
			t.Errorf("after Delete: %+v, %v", ws, err)
		}
		return nil
	})
	// A read-only transaction writes nothing.
	mustView(t, db, func(tx *Tx) error {
		if err := tx.PutWatermark(&c); !errors.Is(err, ErrReadOnly) {
			t.Errorf("PutWatermark in View: %v, want ErrReadOnly", err)
		}
		if err := tx.PutStoreKey(&sk); !errors.Is(err, ErrReadOnly) {
			t.Errorf("PutStoreKey in View: %v, want ErrReadOnly", err)
		}
		return nil
	})
}

// Bad records are refused when written, and a damaged one is an error
// naming it when read, and a problem Check reports.
func TestWatermarkInvalid(t *testing.T) {
	path, c := newTestFile(t)
	db := fileDB(path)
	good := Watermark{KeyID: "0123456789abcdef", Volume: "v", Seq: 1, Snapshot: newID(), Time: time.Now()}
	for name, mutate := range map[string]func(*Watermark){
		"no key id":       func(w *Watermark) { w.KeyID = "" },
		"key id not hex":  func(w *Watermark) { w.KeyID = "0123/567" },
		"key id upper":    func(w *Watermark) { w.KeyID = "ABCDEF" },
		"key id too long": func(w *Watermark) { w.KeyID = strings.Repeat("a", 65) },
		"no volume":       func(w *Watermark) { w.Volume = "" },
		"control in name": func(w *Watermark) { w.Volume = "v\x1b[2J" },
		"seq 0":           func(w *Watermark) { w.Seq = 0 },
		"bad snapshot":    func(w *Watermark) { w.Snapshot = "x" },
		"bad digest":      func(w *Watermark) { w.FileDigest = "xyz" },
		"huge store":      func(w *Watermark) { w.Store = strings.Repeat("s", maxField+1) },
	} {
		w := good
		mutate(&w)
		err := db.Update(func(tx *Tx) error { return tx.PutWatermark(&w) })
		if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: %v, want ErrInvalidRecord", name, err)
		}
	}
	for name, k := range map[string]StoreKey{
		"no store":  {KeyID: "ab"},
		"no key id": {Store: "/s"},
		"bad key":   {Store: "/s", KeyID: "zz"},
	} {
		err := db.Update(func(tx *Tx) error { return tx.PutStoreKey(&k) })
		if !errors.Is(err, ErrInvalidRecord) {
			t.Errorf("%s: %v, want ErrInvalidRecord", name, err)
		}
	}
	mustUpdate(t, db, func(tx *Tx) error { return tx.PutWatermark(&good) })
	// Stored under another volume's key: a record moved by hand.
	putRaw(t, path, bucketMarks, "0123456789abcdef/w", []byte(`{"key_id":"0123456789abcdef","volume":"v","seq":1,"snapshot":"`+good.Snapshot+`","time":"2026-01-01T00:00:00Z"}`))
	putRaw(t, path, bucketStoreKeys, "/s", []byte(`{"store":"/s","key_id":"not hex"}`))
	mustView(t, db, func(tx *Tx) error {
		if _, err := tx.Watermark("0123456789abcdef", "w"); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "0123456789abcdef/w") {
			t.Errorf("moved watermark: %v, want ErrCorrupt naming its key", err)
		}
		if _, err := tx.Watermarks("0123456789abcdef"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Watermarks with a damaged one: %v, want ErrCorrupt", err)
		}
		if _, err := tx.StoreKey("/s"); !errors.Is(err, ErrCorrupt) {
			t.Errorf("damaged store key: %v, want ErrCorrupt", err)
		}
		problems := tx.Check(CheckOptions{})
		if len(problems) != 2 || !errors.Is(problems[0], ErrCorrupt) || !errors.Is(problems[1], ErrCorrupt) {
			t.Errorf("Check = %v, want the two damaged records", problems)
		}
		return nil
	})
	c.expect(ErrCorrupt, ErrCorrupt)
}
