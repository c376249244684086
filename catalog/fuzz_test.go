package catalog

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// fuzzDecode checks, for any stored bytes under any key, that decoding
// never panics; that a failure is a RecordError naming the key; and that a
// success is a valid record that survives a round trip.
func fuzzDecode[T any, P interface {
	*T
	record
}](t *testing.T, bucket []byte, key string, data []byte) {
	v, err := decode[T, P](bucket, []byte(key), data)
	if err != nil {
		var re *RecordError
		if !errors.Is(err, ErrCorrupt) || !errors.As(err, &re) || re.Key != key ||
			!strings.Contains(err.Error(), strconv.Quote(key)) {
			t.Fatalf("decode error %v does not name key %q", err, key)
		}
		return
	}
	if err := P(&v).validate(key); err != nil {
		t.Fatalf("decoded record does not validate: %v", err)
	}
	again, err := json.Marshal(P(&v))
	if err != nil {
		t.Fatal(err)
	}
	w, err := decode[T, P](bucket, []byte(key), again)
	if err != nil {
		t.Fatalf("re-encoded record does not decode: %v\n%s", err, again)
	}
	third, _ := json.Marshal(P(&w))
	if string(third) != string(again) {
		t.Fatalf("round trip changed the record:\n%s\n%s", again, third)
	}
}

func seedRecords(f *testing.F, key string, good []byte) {
	f.Add(key, good)
	f.Add(key, []byte(`null`))
	f.Add(key, []byte(`{}`))
	f.Add(key, []byte(`[]`))
	f.Add(key, []byte(`{"unknown_future_field": {"x": [1, 2]}}`))
	f.Add(key, good[:len(good)/2])
	f.Add("", good)
}

func FuzzDecodeSnapshot(f *testing.F) {
	id := "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
	good, _ := json.Marshal(&Snapshot{ID: id, Volume: "vg0/vm1", Parent: "00000000-0000-4000-8000-000000000001",
		Seq: 3, Time: baseTime, File: "volumes/vg0%2Fvm1/00000003-" + id + ".tbk", FileDigest: "abcd", FileSize: 10})
	seedRecords(f, id, good)
	f.Add(id, []byte(`{"id":"`+id+`","volume":"v","seq":1,"time":"2026-01-01T00:00:00Z","file":"volumes/../../etc/shadow"}`))
	f.Add(id, []byte(`{"id":"`+id+`","volume":"v","seq":1,"time":"2026-01-01T00:00:00Z","file":"volumes/v/x","extra":1}`))
	f.Fuzz(func(t *testing.T, key string, data []byte) { fuzzDecode[Snapshot](t, bucketSnapshots, key, data) })
}

func FuzzDecodeVolume(f *testing.F) {
	good, _ := json.Marshal(&Volume{Name: "vg0/vm1", Kind: KindLVMThin, BlockSize: 65536, Created: baseTime,
		Retention: Retention{KeepDaily: 7}})
	seedRecords(f, "vg0/vm1", good)
	f.Fuzz(func(t *testing.T, key string, data []byte) { fuzzDecode[Volume](t, bucketVolumes, key, data) })
}

func FuzzDecodeTarget(f *testing.F) {
	good, _ := json.Marshal(&Target{Key: "/dev/vg1/x", Path: "/dev/vg1/x", Snapshot: "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0",
		InProgress: &Mark{Snapshot: "00000000-0000-4000-8000-000000000001", Files: []string{"a.tbk"}}})
	seedRecords(f, "/dev/vg1/x", good)
	f.Fuzz(func(t *testing.T, key string, data []byte) { fuzzDecode[Target](t, bucketTargets, key, data) })
}

// FuzzParseDirName: whatever directory name is found in a store, it maps
// back to at most one volume, and only DirName's own output is accepted.
func FuzzParseDirName(f *testing.F) {
	for _, s := range []string{"vg0%2Fvm1", "disk.img", "%2E.", "a%2fb", "%", "%4", ".x", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, dir string) {
		name, err := ParseDirName(dir)
		if err != nil {
			return
		}
		if DirName(name) != dir {
			t.Fatalf("ParseDirName(%q) = %q, but DirName of that is %q", dir, name, DirName(name))
		}
		if !reflect.DeepEqual(ValidVolumeName(name), nil) {
			t.Fatalf("ParseDirName(%q) accepted invalid name %q", dir, name)
		}
	})
}
