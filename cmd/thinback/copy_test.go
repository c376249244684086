package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/cmd/internal/remote/sshtest"
)

// copyWorld is a disk image backed up into a store, and helpers to
// compare a copy with it.
type copyWorld struct {
	t   *testing.T
	dir string
	r   *rand.Rand
	img string
}

func newCopyWorld(t *testing.T) *copyWorld {
	seed := time.Now().UnixNano()
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		fmt.Sscan(s, &seed)
	}
	t.Logf("seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	dir := t.TempDir()
	w := &copyWorld{t: t, dir: dir, r: rand.New(rand.NewSource(seed)), img: filepath.Join(dir, "disk.img")}
	data := make([]byte, 8<<20)
	w.r.Read(data[:4<<20])
	if err := os.WriteFile(w.img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// scribble changes a few random MiB of the image.
func (w *copyWorld) scribble() {
	f, err := os.OpenFile(w.img, os.O_WRONLY, 0)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	for range 1 + w.r.Intn(3) {
		buf := make([]byte, 256<<10)
		w.r.Read(buf)
		f.WriteAt(buf, w.r.Int63n(8<<20-int64(len(buf))))
	}
}

// ids lists the snapshot ids of disk.img in store.
func (w *copyWorld) ids(store string, env []string, extra ...string) []string {
	w.t.Helper()
	r := thinbackEnv(w.t, w.dir, env, append([]string{"list", "--store", store, "--json", "disk.img"}, extra...)...)
	r.want(w.t, 0, "list "+store)
	var vols []struct {
		Snapshots []catalog.Snapshot `json:"snapshots"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &vols); err != nil {
		w.t.Fatalf("list --json: %v\n%s", err, r.stdout)
	}
	var out []string
	for _, v := range vols {
		for _, s := range v.Snapshots {
			out = append(out, s.ID)
		}
	}
	return out
}

// same checks that dst verifies and that every snapshot of src is in
// dst and restores from it as it does from src.
func (w *copyWorld) same(src, dst string, env []string, srcKey, dstKey []string) {
	t := w.t
	t.Helper()
	thinbackEnv(t, w.dir, env, append([]string{"verify", "--store", dst}, dstKey...)...).want(t, 0, "verify the copy")
	have := map[string]bool{}
	for _, id := range w.ids(dst, env) {
		have[id] = true
	}
	for _, id := range w.ids(src, env) {
		if !have[id] {
			t.Fatalf("snapshot %s of %s is not in %s", id, src, dst)
		}
		a, b := filepath.Join(w.dir, "a.img"), filepath.Join(w.dir, "b.img")
		os.Remove(a)
		os.Remove(b)
		os.Remove(filepath.Join(w.dir, "state.db"))
		thinbackEnv(t, w.dir, env, append([]string{"restore", "disk.img", "--store", src, "--snapshot", id, "--to", a}, srcKey...)...).want(t, 0, "restore from the source")
		thinbackEnv(t, w.dir, env, append([]string{"restore", "disk.img", "--store", dst, "--snapshot", id, "--to", b}, dstKey...)...).want(t, 0, "restore from the copy")
		sameFile(t, a, b)
	}
}

// TestCopyKill SIGKILLs copy at random moments, local to local and
// local to S3, with prunes of the source and backups between copies:
// after every kill the destination verifies and restores every snapshot
// it holds as the source does, and the next copy finishes the job.
func TestCopyKill(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a while")
	}
	for _, kind := range []string{"dir", "s3"} {
		t.Run(kind, func(t *testing.T) {
			w := newCopyWorld(t)
			src, dst := filepath.Join(w.dir, "src"), filepath.Join(w.dir, "dst")
			var env []string
			copyArgs := []string{"copy", "--from", src, "--to", dst}
			if kind == "s3" {
				srv := s3test.Start(t)
				env = s3Env(t, srv, filepath.Join(w.dir, "cache"))
				dst = "s3:http://" + srv.Addr + "/" + srv.Bucket + "/copy"
				copyArgs = []string{"copy", "--from", src, "--to", dst, "--no-encrypt", "--break-stale-lock"}
			}
			backup := func() {
				w.scribble()
				thinbackEnv(t, w.dir, env, "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
			}
			for range 4 {
				backup()
			}
			start := time.Now()
			k := &killer{r: w.r, bound: time.Second}
			for round := range 3 {
				landed := 0
				for try := 0; try < 4; try++ {
					cmd := thinbackCmd(t, w.dir, copyArgs...)
					cmd.Env = append(cmd.Env, env...)
					if k.kill(t, cmd) {
						landed++
						// Whatever the kill left, what the destination
						// holds verifies (a kill before the store was
						// made leaves none).
						r := thinbackEnv(t, w.dir, env, "verify", "--store", dst)
						if !(round == 0 && r.code == exitError && strings.Contains(r.stderr, "not a thinback store")) {
							r.want(t, 0, "verify after a kill")
						}
					}
					backup()
				}
				t.Logf("round %d: %d of 4 copies killed", round, landed)
				thinbackEnv(t, w.dir, env, copyArgs...).want(t, 0, "copy after kills")
				w.same(src, dst, env, nil, nil)
				thinbackEnv(t, w.dir, env, "prune", "--store", src, "--keep-last", "2").want(t, 0, "prune the source")
				backup()
			}
			if k.landed == 0 {
				t.Fatalf("no copy was killed mid-run (bound %v): the test killed nothing", k.bound)
			}
			thinbackEnv(t, w.dir, env, copyArgs...).want(t, 0, "last copy")
			w.same(src, dst, env, nil, nil)
			t.Logf("%d kills of %d tries in %v", k.landed, k.tries, time.Since(start))
		})
	}
}

// TestCopyS3BothWays copies a store into a bucket and back into a new
// directory, with the line each volume prints and the JSON.
func TestCopyS3BothWays(t *testing.T) {
	w := newCopyWorld(t)
	srv := s3test.Start(t)
	env := s3Env(t, srv, filepath.Join(w.dir, "cache"))
	src, back := filepath.Join(w.dir, "src"), filepath.Join(w.dir, "back")
	bucket := "s3:http://" + srv.Addr + "/" + srv.Bucket + "/both"
	for range 3 {
		w.scribble()
		thinbackEnv(t, w.dir, env, "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
	}
	r := thinbackEnv(t, w.dir, env, "copy", "--from", src, "--to", bucket)
	r.want(t, exitUsage, "a new bucket store without --no-encrypt")
	r = thinbackEnv(t, w.dir, env, "copy", "--from", src, "--to", bucket, "--no-encrypt", "--dry-run")
	r.want(t, 0, "dry run")
	if !strings.Contains(r.stdout, "copy disk.img: would copy 3 snapshots") {
		t.Errorf("dry run printed %q", r.stdout)
	}
	r = thinbackEnv(t, w.dir, env, "copy", "--from", src, "--to", bucket, "--no-encrypt")
	r.want(t, 0, "copy into the bucket")
	if !strings.HasPrefix(r.stdout, "copy disk.img: 3 snapshots, ") || !strings.Contains(r.stdout, "(as stored)") {
		t.Errorf("copy printed %q", r.stdout)
	}
	r = thinbackEnv(t, w.dir, env, "copy", "--from", bucket, "--to", back, "--json")
	r.want(t, 0, "copy back")
	var line struct {
		Volume string             `json:"volume"`
		Copied []catalog.Snapshot `json:"copied"`
		Mode   string             `json:"mode"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &line); err != nil || line.Volume != "disk.img" || len(line.Copied) != 3 || line.Mode != "as stored" {
		t.Errorf("copy --json printed %q (%v)", r.stdout, err)
	}
	w.same(src, bucket, env, nil, nil)
	w.same(bucket, back, env, nil, nil)
	// Retention on the copy only: the bucket keeps what --keep-last says.
	w.scribble()
	thinbackEnv(t, w.dir, env, "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
	r = thinbackEnv(t, w.dir, env, "copy", "--from", src, "--to", bucket, "--keep-last", "2")
	r.want(t, 0, "copy with --keep-last")
	if !strings.Contains(r.stdout, "; pruned #1 #2") {
		t.Errorf("copy --keep-last printed %q", r.stdout)
	}
	if n := len(w.ids(bucket, env)); n != 2 {
		t.Errorf("the bucket holds %d snapshots after --keep-last 2", n)
	}
	if n := len(w.ids(src, env)); n != 4 {
		t.Errorf("the source holds %d snapshots, want its 4", n)
	}
	// The next copy does not bring back what the bucket's retention removed.
	r = thinbackEnv(t, w.dir, env, "copy", "--from", src, "--to", bucket)
	r.want(t, 0, "copy again")
	if !strings.HasPrefix(r.stdout, "copy disk.img: 0 snapshots") {
		t.Errorf("copy again printed %q", r.stdout)
	}
}

// TestCopyEncrypted: stores sharing a key copy raw without it, saying
// the contents were not checked; stores with different keys re-encrypt;
// an encrypted store is not copied into one in the clear without
// --decrypt; a tampered file stops the copy with exit 3, nothing of it
// committed.
func TestCopyEncrypted(t *testing.T) {
	w := newCopyWorld(t)
	dir := w.dir
	pass := writeFile(t, filepath.Join(dir, "pass"), "correct horse\n", 0o600)
	src, raw, other, plain := filepath.Join(dir, "src"), filepath.Join(dir, "raw"), filepath.Join(dir, "other"), filepath.Join(dir, "plain")
	noTTY(t, dir, nil, argv("init", "--store", src, "--encrypt", "--password-file", pass, "--new-key-file", "src.key", cheap)...).want(t, 0, "init src")
	noTTY(t, dir, nil, argv("init", "--store", other, "--encrypt", "--password-file", pass, "--new-key-file", "other.key", cheap)...).want(t, 0, "init other")
	for range 3 {
		w.scribble()
		noTTY(t, dir, nil, "backup", "--store", src, "--file", w.img, "--key-file", "src.key").want(t, 0, "backup")
	}
	r := noTTY(t, dir, nil, "copy", "--from", src, "--to", raw)
	r.want(t, 0, "raw copy without a key")
	if !strings.Contains(r.stdout, "(as stored, contents not checked)") || !strings.Contains(r.stderr, "with the key slots of") {
		t.Errorf("raw copy printed %q %q", r.stdout, r.stderr)
	}
	srcKey := []string{"--key-file", "src.key"}
	w.same(src, raw, nil, srcKey, srcKey)

	r = noTTY(t, dir, nil, "copy", "--from", src, "--to", other, "--key-file", "src.key", "--to-key-file", "other.key")
	r.want(t, 0, "copy into a store of another key")
	if !strings.Contains(r.stdout, "(re-encrypted)") {
		t.Errorf("re-encrypting copy printed %q", r.stdout)
	}
	for _, id := range w.ids(other, nil) {
		a, b := filepath.Join(dir, "a.img"), filepath.Join(dir, "b.img")
		os.Remove(a)
		os.Remove(b)
		noTTY(t, dir, nil, "restore", "disk.img", "--store", src, "--snapshot", id, "--to", a, "--key-file", "src.key").want(t, 0, "restore src")
		noTTY(t, dir, nil, "restore", "disk.img", "--store", other, "--snapshot", id, "--to", b, "--key-file", "other.key").want(t, 0, "restore other")
		sameFile(t, a, b)
	}
	noTTY(t, dir, nil, "copy", "--from", src, "--to", other).want(t, exitKey, "re-encrypting without keys")

	noTTY(t, dir, nil, "copy", "--from", src, "--to", plain).want(t, 0, "a new store from an encrypted one gets its slots")
	plain2 := filepath.Join(dir, "plain2")
	noTTY(t, dir, nil, "init", "--store", plain2).want(t, 0, "init plain")
	noTTY(t, dir, nil, "copy", "--from", src, "--to", plain2, "--key-file", "src.key").want(t, exitUsage, "encrypted into plain without --decrypt")
	noTTY(t, dir, nil, "copy", "--from", src, "--to", plain2, "--key-file", "src.key", "--decrypt").want(t, 0, "--decrypt")
	w.same(raw, plain2, nil, srcKey, nil)

	// A byte of the newest file flipped.
	w.scribble()
	noTTY(t, dir, nil, "backup", "--store", src, "--file", w.img, "--key-file", "src.key").want(t, 0, "backup")
	files, _ := filepath.Glob(filepath.Join(src, "volumes", "*", "*.tbk"))
	newest := files[len(files)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	before := len(w.ids(raw, nil))
	r = noTTY(t, dir, nil, "copy", "--from", src, "--to", raw, "--key-file", "src.key")
	r.want(t, exitCorrupt, "copy of a tampered file")
	if !strings.Contains(r.stderr, filepath.Base(newest)) {
		t.Errorf("the error does not name the file %s: %s", filepath.Base(newest), r.stderr)
	}
	if n := len(w.ids(raw, nil)); n != before {
		t.Errorf("the destination holds %d snapshots after a refused copy, %d before", n, before)
	}
	// This host saw #4 in the source, and watermarks are per master key
	// (rollback's caveat): to it, the copy without #4 looks rolled back.
	// Another host's verify passes.
	noTTY(t, dir, nil, "verify", "--store", raw, "--key-file", "src.key").want(t, exitVerify, "verify of a copy behind the source on the source's host")
	noTTY(t, dir, nil, "verify", "--store", raw, "--key-file", "src.key", "--state", filepath.Join(dir, "other-host.db")).want(t, 0, "verify after a refused copy")
}

// TestCopyLocked: a destination volume whose lock another process holds
// (a backup or prune there) is exit 9, and nothing is copied.
func TestCopyLocked(t *testing.T) {
	w := newCopyWorld(t)
	src, dst := filepath.Join(w.dir, "src"), filepath.Join(w.dir, "dst")
	thinback(t, w.dir, "", "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
	thinback(t, w.dir, "", "copy", "--from", src, "--to", dst).want(t, 0, "copy")
	w.scribble()
	thinback(t, w.dir, "", "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
	s, err := catalog.OpenStore(dst)
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := s.LockVolume("disk.img")
	if err != nil {
		t.Fatal(err)
	}
	r := thinback(t, w.dir, "", "copy", "--from", src, "--to", dst)
	r.want(t, exitLocked, "copy into a locked volume")
	if !strings.Contains(r.stderr, "disk.img") {
		t.Errorf("the error does not name the volume: %s", r.stderr)
	}
	unlock()
	if n := len(w.ids(dst, nil)); n != 1 {
		t.Errorf("the destination holds %d snapshots after a refused copy", n)
	}
	thinback(t, w.dir, "", "copy", "--from", src, "--to", dst).want(t, 0, "copy once the lock is released")
	w.same(src, dst, nil, nil, nil)
	thinback(t, w.dir, "", "copy", "--from", src, "--to", src).want(t, exitUsage, "copy into itself")
	writeFile(t, filepath.Join(w.dir, "some.key"), "not read\n", 0o600)
	thinback(t, w.dir, "", "copy", "--from", src, "--to", dst, "--key-file", "some.key").want(t, exitKey, "a key for a source in the clear")
	thinback(t, w.dir, "", "copy", "--from", filepath.Join(w.dir, "nothing"), "--to", dst).want(t, exitError, "copy from no store")
	thinback(t, w.dir, "", "copy", "--from", src, "--to", dst, "vg0/none").want(t, exitError, "copy of a volume the source does not have")
}

// TestCopySSH copies a store to another host over ssh (a real sshd) and
// back.
func TestCopySSH(t *testing.T) {
	w := newCopyWorld(t)
	s := sshtest.Start(t)
	sshStoreEnv(t, s, w.dir, "ssh")
	src, back := filepath.Join(w.dir, "src"), filepath.Join(w.dir, "back")
	remote := s.Dest(filepath.Join(w.dir, "remote"))
	for range 3 {
		w.scribble()
		thinback(t, w.dir, "", "backup", "--store", src, "--file", w.img).want(t, 0, "backup")
	}
	thinback(t, w.dir, "", "copy", "--from", src, "--to", remote).want(t, exitUsage, "a new ssh store without --no-encrypt")
	thinback(t, w.dir, "", "copy", "--from", src, "--to", remote, "--no-encrypt").want(t, 0, "copy to the other host")
	thinback(t, w.dir, "", "copy", "--from", remote, "--to", back).want(t, 0, "copy back")
	w.same(src, remote, nil, nil, nil)
	w.same(remote, back, nil, nil, nil)
}

// TestCopySeveralFailing: a copy of several volumes where one cannot be
// copied (the destination holds another volume of its name) copies the
// others, names the failing one on its own line and in a last line,
// exits with its code, and records both in the metrics file.
func TestCopySeveralFailing(t *testing.T) {
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	for i, name := range []string{"a.img", "b.img", "other.img"} {
		img := filepath.Join(dir, name)
		if err := os.WriteFile(img, bytes.Repeat([]byte{byte('a' + i)}, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	thinback(t, dir, "", "backup", "--file", filepath.Join(dir, "a.img"), "--store", src).want(t, 0, "backup a")
	thinback(t, dir, "", "backup", "--file", filepath.Join(dir, "b.img"), "--store", src).want(t, 0, "backup b")
	// Another volume named b.img in the destination: not a copy of the source's.
	thinback(t, dir, "", "backup", "--file", filepath.Join(dir, "other.img"), "--volume", "b.img", "--store", dst).want(t, 0, "backup other")

	prom := filepath.Join(dir, "copy.prom")
	r := thinback(t, dir, "", "copy", "--from", src, "--to", dst, "--metrics-file", prom, "--metrics-job", "offsite", "b.img", "a.img")
	r.want(t, exitChain, "copy with a diverged volume")
	for _, want := range []string{"thinback: b.img: ", "copy a.img: 1 snapshot", "copy: 1 of 2 volumes failed: b.img (exit 5)"} {
		if !strings.Contains(r.stdout+r.stderr, want) {
			t.Errorf("output lacks %q:\n%s%s", want, r.stdout, r.stderr)
		}
	}
	m := readMetrics(t, prom)
	if got, ok := m["thinback_last_run_exit_code"]["a.img"]; !ok || got != 0 {
		t.Errorf("a.img exit code %v (%v), want 0", got, ok)
	}
	if got := m["thinback_last_run_exit_code"]["b.img"]; got != exitChain {
		t.Errorf("b.img exit code %v, want %d", got, exitChain)
	}
	if m["thinback_last_success_timestamp_seconds"]["a.img"] == 0 || m["thinback_chain_length"]["a.img"] != 1 || m["thinback_store_bytes"]["a.img"] <= 0 {
		t.Errorf("a.img: last success %v, chain %v, store bytes %v", m["thinback_last_success_timestamp_seconds"]["a.img"],
			m["thinback_chain_length"]["a.img"], m["thinback_store_bytes"]["a.img"])
	}
	if _, ok := m["thinback_last_success_timestamp_seconds"]["b.img"]; ok {
		t.Errorf("b.img has a last success time, never having been copied")
	}
	data, err := os.ReadFile(prom)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `command="copy",job="offsite",store="`+dst+`"`) {
		t.Errorf("metrics do not label the copy's series:\n%s", data)
	}
	// The volume that could be copied is in the destination.
	thinback(t, dir, "", "verify", "--store", dst).want(t, 0, "verify the destination")
}
