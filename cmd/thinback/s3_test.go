package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/rogpeppe/go-internal/testscript"
	"github.com/thinback/thinback/catalog/s3/s3test"
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
}

func runStoreScripts(t *testing.T, srv *s3test.Server) {
	cmds := scriptCmds()
	// dropcatalog: lose the catalog: a local store's catalog.db, or an S3
	// store's record objects and this machine's cache of them.
	cmds["dropcatalog"] = func(ts *testscript.TestScript, neg bool, args []string) {
		if srv == nil {
			ts.Check(os.Remove(filepath.Join(ts.Getenv("STORE"), "catalog.db")))
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
	testscript.Run(t, testscript.Params{
		Dir: "../../testdata/store-script",
		Setup: func(e *testscript.Env) error {
			e.Setenv("THINBACK_STATE", e.WorkDir+"/state.db")
			if srv == nil {
				e.Setenv("STORE", e.WorkDir+"/store")
				return nil
			}
			prefix := "s-" + filepath.Base(filepath.Dir(e.WorkDir)) + "-" + filepath.Base(e.WorkDir)
			prefix = strings.ToLower(strings.NewReplacer("_", "-", ".", "-").Replace(prefix))
			e.Setenv("S3PREFIX", prefix)
			e.Setenv("STORE", srv.Location(prefix))
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
