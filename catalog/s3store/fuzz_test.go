package s3store

import (
	"strings"
	"testing"

	"github.com/thinback/thinback/catalog"
)

// FuzzDecode feeds object names and contents, as a bucket anyone may
// write to holds them, to the decoders of records, volume records and
// journals: none panics, and what one accepts describes what its name
// says.
func FuzzDecode(f *testing.F) {
	sn := snapOf("vg0/vm1", "01234567-0000-4000-8000-000000000001", "", []byte("x"), 0)
	sn.Seq, sn.File, sn.FileSize = 3, catalog.FileName("vg0/vm1", 3, sn.ID, 0), 1
	vol := testVolume("vg0/vm1")
	rec, _ := encode(recordObject{Format: recordFormat, Volume: vol, Snapshot: sn})
	vo, _ := encode(volumeObject{Format: volumeFormat, Volume: vol})
	jo, _ := encode(journalObject{Format: journalFormat, Op: "write", Files: []string{sn.File}})
	f.Add(recordName("vg0/vm1", 3, sn.ID), rec)
	f.Add(volumeObjectName("vg0/vm1"), vo)
	f.Add(recordPrefix("vg0/vm1")+"journal-1-0123456789abcdef.json", jo)
	f.Add(recordName("vg0/vm2", 3, sn.ID), rec)
	f.Add("records/x/00000001-zz.json", []byte("{"))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		volume, kind, seq, id := parseRecordName(name)
		if kind != kindUnknown && !strings.HasPrefix(name, recordsDir) {
			t.Fatalf("%q parsed as kind %d", name, kind)
		}
		if r, err := decodeRecord(name, data); err == nil {
			if kind != kindSnapshot || r.Snapshot.Volume != volume || r.Snapshot.Seq != seq || r.Snapshot.ID != id {
				t.Fatalf("record %q accepted for %+v", name, r.Snapshot)
			}
			if f, ok := catalog.ParseFile(r.Snapshot.File); !ok || f.Volume != volume {
				t.Fatalf("record %q accepted with file %q", name, r.Snapshot.File)
			}
		}
		if v, err := decodeVolume(name, data); err == nil && (kind != kindVolume || v.Name != volume) {
			t.Fatalf("volume record %q accepted for %q", name, v.Name)
		}
		if j, err := decodeJournal(name, data); err == nil {
			for _, file := range j.Files {
				if f, ok := catalog.ParseFile(file); !ok || f.Volume != volume {
					t.Fatalf("journal %q accepted naming %q", name, file)
				}
			}
		}
		if f, n, ok := parsePiece(name); ok && (n < 1 || !strings.HasPrefix(name, f.Path)) {
			t.Fatalf("piece %q parsed as %d of %q", name, n, f.Path)
		}
	})
}
