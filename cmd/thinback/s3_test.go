package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/rogpeppe/go-internal/testscript"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3/s3test"
	"github.com/thinback/thinback/cmd/internal/remote/sshtest"
)

// s3Env points thinback run by this test at srv: the credentials and the
// options a user of that server sets (path-style requests, its region),
// and a cache directory of the test's own.
func s3Env(t *testing.T, srv *s3test.Server, cache string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s3test.AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3test.SecretKey, "AWS_REGION=us-east-1",
		"THINBACK_S3_BUCKET_LOOKUP=path", "THINBACK_CACHE=" + cache,
	}
}

// TestStoreScripts runs the store scenarios of testdata/store-script
// against each kind of store: $STORE is a directory, then a prefix of a
// bucket of a real S3 server (versitygw) started for the test.
func TestStoreScripts(t *testing.T) {
	t.Run("dir", func(t *testing.T) {
		runStoreScripts(t, nil)
	})
	t.Run("s3", func(t *testing.T) {
		runStoreScripts(t, s3test.Start(t))
	})
	t.Run("ssh", func(t *testing.T) {
		runSSHStoreScripts(t, sshtest.Start(t))
	})
}

func runStoreScripts(t *testing.T, srv *s3test.Server) { runStoreScriptsOn(t, srv, nil) }

// runSSHStoreScripts runs the store scripts against a store on "another
// host": a directory of this machine served by this test binary as the
// remote thinback, reached through a real sshd on the loopback.
func runSSHStoreScripts(t *testing.T, s *sshtest.Server) { runStoreScriptsOn(t, nil, s) }

func runStoreScriptsOn(t *testing.T, srv *s3test.Server, sshSrv *sshtest.Server) {
	cmds := scriptCmds()
	// dropcatalog: lose the catalog: a local store's catalog.db, or an S3
	// store's record objects and this machine's cache of them.
	cmds["dropcatalog"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if srv == nil {
			ts.Check(os.Remove(filepath.Join(ts.Getenv("STOREBYTES"), "catalog.db")))
			return
		}
		prefix := ts.Getenv("S3PREFIX") + "/records/"
		cl := srv.Client()
		for oi := range cl.ListObjects(context.Background(), srv.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			ts.Check(oi.Err)
			ts.Check(cl.RemoveObject(context.Background(), srv.Bucket, oi.Key, minio.RemoveObjectOptions{}))
		}
		ts.Check(os.RemoveAll(ts.Getenv("THINBACK_CACHE")))
	}
	// putdelta FROMVOL FROMSEQ TOVOL TOSEQ: put the bytes of the delta
	// file of FROMVOL's snapshot #FROMSEQ in place of those of TOVOL's
	// #TOSEQ, under TOVOL's file's name, as a careless copy or a hostile
	// store would; the catalog is left as it is.
	cmds["putdelta"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 4 {
			ts.Fatalf("usage: putdelta FROMVOL FROMSEQ TOVOL TOSEQ")
		}
		if srv == nil {
			find := func(vol, seq string) string {
				m, err := filepath.Glob(filepath.Join(ts.Getenv("STOREBYTES"), "volumes", catalog.DirName(vol), fmt.Sprintf("%08d-*.tbk", atoi(ts, seq))))
				ts.Check(err)
				if len(m) != 1 {
					ts.Fatalf("%s #%s: files %q", vol, seq, m)
				}
				return m[0]
			}
			b, err := os.ReadFile(find(args[0], args[1]))
			ts.Check(err)
			ts.Check(os.WriteFile(find(args[2], args[3]), b, 0o600))
			return
		}
		cl, ctx := srv.Client(), context.Background()
		find := func(vol, seq string) string {
			var keys []string
			prefix := ts.Getenv("S3PREFIX") + "/volumes/" + catalog.DirName(vol) + "/" + fmt.Sprintf("%08d-", atoi(ts, seq))
			for oi := range cl.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
				ts.Check(oi.Err)
				keys = append(keys, oi.Key)
			}
			if len(keys) != 1 {
				ts.Fatalf("%s #%s: objects %q", vol, seq, keys)
			}
			return keys[0]
		}
		_, err := cl.CopyObject(ctx, minio.CopyDestOptions{Bucket: srv.Bucket, Object: find(args[2], args[3])},
			minio.CopySrcOptions{Bucket: srv.Bucket, Object: find(args[0], args[1])})
		ts.Check(err)
	}
	// setsize VOLUME SEQ SIZE: make the record of VOLUME's #SEQ say the
	// volume is SIZE bytes, as a damaged or hand-edited catalog would;
	// the delta file is left as it is.
	cmds["setsize"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if neg || len(args) != 3 {
			ts.Fatalf("usage: setsize VOLUME SEQ SIZE")
		}
		size := atoi(ts, args[2])
		if srv == nil {
			s, err := catalog.OpenStore(ts.Getenv("STOREBYTES"))
			ts.Check(err)
			ts.Check(s.Update(func(tx *catalog.Tx) error {
				rec, err := findSnapshot(tx, args[0], args[1])
				if err != nil {
					return err
				}
				rec.VolumeSize = size
				return tx.PutSnapshot(&rec)
			}))
			return
		}
		// The record object, and this machine's cache of the records,
		// which is read again from the bucket.
		cl, ctx := srv.Client(), context.Background()
		prefix := ts.Getenv("S3PREFIX") + "/records/" + catalog.DirName(args[0]) + "/" + fmt.Sprintf("%08d-", atoi(ts, args[1]))
		var keys []string
		for oi := range cl.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
			ts.Check(oi.Err)
			keys = append(keys, oi.Key)
		}
		if len(keys) != 1 {
			ts.Fatalf("the record of %s #%s: objects %q", args[0], args[1], keys)
		}
		o, err := cl.GetObject(ctx, srv.Bucket, keys[0], minio.GetObjectOptions{})
		ts.Check(err)
		var rec map[string]any
		ts.Check(json.NewDecoder(o).Decode(&rec))
		o.Close()
		rec["snapshot"].(map[string]any)["volume_size"] = size
		b, err := json.Marshal(rec)
		ts.Check(err)
		_, err = cl.PutObject(ctx, srv.Bucket, keys[0], bytes.NewReader(b), int64(len(b)), minio.PutObjectOptions{})
		ts.Check(err)
		ts.Check(os.RemoveAll(ts.Getenv("THINBACK_CACHE")))
	}
	testscript.Run(t, testscript.Params{
		Dir: "../../testdata/store-script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("THINBACK_STATE", e.WorkDir+"/state.db")
			// $STOREBYTES is where the store's bytes lie on this
			// machine's disk, for scripts that look at them raw.
			if sshSrv != nil {
				e.Setenv("STORE", sshSrv.Dest(e.WorkDir+"/store"))
				e.Setenv("STOREBYTES", e.WorkDir+"/store")
				e.Setenv("THINBACK_RSH", sshSrv.RshNoPort)
				// sshd gives the remote command a fresh environment.
				e.Setenv("THINBACK_REMOTE_THINBACK", sshtest.RemoteThinback(t, os.Args[0], "THINBACK_TEST_AS_MAIN=1",
					"THINBACK_STATE="+e.WorkDir+"/remote-state.db"))
				return nil
			}
			if srv == nil {
				e.Setenv("STORE", e.WorkDir+"/store")
				e.Setenv("STOREBYTES", e.WorkDir+"/store")
				return nil
			}
			prefix := "s-" + filepath.Base(filepath.Dir(e.WorkDir)) + "-" + filepath.Base(e.WorkDir)
			prefix = strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(prefix))
			e.Setenv("S3PREFIX", prefix)
			e.Setenv("STORE", srv.Location(prefix))
			e.Setenv("STOREBYTES", filepath.Join(srv.Dir, srv.Bucket, prefix))
			for _, kv := range s3Env(t, srv, e.WorkDir+"/cache") {
				k, v, _ := strings.Cut(kv, "=")
				e.Setenv(k, v)
			}
			return nil
		},
		Cmds:      cmds,
		Condition: scriptCondition,
	})
}

// TestKillAnywhereS3 is TestKillAnywhere against a real S3 server: backup,
// prune and receive killed at random moments (the seed is logged), and
// after every kill verify passes, every recorded snapshot restores exact,
// and the next writer cleans up what the killed one left.
func TestKillAnywhereS3(t *testing.T) {
	if testing.Short() {
		t.Skip("kills processes for a while")
	}
	srv := s3test.Start(t)
	dir := t.TempDir()
	setS3Env(t, srv, filepath.Join(dir, "cache"))
	run(t, dir, "init", "--store", srv.Location("kill"), "--no-encrypt")
	killAnywhere(t, dir, srv.Location("kill"), "--break-stale-lock")
	if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
		t.Errorf("unfinished uploads left after the last backup: %q", ups)
	}
}

// setS3Env sets s3Env in this process, for the thinback processes it
// starts.
func setS3Env(t *testing.T, srv *s3test.Server, cache string) {
	for _, kv := range s3Env(t, srv, cache) {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// thinbackEnv is thinback (cli_helpers_test.go) with extra environment.
func thinbackEnv(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := thinbackCmd(t, dir, args...)
	cmd.Env = append(cmd.Env, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	t.Logf("thinback %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stdout+r.stderr)
	return r
}

// isRecordPut tells the request that commits a snapshot: the creation of
// its record object.
func isRecordPut(r *http.Request) bool {
	base := path.Base(r.URL.Path)
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/records/") &&
		strings.HasSuffix(base, ".json") && !strings.HasPrefix(base, "journal-") && base != "volume.json"
}

// Two hosts (two processes with caches of their own) back up one volume
// at once: one wins, the other exits with the lock code and writes
// nothing; a backup of another volume meanwhile succeeds. The first
// host's backup is held just before its commit, so the runs overlap
// whatever the machine's speed.
func TestS3ConcurrentBackups(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	data := make([]byte, 4<<20)
	rand.New(rand.NewSource(1)).Read(data[:2<<20])
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	reached, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	proxy := s3test.HTTPProxy(t, srv.Addr, func(w http.ResponseWriter, r *http.Request) bool {
		if isRecordPut(r) {
			once.Do(func() { close(reached); <-gate })
		}
		return false
	}, nil)
	hostA := s3Env(t, srv, filepath.Join(dir, "cache-a"))
	hostB := s3Env(t, srv, filepath.Join(dir, "cache-b"))
	storeA := "s3:http://" + proxy + "/" + srv.Bucket + "/two"
	storeB := srv.Location("two")

	a := make(chan result, 1)
	go func() {
		a <- thinbackEnv(t, dir, hostA, "backup", "--store", storeA, "--file", "disk.img", "--no-encrypt")
	}()
	select {
	case <-reached:
	case r := <-a:
		close(gate)
		t.Fatalf("the first backup ended before its commit: exit %d\n%s", r.code, r.stderr)
	}
	b := thinbackEnv(t, dir, hostB, "backup", "--store", storeB, "--file", "disk.img", "--no-encrypt")
	b.want(t, exitLocked, "second backup of one volume")
	if !strings.Contains(b.stderr, "locked by") || !strings.Contains(b.stderr, "locks/disk.img.lock") {
		t.Errorf("the lock error names neither the holder nor the lock object:\n%s", b.stderr)
	}
	thinbackEnv(t, dir, hostB, "backup", "--store", storeB, "--file", "disk.img", "--volume", "other").want(t, 0, "backup of another volume")
	close(gate)
	(<-a).want(t, 0, "first backup")

	list := thinbackEnv(t, dir, hostB, "list", "--store", storeB)
	list.want(t, 0, "list")
	for _, want := range []string{"disk.img  (file", "other  (file"} {
		if !strings.Contains(list.stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, list.stdout)
		}
	}
	if strings.Count(list.stdout, " full ") != 2 {
		t.Errorf("want one snapshot of each volume:\n%s", list.stdout)
	}
	thinbackEnv(t, dir, hostA, "verify", "--store", storeB).want(t, 0, "verify")
}

// The errors people meet get their exit code and a message naming the
// store (and the object, where there is one), and no snapshot appears.
func TestS3Errors(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	data := make([]byte, 8<<20)
	rand.New(rand.NewSource(2)).Read(data)
	if err := os.WriteFile(filepath.Join(dir, "disk.img"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	env := s3Env(t, srv, filepath.Join(dir, "cache"))
	store := srv.Location("err")
	thinbackEnv(t, dir, env, "init", "--store", store, "--no-encrypt").want(t, 0, "init")

	// answer makes a proxy in front of the server answer the requests that
	// match with an S3 error, n times (n < 0: always).
	answer := func(match func(*http.Request) bool, n int, status int, code string) string {
		var mu sync.Mutex
		return s3test.HTTPProxy(t, srv.Addr, func(w http.ResponseWriter, r *http.Request) bool {
			mu.Lock()
			defer mu.Unlock()
			if n != 0 && match(r) {
				n--
				s3test.Answer(w, r, status, code, "the test says so")
				return true
			}
			return false
		}, nil)
	}
	all := func(*http.Request) bool { return true }
	// The writes of a delta file: a whole PUT, or the parts of a multipart
	// upload (a file smaller than a part goes in one PUT).
	parts := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/volumes/")
	}
	via := func(addr string) string { return "s3:http://" + addr + "/" + srv.Bucket + "/err" }

	for _, tc := range []struct {
		name  string
		env   []string
		store string
		code  int
		says  []string
	}{
		{"wrong secret", []string{"AWS_SECRET_ACCESS_KEY=wrong"}, store, exitStore, []string{store, "credentials rejected"}},
		{"no credentials", []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none")}, store, exitStore, []string{store, "credentials"}},
		{"missing bucket", nil, "s3:http://" + srv.Addr + "/no-such-bucket/x", exitStore, []string{"no-such-bucket", "bucket does not exist"}},
		{"clock skew", nil, via(answer(all, -1, http.StatusForbidden, "RequestTimeTooSkewed")), exitStore, []string{"clock skew"}},
		{"read-only bucket", nil, via(answer(parts, -1, http.StatusForbidden, "AccessDenied")), exitStore, []string{"access denied", "upload volumes/v-"}},
		{"quota", nil, via(answer(parts, -1, http.StatusForbidden, "QuotaExceeded")), exitNoSpace, []string{"quota", "upload volumes/v-"}},
		{"throttled for good", nil, via(answer(parts, -1, http.StatusServiceUnavailable, "SlowDown")), exitUnavailable, []string{"unavailable", "upload volumes/v-"}},
		{"throttled for a while", nil, via(answer(parts, 2, http.StatusServiceUnavailable, "SlowDown")), 0, nil},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "-"), func(t *testing.T) {
			before := thinbackEnv(t, dir, env, "list", "--store", store, "--json")
			r := thinbackEnv(t, dir, append(append([]string{}, env...), tc.env...), "backup", "--store", tc.store, "--file", "disk.img", "--volume", "v-"+strings.ReplaceAll(tc.name, " ", "-"))
			r.want(t, tc.code, tc.name)
			for _, s := range tc.says {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("the message does not say %q:\n%s", s, r.stderr)
				}
			}
			after := thinbackEnv(t, dir, env, "list", "--store", store, "--json")
			if tc.code != 0 && after.stdout != before.stdout {
				t.Errorf("a failed backup changed the store:\n%s\nbecame\n%s", before.stdout, after.stdout)
			}
			if tc.code == 0 {
				thinbackEnv(t, dir, env, "verify", "--store", store).want(t, 0, "verify")
			}
		})
	}
	if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
		t.Errorf("failed backups left uploads: %q", ups)
	}
}

// Connections reset or stalled by the network mid-upload: the client
// retries and the backup succeeds; the server killed mid-upload: the
// backup fails as unavailable, leaves no snapshot, and after the server
// restarts the next backup succeeds and removes what the failed one left.
func TestS3Faults(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	data := make([]byte, 12<<20)
	rand.New(rand.NewSource(3)).Read(data)
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, data, 0o600); err != nil {
		t.Fatal(err)
	}
	env := s3Env(t, srv, filepath.Join(dir, "cache"))
	proxy := s3test.NewProxy(t, srv.Addr)
	store := "s3:http://" + proxy.Addr() + "/" + srv.Bucket + "/faults"

	proxy.Arm(s3test.Fault{Dir: s3test.Up, After: 3 << 20, Count: 2, Action: s3test.Reset})
	thinbackEnv(t, dir, env, "backup", "--store", store, "--file", "disk.img", "--no-encrypt").want(t, 0, "backup through resets")
	if proxy.Fired() == 0 {
		t.Fatal("the reset fault never fired")
	}
	proxy.Disarm()

	// The server dies while the first part of the next backup is on its way.
	f, _ := os.OpenFile(img, os.O_WRONLY, 0)
	f.WriteAt(data[:6<<20], 6<<20)
	f.Close()
	var once sync.Once
	killing := s3test.HTTPProxy(t, srv.Addr, func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/volumes/") {
			once.Do(srv.Kill)
		}
		return false
	}, nil)
	r := thinbackEnv(t, dir, env, "backup", "--store", "s3:http://"+killing+"/"+srv.Bucket+"/faults", "--file", "disk.img")
	r.want(t, exitUnavailable, "backup while the server dies")
	srv.Restart()
	list := thinbackEnv(t, dir, env, "list", "--store", store)
	if strings.Contains(list.stdout, " incr ") {
		t.Fatalf("the failed backup left a snapshot:\n%s", list.stdout)
	}
	// The killed server left an upload; a killed client would have left
	// the lock too.
	r = thinbackEnv(t, dir, env, "backup", "--store", store, "--file", "disk.img", "--break-stale-lock")
	r.want(t, 0, "backup after the restart")
	if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
		t.Errorf("uploads left after the next backup: %q", ups)
	}
	thinbackEnv(t, dir, env, "verify", "--store", store).want(t, 0, "verify")
	thinbackEnv(t, dir, env, "restore", "disk.img", "--store", store, "--to", "r.img").want(t, 0, "restore")
	sameFile(t, img, filepath.Join(dir, "r.img"))

	// A stalled connection is dropped after the stall timeout; that the
	// s3 package tests (TestUploadSurvivesStall) with a short timeout.
}
