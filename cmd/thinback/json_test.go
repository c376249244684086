package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/catalog"
)

// decodeJSON runs thinback and decodes its standard output as one object
// of T, refusing fields T does not have.
func decodeJSON[T any](t *testing.T, dir string, args ...string) T {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := thinbackCmd(t, dir, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("thinback %q: %v\n%s", args, err, stderr.String())
	}
	var v T
	dec := json.NewDecoder(bytes.NewReader(stdout.Bytes()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("thinback %q: %v\n%s", args, err, stdout.String())
	}
	if dec.More() {
		t.Fatalf("thinback %q printed more than one object:\n%s", args, stdout.String())
	}
	return v
}

// TestApplyRestoreJSON: apply --json and restore --json print what the
// target holds now and what was written; a restore with nothing to do
// says so.
func TestApplyRestoreJSON(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("restored as JSON\n"), 60000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	run(t, work, "send", "--file", "disk.img", "-o", "full.tbk")

	a := decodeJSON[applyJSON](t, work, "apply", "full.tbk", "--to", "a.img", "--json")
	if a.Target != "a.img" || a.Volume != "disk.img" || a.Snapshot == "" || a.DataBytes == 0 ||
		len(a.Files) != 1 || a.Files[0] != "full.tbk" || a.NothingToDo {
		t.Errorf("apply --json: %+v", a)
	}
	sameFile(t, filepath.Join(work, "disk.img"), filepath.Join(work, "a.img"))

	r := decodeJSON[applyJSON](t, work, "restore", "disk.img", "--store", "store", "--to", "r.img", "--json")
	if r.Target != "r.img" || r.Volume != "disk.img" || r.Seq != 1 || len(r.Files) != 1 || r.Files[0] != r.Snapshot ||
		r.DataBytes+r.ZeroBytes != int64(len(img)) || r.NothingToDo {
		t.Errorf("restore --json: %+v", r)
	}
	sameFile(t, filepath.Join(work, "disk.img"), filepath.Join(work, "r.img"))

	again := decodeJSON[applyJSON](t, work, "restore", "disk.img", "--store", "store", "--to", "r.img", "--json")
	if !again.NothingToDo || again.Snapshot != r.Snapshot || again.DataBytes != 0 {
		t.Errorf("restore --json again: %+v", again)
	}
}

// TestSendJSON: send --json prints the summary of the file it wrote; with
// -o - (the delta on standard output) it is refused.
func TestSendJSON(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("sent as JSON\n"), 60000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	s := decodeJSON[sendJSON](t, work, "send", "--file", "disk.img", "-o", "full.tbk", "--json")
	fi, err := os.Stat(filepath.Join(work, "full.tbk"))
	if err != nil {
		t.Fatal(err)
	}
	if s.Volume != "disk.img" || s.Snapshot == "" || s.Parent != "" || s.Output != "full.tbk" || s.FileSize != fi.Size() ||
		s.VolumeSize != int64(len(img)) || s.DataBytes+s.ZeroBytes != int64(len(img)) || len(s.Digest) != 64 {
		t.Errorf("send --json: %+v (file of %d bytes)", s, fi.Size())
	}
	var stderr bytes.Buffer
	cmd := thinbackCmd(t, work, "send", "--file", "disk.img", "-o", "-", "--json")
	cmd.Stdout, cmd.Stderr = &bytes.Buffer{}, &stderr
	if err := cmd.Run(); exitOf(err) != 2 || !bytes.Contains(stderr.Bytes(), []byte("--json")) {
		t.Errorf("send -o - --json: %v, %q; want exit 2 naming --json", err, stderr.String())
	}
}

// TestReceiveJSON: receive --json into a store prints the snapshot's
// record; receive --to --json what the target holds, as apply does.
func TestReceiveJSON(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("received as JSON\n"), 60000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	s := decodeJSON[sendJSON](t, work, "send", "--file", "disk.img", "-o", "full.tbk", "--json")
	receive := func(args ...string) *bytes.Buffer {
		t.Helper()
		in, err := os.Open(filepath.Join(work, "full.tbk"))
		if err != nil {
			t.Fatal(err)
		}
		defer in.Close()
		var stdout, stderr bytes.Buffer
		cmd := thinbackCmd(t, work, append([]string{"receive", "--json"}, args...)...)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = in, &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("receive %q: %v\n%s", args, err, stderr.String())
		}
		return &stdout
	}
	var snap catalog.Snapshot
	dec := json.NewDecoder(receive("--store", "store"))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&snap); err != nil {
		t.Fatal(err)
	}
	if snap.ID != s.Snapshot || snap.Volume != "disk.img" || snap.Seq != 1 || snap.FileSize != s.FileSize || snap.File == "" {
		t.Errorf("receive --store --json: %+v, sent %+v", snap, s)
	}
	var a applyJSON
	dec = json.NewDecoder(receive("--to", "r.img"))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		t.Fatal(err)
	}
	if a.Target != "r.img" || a.Snapshot != s.Snapshot || a.DataBytes == 0 {
		t.Errorf("receive --to --json: %+v", a)
	}
	sameFile(t, filepath.Join(work, "disk.img"), filepath.Join(work, "r.img"))
}

// strictJSON decodes s as one T, refusing fields T does not have.
func strictJSON[T any](t *testing.T, what, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v\n%s", what, err, s)
	}
	return v
}

// TestKeyChangeJSON: init --json prints the store and its master key's
// id; key add, passwd and remove --json the slots added and removed,
// which key list then shows (or no longer shows).
func TestKeyChangeJSON(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	p1 := writeFile(t, filepath.Join(dir, "p1"), "first passphrase\n", 0o600)
	p2 := writeFile(t, filepath.Join(dir, "p2"), "second passphrase\n", 0o600)
	r := noTTY(t, dir, nil, argv("init", "--store", store, "--encrypt", "--password-file", p1, "--json", cheap)...)
	r.want(t, 0, "init --encrypt --json")
	first := keyList(t, dir, nil, store)[0]
	if in := strictJSON[initJSON](t, "init --json", r.stdout); in.Store != store || !in.Encrypted || in.KeyID != first.KeyID {
		t.Errorf("init --encrypt --json: %+v, key list shows key %s", in, first.KeyID)
	}
	r = noTTY(t, dir, nil, "init", "--store", filepath.Join(dir, "plain"), "--json")
	r.want(t, 0, "init --json")
	if in := strictJSON[initJSON](t, "init --json", r.stdout); in.Store != filepath.Join(dir, "plain") || in.Encrypted || in.KeyID != "" {
		t.Errorf("init --json: %+v", in)
	}

	r = noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", p1, "--new-key-file", filepath.Join(dir, "k"), "--json", cheap)...)
	r.want(t, 0, "key add --json")
	add := strictJSON[keyChangeJSON](t, "key add --json", r.stdout)
	if add.Added == "" || add.Type != "keyfile" || add.KeyID != first.KeyID || add.KeyFile != filepath.Join(dir, "k") || add.Store == "" {
		t.Errorf("key add --json: %+v", add)
	}
	r = noTTY(t, dir, nil, argv("key", "passwd", "--store", store, "--password-file", p1, "--new-password-file", p2, "--json", cheap)...)
	r.want(t, 0, "key passwd --json")
	pw := strictJSON[keyChangeJSON](t, "key passwd --json", r.stdout)
	if pw.Removed != first.ID || pw.Added == "" || pw.KeyID != first.KeyID {
		t.Errorf("key passwd --json: %+v", pw)
	}
	r = noTTY(t, dir, nil, argv("key", "remove", "--store", store, "--key-file", filepath.Join(dir, "k"), pw.Added, "--json")...)
	r.want(t, 0, "key remove --json")
	rm := strictJSON[keyChangeJSON](t, "key remove --json", r.stdout)
	if rm.Removed != pw.Added || rm.Added != "" || rm.Unlocked {
		t.Errorf("key remove --json: %+v", rm)
	}
	slots := keyList(t, dir, nil, store)
	if len(slots) != 1 || slots[0].ID != add.Added {
		t.Errorf("slots left: %+v, want only %s", slots, add.Added)
	}
}

// TestRebuildJSON: catalog rebuild --json counts what it recorded and
// names each file it left out (exit 1 then, as without --json).
func TestRebuildJSON(t *testing.T) {
	work := t.TempDir()
	img := bytes.Repeat([]byte("rebuilt as JSON\n"), 60000)
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	copy(img, "changed")
	if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, work, "backup", "--file", "disk.img", "--store", "store")
	files := storeFiles(t, filepath.Join(work, "store"))
	if err := os.Remove(filepath.Join(work, "store", "catalog.db")); err != nil {
		t.Fatal(err)
	}
	rb := decodeJSON[rebuildJSON](t, work, "catalog", "rebuild", "--store", "store", "--json")
	if rb.Store != "store" || rb.Volumes != 1 || rb.Files != 2 || len(rb.Skipped) != 0 {
		t.Errorf("catalog rebuild --json: %+v", rb)
	}

	if err := os.WriteFile(files[1], []byte("not a delta file"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := thinbackCmd(t, work, "catalog", "rebuild", "--store", "store", "--json")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); exitOf(err) != 1 {
		t.Fatalf("rebuild with a damaged file: %v, want exit 1\n%s", err, stderr.String())
	}
	rb = strictJSON[rebuildJSON](t, "catalog rebuild --json", stdout.String())
	if rb.Files != 1 || len(rb.Skipped) != 1 || rb.Skipped[0].Error == "" || !strings.HasSuffix(files[1], rb.Skipped[0].File) {
		t.Errorf("catalog rebuild --json with a damaged file: %+v (damaged %s)", rb, files[1])
	}
}
