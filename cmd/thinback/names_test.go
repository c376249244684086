package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

const (
	titleName = "snap\x1b]0;you have been owned\x07"
	clearName = "x\x1b[2J\x1b[Hy"
	bidiValue = "/img/\u202egpj.exe"
)

// Names from a file or stream that would retitle the terminal, clear it
// or read backwards are printed escaped by receive, list, inspect, apply,
// verify and restore, and kept exact in --json.
func TestCraftedNamesEscaped(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("thinback"), 32<<10) // 256 KiB
	h := &archive.Header{VolumeName: "evil", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: titleName, Time: time.Now().UTC()}}
	h.SetAttr("file.path", clearName)
	h.SetAttr("note\x1b[31m", bidiValue)
	craft(t, filepath.Join(dir, "full.tbk"), h, data)
	data2 := append([]byte(nil), data...)
	copy(data2[4096:], "changed")
	h2 := &archive.Header{VolumeName: "evil", Snapshot: archive.Snapshot{ID: archive.NewID(), Name: clearName, Time: time.Now().UTC()},
		Parent: h.Snapshot, ParentSize: int64(len(data))}
	craft(t, filepath.Join(dir, "incr.tbk"), h2, data2, archive.Extent{Offset: 0, Length: 65536, Kind: archive.KindData})

	escTitle, escClear := `snap\x1b]0;you have been owned\a`, `x\x1b[2J\x1b[Hy`
	store := filepath.Join(dir, "store")
	check := func(what string, r result, wants ...string) {
		t.Helper()
		noRawControls(t, what, r.stdout)
		noRawControls(t, what, r.stderr)
		for _, w := range wants {
			if !strings.Contains(r.stdout+r.stderr, w) {
				t.Errorf("%s: output does not show %q", what, w)
			}
		}
	}
	r := thinback(t, dir, "full.tbk", "receive", "--store", store)
	r.want(t, 0, "receive")
	check("receive", r, escTitle)
	r = thinback(t, dir, "incr.tbk", "receive", "--store", store)
	r.want(t, 0, "receive incremental")
	check("receive incremental", r, escClear)
	r = thinback(t, dir, "", "list", "--store", store)
	r.want(t, 0, "list")
	check("list", r, "source "+escClear)
	r = thinback(t, dir, "", "inspect", "full.tbk")
	r.want(t, 0, "inspect")
	check("inspect", r, escTitle, escClear, `note\x1b[31m`, `/img/\u202egpj.exe`)
	r = thinback(t, dir, "", "apply", "full.tbk", "--to", "t.img")
	r.want(t, 0, "apply")
	check("apply", r, escTitle)
	r = thinback(t, dir, "", "verify", "--store", store)
	r.want(t, 0, "verify")
	check("verify", r)
	r = thinback(t, dir, "", "restore", "evil", "--store", store, "--to", "r.img")
	r.want(t, 0, "restore")
	check("restore", r)
	r = thinback(t, dir, "", "list", "--store", store, "--state", filepath.Join(dir, "state.db"))
	check("list with targets", r)

	// An error message that quotes the names: an incremental onto a
	// target that holds another snapshot.
	r = thinback(t, dir, "", "apply", "incr.tbk", "--to", "other.img")
	if r.code == 0 {
		t.Fatal("incremental applied to an unknown target")
	}
	check("apply error", r)

	// --json keeps every value exact.
	r = thinback(t, dir, "", "inspect", "--json", "full.tbk")
	r.want(t, 0, "inspect --json")
	var rep inspectReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Header.Snapshot.Name != titleName || len(rep.Header.Attrs) != 2 || rep.Header.Attrs[0].Value != clearName ||
		rep.Header.Attrs[1].Key != "note\x1b[31m" || rep.Header.Attrs[1].Value != bidiValue {
		t.Errorf("inspect --json changed the names: %+v", rep.Header)
	}
	r = thinback(t, dir, "", "list", "--json", "--store", store)
	r.want(t, 0, "list --json")
	var vols []listVolume
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Source != clearName || len(vols[0].Snapshots) != 2 ||
		vols[0].Snapshots[0].Name != titleName || vols[0].Snapshots[1].Name != clearName {
		t.Errorf("list --json changed the names: %+v", vols)
	}
}
