package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/catalog/s3/s3test"
)

// TestRunS3Credentials: a job into S3 stores whose credentials the config
// file names, from environment variables (access_key_env/secret_key_env)
// or a credentials file, reaches the real server with them and with
// nothing else: no AWS_* variable is set for run.
func TestRunS3Credentials(t *testing.T) {
	srv := s3test.Start(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	data := []byte(strings.Repeat("a block of a disk image\n", 40000))
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	creds := filepath.Join(dir, "creds")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+s3test.AccessKey+"\naws_secret_access_key = "+s3test.SecretKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(dir, "cache")
	common := "region = \"us-east-1\"\nbucket_lookup = \"path\"\ncache = \"" + cache + "\"\n"
	conf := filepath.Join(dir, "tb.conf")
	file := "[store.env]\nlocation = \"" + srv.Location("env") + "\"\n" + common +
		"access_key_env = \"TB_S3_KEY\"\nsecret_key_env = \"TB_S3_SECRET\"\n" +
		"[store.file]\nlocation = \"" + srv.Location("file") + "\"\n" + common +
		"credentials_file = \"" + creds + "\"\n" +
		"[job.env]\nstore = \"env\"\nfiles = [\"" + img + "\"]\n" +
		"[job.file]\nstore = \"file\"\nfiles = [\"" + img + "\"]\n"
	if err := os.WriteFile(conf, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only the file's credentials: none of the environment's, no
	// ~/.aws of the user running the test.
	noAWS := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_SESSION_TOKEN=", "AWS_PROFILE=",
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "none"), "THINBACK_CONFIG=" + conf}
	withAWS := append(s3Env(t, srv, cache), "THINBACK_CONFIG="+conf)
	for _, loc := range []string{srv.Location("env"), srv.Location("file")} {
		thinbackEnv(t, dir, withAWS, "init", "--store", loc, "--no-encrypt").want(t, 0, "init "+loc)
	}

	// config check says which variables are missing, once each, with
	// the lines that name them; run --dry-run needs none of them.
	r := thinbackEnv(t, dir, noAWS, "config", "check")
	r.want(t, 2, "config check without the variables")
	if strings.Count(r.stderr, "\n") != 2 || !strings.Contains(r.stderr, `tb.conf:6: store "env": access_key_env: $TB_S3_KEY is not set`) ||
		!strings.Contains(r.stderr, `tb.conf:7: store "env": secret_key_env: $TB_S3_SECRET is not set`) {
		t.Errorf("config check without the variables:\n%s", r.stderr)
	}
	thinbackEnv(t, dir, noAWS, "run", "env", "--dry-run").want(t, 0, "run env --dry-run without the variables")

	r = thinbackEnv(t, dir, noAWS, "run", "env")
	r.want(t, 2, "run env without its variables")
	if !strings.Contains(r.stderr, `run env: job "env": store "env": $TB_S3_KEY and $TB_S3_SECRET must both be set`) {
		t.Errorf("run env without its variables:\n%s", r.stderr)
	}
	r = thinbackEnv(t, dir, append(noAWS, "TB_S3_KEY="+s3test.AccessKey, "TB_S3_SECRET=wrong"), "run", "env")
	r.want(t, exitStore, "run env with a wrong secret")
	thinbackEnv(t, dir, append(noAWS, "TB_S3_KEY="+s3test.AccessKey, "TB_S3_SECRET="+s3test.SecretKey), "run", "env").want(t, 0, "run env")
	thinbackEnv(t, dir, noAWS, "run", "file").want(t, 0, "run file")

	for _, loc := range []string{srv.Location("env"), srv.Location("file")} {
		r := thinbackEnv(t, dir, withAWS, "list", "--store", loc)
		r.want(t, 0, "list "+loc)
		if !strings.Contains(r.stdout, "disk.img") {
			t.Errorf("%s does not hold the job's backup:\n%s", loc, r.stdout)
		}
	}
}
