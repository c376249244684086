package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/archive/keys"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/storetest"
	"github.com/urfave/cli/v2"
)

// cheap makes passphrase slots with Argon2id's least cost, so the tests
// stay fast.
var cheap = []string{"--pbkdf-memory", "8", "--pbkdf-time", "1"}

// noTTY runs thinback in dir in a session of its own, with no
// controlling terminal to ask a passphrase at, with env added.
func noTTY(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return runNoTTY(t, dir, "", env, args...)
}

// noTTYIn is noTTY with standard input from the file stdin.
func noTTYIn(t *testing.T, dir, stdin string, env []string, args ...string) result {
	t.Helper()
	return runNoTTY(t, dir, stdin, env, args...)
}

func argv(parts ...any) []string {
	var a []string
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			a = append(a, p)
		case []string:
			a = append(a, p...)
		}
	}
	return a
}

// listedSlot is a slot as key list --json prints it.
type listedSlot struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Label    string `json:"label"`
	KeyID    string `json:"key_id"`
	Argon2id *struct {
		Time      int `json:"time"`
		MemoryKiB int `json:"memory_kib"`
	} `json:"argon2id"`
	Recipient string `json:"recipient"`
	Error     string `json:"error"`
}

// keyList runs key list --json and returns the slots.
func keyList(t *testing.T, dir string, env []string, store string) []listedSlot {
	t.Helper()
	r := noTTY(t, dir, env, "key", "list", "--store", store, "--json")
	r.want(t, 0, "key list")
	var out struct {
		Slots []listedSlot `json:"slots"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("key list --json: %v\n%s", err, r.stdout)
	}
	return out.Slots
}

func writeFile(t *testing.T, path, text string, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// masterKeyID is the key id init --encrypt printed.
var masterKeyID = regexp.MustCompile(`encrypted under master key ([0-9a-f]{16})`)

// TestInitEncrypt: init --encrypt makes a master key, a passphrase slot
// and, with --new-key-file, a 0600 key file and its slot, and prints the
// key id key list shows; a store with slots, a key file path that exists,
// a store of plain backups and a run with no passphrase and no terminal
// are refused, changing nothing.
func TestInitEncrypt(t *testing.T) {
	dir := t.TempDir()
	pass := writeFile(t, filepath.Join(dir, "pass"), "correct horse\n", 0o600)
	store := filepath.Join(dir, "store")
	r := noTTY(t, dir, nil, argv("init", "--store", store, "--encrypt", "--password-file", pass, "--new-key-file", "cron.key", cheap)...)
	r.want(t, 0, "init --encrypt")
	m := masterKeyID.FindStringSubmatch(r.stderr)
	if m == nil || !strings.Contains(r.stderr, "lose every slot's secret and the backups are lost") {
		t.Fatalf("init --encrypt did not print the master key id and what to keep where:\n%s", r.stderr)
	}
	fi, err := os.Stat(filepath.Join(dir, "cron.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, %v", fi, err)
	}
	slots := keyList(t, dir, nil, store)
	types := map[string]int{}
	for _, s := range slots {
		types[s.Type]++
		if s.KeyID != m[1] {
			t.Errorf("slot %s wraps key %s, init printed %s", s.ID, s.KeyID, m[1])
		}
		if !strings.Contains(r.stderr, s.ID) {
			t.Errorf("init did not print slot %s", s.ID)
		}
		if s.Type == "passphrase" && (s.Argon2id == nil || s.Argon2id.MemoryKiB != 8<<10 || s.Argon2id.Time != 1) {
			t.Errorf("passphrase slot's argon2id: %+v, want the --pbkdf-* given", s.Argon2id)
		}
	}
	if len(slots) != 2 || types["passphrase"] != 1 || types["keyfile"] != 1 {
		t.Fatalf("slots %+v, want a passphrase and a key file slot", slots)
	}
	// Both secrets open it (key add unlocks first).
	noTTY(t, dir, nil, argv("key", "add", "--store", store, "--key-file", "cron.key", "--new-key-file", "second.key")...).want(t, 0, "key add with the key file")

	// Again: refused, nothing changed.
	before := keyList(t, dir, nil, store)
	r = noTTY(t, dir, nil, argv("init", "--store", store, "--encrypt", "--password-file", pass, cheap)...)
	r.want(t, 1, "init --encrypt of an encrypted store")
	if !strings.Contains(r.stderr, "already has key slots") {
		t.Errorf("message: %s", r.stderr)
	}
	if after := keyList(t, dir, nil, store); len(after) != len(before) {
		t.Fatalf("slots %d, were %d", len(after), len(before))
	}

	// A key file is never made over an existing file, and the store is
	// not made either.
	exist := writeFile(t, filepath.Join(dir, "exists"), "not a key", 0o600)
	r = noTTY(t, dir, nil, argv("init", "--store", "other", "--encrypt", "--password-file", pass, "--new-key-file", exist, cheap)...)
	r.want(t, 1, "init --encrypt --new-key-file over a file")
	if b, _ := os.ReadFile(exist); string(b) != "not a key" {
		t.Fatal("the existing file was changed")
	}
	if _, err := os.Stat(filepath.Join(dir, "other")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a store was made: %v", err)
	}

	// No passphrase and no terminal: exit 14, naming where to give one;
	// no store made.
	r = noTTY(t, dir, nil, argv("init", "--store", "none", "--encrypt", cheap)...)
	r.want(t, 14, "init --encrypt without a passphrase")
	if !strings.Contains(r.stderr, "--password-file") || !strings.Contains(r.stderr, "THINBACK_PASSWORD") {
		t.Errorf("message does not say how to give the passphrase: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "none")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a store was made: %v", err)
	}

	// A store of plain backups: refused, "make a new store".
	img := filepath.Join(dir, "disk.img")
	writeFile(t, img, strings.Repeat("thinback", 1<<14), 0o600)
	plain := filepath.Join(dir, "plain")
	noTTY(t, dir, nil, "backup", "--file", img, "--store", plain).want(t, 0, "plain backup")
	r = noTTY(t, dir, nil, argv("init", "--store", plain, "--encrypt", "--password-file", pass, cheap)...)
	r.want(t, 2, "init --encrypt of a store of plain backups")
	if !strings.Contains(r.stderr, "make a new store") || !strings.Contains(r.stderr, plain) {
		t.Errorf("message: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(plain, "keys")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("key slots were written: %v", err)
	}
	// ... as is a backup with --encrypt into it, and with --no-encrypt
	// into an encrypted one.
	r = noTTY(t, dir, []string{"THINBACK_PASSWORD=x"}, "backup", "--file", img, "--store", plain, "--encrypt")
	r.want(t, 2, "backup --encrypt into a store of plain backups")
	r = noTTY(t, dir, nil, "backup", "--file", img, "--store", store, "--no-encrypt")
	r.want(t, 2, "backup --no-encrypt into an encrypted store")
	if !strings.Contains(r.stderr, store) || !strings.Contains(r.stderr, "is encrypted") {
		t.Errorf("message: %s", r.stderr)
	}
	// --encrypt on an encrypted store is what it is already; a new
	// slot's option there adds nothing, and says so.
	r = noTTY(t, dir, nil, "backup", "--file", img, "--store", store, "--encrypt", "--password-file", pass, "--new-key-file", "late.key")
	r.want(t, 0, "backup --encrypt into an encrypted store")
	if !strings.Contains(r.stderr, "nothing was added") {
		t.Errorf("backup --new-key-file into an encrypted store did not warn: %s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "late.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a key file was made: %v", err)
	}
	// The options of a new key without --encrypt: refused, not ignored.
	for _, opt := range [][]string{{"--new-key-file", "k2"}, {"--recovery-recipient", "age1x"}, {"--pbkdf-memory", "8"}} {
		r = noTTY(t, dir, nil, argv("init", "--store", "forgot", "--password-file", pass, opt)...)
		r.want(t, 2, "init "+opt[0]+" without --encrypt")
		if !strings.Contains(r.stderr, "--encrypt") {
			t.Errorf("message: %s", r.stderr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "forgot")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a store was made: %v", err)
	}
	// A local directory stays plain without --encrypt.
	noTTY(t, dir, nil, "init", "--store", "local").want(t, 0, "init of a local store")
	if _, err := os.Stat(filepath.Join(dir, "local", "keys")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a plain init made key slots: %v", err)
	}
}

// TestNewStoreOffMachine: a store on S3 (the real versitygw) is made only
// with --encrypt or --no-encrypt, by init and by a first backup; with
// --encrypt it has key slots, the first backup's made as init makes
// them.
func TestNewStoreOffMachine(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	env := s3Env(t, srv, filepath.Join(dir, "cache"))
	img := filepath.Join(dir, "disk.img")
	writeFile(t, img, strings.Repeat("off site", 1<<14), 0o600)
	pass := writeFile(t, filepath.Join(dir, "pass"), "bucket passphrase\n", 0o600)
	objects := func(prefix string) []string {
		t.Helper()
		var names []string
		for oi := range srv.Client().ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
			if oi.Err != nil {
				t.Fatal(oi.Err)
			}
			names = append(names, oi.Key)
		}
		return names
	}

	stream := filepath.Join(dir, "full.tbk")
	noTTY(t, dir, env, "send", "--file", img, "-o", stream).want(t, 0, "send")
	for _, cmd := range [][]string{
		{"init", "--store", srv.Location("a")},
		{"backup", "--file", img, "--store", srv.Location("a")},
		{"receive", "--store", srv.Location("a")},
	} {
		r := noTTYIn(t, dir, stream, env, cmd...)
		r.want(t, 2, cmd[0]+" into a new S3 store without --encrypt or --no-encrypt")
		if !strings.Contains(r.stderr, "--encrypt") || !strings.Contains(r.stderr, "--no-encrypt") {
			t.Errorf("message does not name the flags: %s", r.stderr)
		}
		if o := objects("a"); len(o) != 0 {
			t.Fatalf("%s wrote %q", cmd[0], o)
		}
	}

	// --no-encrypt: a plain store, into which later runs need no flag.
	noTTY(t, dir, env, "init", "--store", srv.Location("plain"), "--no-encrypt").want(t, 0, "init --no-encrypt")
	noTTY(t, dir, env, "backup", "--file", img, "--store", srv.Location("plain")).want(t, 0, "backup into a plain S3 store")
	if o := objects("plain/keys"); len(o) != 0 {
		t.Fatalf("a plain store has key slots: %q", o)
	}
	r := noTTY(t, dir, env, argv("backup", "--file", img, "--store", srv.Location("plain"), "--encrypt", "--password-file", pass, cheap)...)
	r.want(t, 2, "backup --encrypt into an S3 store of plain backups")

	noTTYIn(t, dir, stream, env, "receive", "--store", srv.Location("received"), "--no-encrypt").want(t, 0, "receive --no-encrypt into a new S3 store")
	if o := objects("received/volumes"); len(o) != 1 {
		t.Fatalf("received %q", o)
	}

	// init --encrypt.
	r = noTTY(t, dir, env, argv("init", "--store", srv.Location("enc"), "--encrypt", "--password-file", pass, cheap)...)
	r.want(t, 0, "init --encrypt on S3")
	if s := keyList(t, dir, env, srv.Location("enc")); len(s) != 1 || s[0].Type != "passphrase" {
		t.Fatalf("slots %+v", s)
	}
	noTTY(t, dir, env, "init", "--store", srv.Location("enc"), "--no-encrypt").want(t, 2, "init --no-encrypt of an encrypted S3 store")

	// The first backup with --encrypt makes the key as init does, its
	// passphrase from the environment.
	r = noTTY(t, dir, append(env, "THINBACK_PASSWORD=from the environment"),
		argv("backup", "--file", img, "--store", srv.Location("first"), "--encrypt", cheap)...)
	r.want(t, 0, "first backup --encrypt")
	if !masterKeyID.MatchString(r.stderr) {
		t.Errorf("backup --encrypt did not print the master key id:\n%s", r.stderr)
	}
	s := keyList(t, dir, env, srv.Location("first"))
	if len(s) != 1 || s[0].Type != "passphrase" {
		t.Fatalf("slots %+v", s)
	}
	// The passphrase from the environment is the one of the slot.
	r = noTTY(t, dir, append(env, "THINBACK_PASSWORD=wrong"), "key", "add", "--store", srv.Location("first"), "--new-key-file", filepath.Join(dir, "k"))
	r.want(t, 14, "key add with a wrong passphrase")
	r = noTTY(t, dir, append(env, "THINBACK_PASSWORD=from the environment"), "key", "add", "--store", srv.Location("first"), "--new-key-file", filepath.Join(dir, "k"))
	r.want(t, 0, "key add with the passphrase the first backup was given")

	// The key slots' lock object: held by another, exit 9, nothing
	// changed.
	other, err := s3store.Open(context.Background(), s3.Location{Insecure: true, Host: srv.Addr, Bucket: srv.Bucket, Prefix: "first"},
		&s3store.Options{S3: s3.Options{AccessKey: s3test.AccessKey, SecretKey: s3test.SecretKey, Region: "us-east-1", Lookup: s3.LookupPath},
			Cache: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	unlock, err := other.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	r = noTTY(t, dir, env, "key", "remove", "--store", srv.Location("first"), "--key-file", filepath.Join(dir, "k"), s[0].ID)
	r.want(t, 9, "key remove while another holds the key slots' lock")
	if !strings.Contains(r.stderr, "key slots") {
		t.Errorf("message: %s", r.stderr)
	}
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if n := len(keyList(t, dir, env, srv.Location("first"))); n != 2 {
		t.Fatalf("%d slots, want 2", n)
	}
}

// TestKeyCommands: key add, list, passwd and remove round trips on a
// directory store; wrong passphrases from a file, a command and the
// environment are exit 14, as is no secret at all without a terminal;
// the last slot is never removed.
func TestKeyCommands(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	p1 := writeFile(t, filepath.Join(dir, "p1"), "first passphrase\n", 0o600)
	p2 := writeFile(t, filepath.Join(dir, "p2"), "second passphrase\n", 0o600)
	p3 := writeFile(t, filepath.Join(dir, "p3"), "third passphrase\n", 0o600)
	wrong := writeFile(t, filepath.Join(dir, "wrong"), "wrong passphrase\n", 0o600)
	noTTY(t, dir, nil, argv("init", "--store", store, "--encrypt", "--password-file", p1, cheap)...).want(t, 0, "init --encrypt")
	first := keyList(t, dir, nil, store)[0]

	// Wrong passphrases, from each source: 14, nothing changed.
	for name, r := range map[string]result{
		"file":        noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", wrong, "--new-passphrase", "--new-password-file", p2, cheap)...),
		"command":     noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-command", "echo wrong", "--new-passphrase", "--new-password-file", p2, cheap)...),
		"environment": noTTY(t, dir, []string{"THINBACK_PASSWORD=wrong"}, argv("key", "add", "--store", store, "--new-passphrase", "--new-password-file", p2, cheap)...),
	} {
		r.want(t, 14, "a wrong passphrase from the "+name)
		if !strings.Contains(r.stderr, "wrong passphrase") {
			t.Errorf("%s: message %s", name, r.stderr)
		}
	}
	// No secret and no terminal: 14, naming the flags.
	r := noTTY(t, dir, nil, argv("key", "add", "--store", store, "--new-passphrase", "--new-password-file", p2, cheap)...)
	r.want(t, 14, "key add without a secret")
	for _, f := range []string{"--key-file", "--password-file", "--password-command", "THINBACK_PASSWORD", "--recovery-identity"} {
		if !strings.Contains(r.stderr, f) {
			t.Errorf("message does not name %s: %s", f, r.stderr)
		}
	}
	if n := len(keyList(t, dir, nil, store)); n != 1 {
		t.Fatalf("%d slots after refused adds", n)
	}
	// The new passphrase never comes from the unlocking sources.
	r = noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", p1, "--new-passphrase", cheap)...)
	r.want(t, 2, "key add --new-passphrase without its source")
	// One new secret at a time, at a cost within the bounds of a slot.
	for _, bad := range [][]string{
		argv("--new-passphrase", "--new-password-file", p2, "--new-key-file", filepath.Join(dir, "k"), cheap),
		argv(cheap),
		argv("--new-passphrase", "--new-password-file", p2, "--pbkdf-memory", "4", "--pbkdf-time", "1"),
		argv("--new-passphrase", "--new-password-file", p2, "--pbkdf-memory", "8", "--pbkdf-time", "65"),
		argv("--recovery-recipient", "age1notarecipient"),
	} {
		r = noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", p1, bad)...)
		r.want(t, 2, "key add "+strings.Join(bad, " "))
	}
	if _, err := os.Stat(filepath.Join(dir, "k")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused key add made a key file: %v", err)
	}
	if r := noTTY(t, dir, nil, "key"); r.code != 2 || !strings.Contains(r.stderr, "list, add, remove, passwd") {
		t.Errorf("key without a subcommand: exit %d, %s", r.code, r.stderr)
	}

	// add: a second passphrase, with a label.
	noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", p1, "--new-passphrase", "--new-password-file", p2, "--label", "laptop", cheap)...).
		want(t, 0, "key add --new-passphrase")
	slots := keyList(t, dir, nil, store)
	if len(slots) != 2 {
		t.Fatalf("slots %+v", slots)
	}
	var second listedSlot
	for _, s := range slots {
		if s.ID != first.ID {
			second = s
		}
	}
	if second.Label != "laptop" || second.Type != "passphrase" || second.KeyID != first.KeyID {
		t.Fatalf("the new slot: %+v", second)
	}

	// passwd: the slot p2 opened gets p3; p2 opens nothing after.
	r = noTTY(t, dir, nil, argv("key", "passwd", "--store", store, "--password-file", p2, "--new-password-file", p3, cheap)...)
	r.want(t, 0, "key passwd")
	noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", p2, first.ID).want(t, 14, "the old passphrase after passwd")
	slots = keyList(t, dir, nil, store)
	var third listedSlot
	for _, s := range slots {
		if s.ID != first.ID {
			third = s
		}
	}
	if len(slots) != 2 || third.ID == second.ID || third.Label != "laptop" || third.KeyID != first.KeyID {
		t.Fatalf("slots after passwd %+v (was %+v)", slots, second)
	}

	// remove: of an unknown slot, of the one unlocked with (another
	// remains), and never of the last.
	noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", p3, "0123456789abcdef").want(t, 1, "key remove of an unknown slot")
	r = noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", p3, third.ID)
	r.want(t, 0, "key remove of the slot unlocked with")
	if !strings.Contains(r.stderr, "unlocked the store with") {
		t.Errorf("key remove did not say it removed the slot it was unlocked with: %s", r.stderr)
	}
	r = noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", p1, first.ID)
	r.want(t, 1, "key remove of the last slot")
	if !strings.Contains(r.stderr, "last") {
		t.Errorf("message: %s", r.stderr)
	}
	if s := keyList(t, dir, nil, store); len(s) != 1 || s[0].ID != first.ID {
		t.Fatalf("slots %+v", s)
	}

	// A damaged slot is listed with what is wrong, and can be removed.
	writeFile(t, filepath.Join(store, "keys", "00112233445566ff"), `{"slot":{},"wrapped":"","sha256":""}`, 0o600)
	var damaged *listedSlot
	for _, s := range keyList(t, dir, nil, store) {
		if s.ID == "00112233445566ff" {
			damaged = &s
		}
	}
	if damaged == nil || !strings.Contains(damaged.Error, "damaged") {
		t.Fatalf("key list --json: the damaged slot %+v", damaged)
	}
	r = noTTY(t, dir, nil, "key", "list", "--store", store)
	r.want(t, 0, "key list")
	if !strings.Contains(r.stdout, "00112233445566ff  damaged") || !strings.Contains(r.stdout, first.ID+"  passphrase") {
		t.Errorf("key list:\n%s", r.stdout)
	}
	noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", p1, "00112233445566ff").want(t, 0, "key remove of the damaged slot")

	// Another thinback changing the slots: exit 9, nothing changed.
	st, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := st.LockKeySlots()
	if err != nil {
		t.Fatal(err)
	}
	r = noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", p1, "--new-passphrase", "--new-password-file", p2, cheap)...)
	r.want(t, 9, "key add while the slots are locked")
	if err := unlock(); err != nil {
		t.Fatal(err)
	}
	if s := keyList(t, dir, nil, store); len(s) != 1 {
		t.Fatalf("slots %+v", s)
	}
}

// TestKeyRecovery: a store whose passphrase is lost (its slot removed) is
// opened with the recovery identity alone, which adds a new passphrase.
func TestKeyRecovery(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	idFile := writeFile(t, filepath.Join(dir, "recovery.txt"), id.String()+"\n", 0o600)
	recipients := writeFile(t, filepath.Join(dir, "recipients.txt"), "# the safe\n"+id.Recipient().String()+"\n", 0o600)
	lost := writeFile(t, filepath.Join(dir, "lost"), "forgotten by next year\n", 0o600)
	fresh := writeFile(t, filepath.Join(dir, "fresh"), "a new passphrase\n", 0o600)
	noTTY(t, dir, nil, argv("init", "--store", store, "--encrypt", "--password-file", lost, "--recovery-recipient-file", recipients, cheap)...).
		want(t, 0, "init --encrypt --recovery-recipient-file")
	var pass, rec listedSlot
	for _, s := range keyList(t, dir, nil, store) {
		switch s.Type {
		case "passphrase":
			pass = s
		case "recovery":
			rec = s
		}
	}
	if rec.Recipient != id.Recipient().String() {
		t.Fatalf("recovery slot %+v, want recipient %s", rec, id.Recipient())
	}
	// The passphrase is lost: its slot goes.
	noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", lost, pass.ID).want(t, 0, "key remove of the passphrase slot")
	noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", lost, "--new-passphrase", "--new-password-file", fresh, cheap)...).
		want(t, 14, "the removed passphrase")

	r := noTTY(t, dir, nil, argv("key", "add", "--store", store, "--recovery-identity", idFile, "--new-passphrase", "--new-password-file", fresh, cheap)...)
	r.want(t, 0, "key add with the recovery identity")
	if !strings.Contains(r.stderr, "recovery slot "+rec.ID) || !strings.Contains(r.stderr, rec.KeyID) {
		t.Errorf("unlocking with a recovery slot did not name it and the key id: %s", r.stderr)
	}
	// The new passphrase opens the store.
	noTTY(t, dir, nil, "key", "add", "--store", store, "--password-file", fresh, "--new-key-file", filepath.Join(dir, "cron.key")).want(t, 0, "key add with the new passphrase")
	// passwd opened by another kind of slot changes the only passphrase
	// slot.
	again := writeFile(t, filepath.Join(dir, "again"), "changed once more\n", 0o600)
	noTTY(t, dir, nil, argv("key", "passwd", "--store", store, "--key-file", filepath.Join(dir, "cron.key"), "--new-password-file", again, cheap)...).
		want(t, 0, "key passwd with the key file")
	noTTY(t, dir, nil, "key", "add", "--store", store, "--password-file", fresh, "--new-key-file", filepath.Join(dir, "x.key")).want(t, 14, "the passphrase passwd replaced")
	if _, err := os.Stat(filepath.Join(dir, "x.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused key add left its key file: %v", err)
	}
	noTTY(t, dir, nil, "key", "add", "--store", store, "--password-file", again, "--new-key-file", filepath.Join(dir, "x.key")).want(t, 0, "the passphrase passwd set")
	slots := keyList(t, dir, nil, store)
	if len(slots) != 4 {
		t.Fatalf("slots %+v", slots)
	}
	for _, s := range slots {
		if s.KeyID != rec.KeyID {
			t.Errorf("slot %s wraps key %s, not the store's %s", s.ID, s.KeyID, rec.KeyID)
		}
	}
}

// TestKeyRemoveForeign: a slot of another store's key copied into a
// store makes it refuse its slots (they wrap two keys); key remove, opened
// with the store's own passphrase, takes the foreign slot away, and the
// store opens again.
func TestKeyRemoveForeign(t *testing.T) {
	dir := t.TempDir()
	ours := writeFile(t, filepath.Join(dir, "ours"), "our passphrase\n", 0o600)
	theirs := writeFile(t, filepath.Join(dir, "theirs"), "their passphrase\n", 0o600)
	for name, pass := range map[string]string{"store": ours, "other": theirs} {
		noTTY(t, dir, nil, argv("init", "--store", filepath.Join(dir, name), "--encrypt", "--password-file", pass, cheap)...).want(t, 0, "init "+name)
	}
	store := filepath.Join(dir, "store")
	own := keyList(t, dir, nil, store)[0]
	planted := keyList(t, dir, nil, filepath.Join(dir, "other"))[0]
	b, err := os.ReadFile(filepath.Join(dir, "other", "keys", planted.ID))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(store, "keys", planted.ID), string(b), 0o600)

	r := noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", ours, "--new-passphrase", "--new-password-file", theirs, cheap)...)
	r.want(t, 3, "key add in a store whose slots wrap two keys")
	if !strings.Contains(r.stderr, "thinback key remove") {
		t.Errorf("the message does not say what to do: %s", r.stderr)
	}

	// A backup under our key: their passphrase, which opens their slot,
	// is not taken for the store's, so it cannot remove ours.
	st, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(keyGroup{Repository: st, ids: map[string]bool{own.ID: true}})
	if err != nil {
		t.Fatal(err)
	}
	mk, _, err := ring.UnlockPassphrase([]byte("our passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := archive.NewKey(mk.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("our data"), 512)
	storetest.Write(t, st, &archive.Header{
		BlockSize: archive.MinBlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: "vm1", VolumeSize: int64(len(data)),
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: "vm1-snap", Time: time.Now().UTC()}, Tool: "thinback test",
	}, data, []archive.Extent{{Offset: 0, Length: int64(len(data)), Kind: archive.KindData}}, key)
	r = noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", theirs, own.ID)
	r.want(t, 14, "key remove of our slot with their passphrase")
	if !strings.Contains(r.stderr, own.KeyID) {
		t.Errorf("the message does not name the backups' key: %s", r.stderr)
	}
	if n := len(keyList(t, dir, nil, store)); n != 2 {
		t.Fatalf("%d slots left, want both", n)
	}

	// Ours removes theirs, saying whose key it wrapped.
	r = noTTY(t, dir, nil, "key", "remove", "--store", store, "--password-file", ours, planted.ID)
	r.want(t, 0, "key remove of the planted slot")
	if !strings.Contains(r.stderr, planted.KeyID) {
		t.Errorf("the message does not name the planted slot's key: %s", r.stderr)
	}
	if s := keyList(t, dir, nil, store); len(s) != 1 || s[0].ID != own.ID {
		t.Fatalf("slots %+v", s)
	}
	noTTY(t, dir, nil, argv("key", "add", "--store", store, "--password-file", ours, "--new-passphrase", "--new-password-file", theirs, cheap)...).
		want(t, 0, "key add once the planted slot is gone")
}

// TestFirstBackupKey: a command that makes a store encrypted (a first
// backup with --encrypt) writes with the key it made: storeKey does not
// ask for the passphrase again (here it would get a wrong one).
func TestFirstBackupKey(t *testing.T) {
	dir := t.TempDir()
	store := filepath.Join(dir, "store")
	t.Setenv("THINBACK_PASSWORD", "the new store's")
	var stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: &stderr}
	var got *archive.Key
	cmd := &cli.Command{Name: "backup", Flags: []cli.Flag{storeFlag}, Action: func(c *cli.Context) error {
		repo, err := openStore(c.Context, e, c.String(storeFlag.Name), true)
		if err != nil {
			return err
		}
		defer closeStore(e, repo)
		t.Setenv("THINBACK_PASSWORD", "wrong")
		got, err = storeKey(c.Context, e, c, repo)
		return err
	}}
	addCreateFlags(e, cmd)
	app := &cli.App{Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
	if err := app.Run(argv("thinback", "backup", "--store", store, "--encrypt", cheap)); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	st, err := catalog.OpenStore(store)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := keys.Load(st)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || len(ring.Slots()) != 1 || got.ID() != ring.Slots()[0].KeyID {
		t.Fatalf("storeKey gave key %v, the store's slots %+v", got, ring.Slots())
	}
}
