package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const good = `# a host with two VMs, a local store and an offsite copy
[defaults]
store = "local"
metrics_file = "/var/lib/node_exporter/textfile/thinback.prom"
keep_daily = 7

[store.local]
location = "/backup"

[store.offsite]
location = "s3:https://s3.example.net/backups/host1"
region = "eu-west-1"
credentials_file = "/etc/thinback/offsite.credentials"
key_file = "/etc/thinback/offsite.key"

[job.vms]
volumes = ["vg0/vm1", "vg0/vm2"]
keep_hourly = 24
keep_daily = 14
pre = "virsh domfsfreeze vm1"
level = 3
copy_to = ["offsite"]
copy_keep_daily = 30

[job.rest]
all = "vg1"
exclude = ["scratch", "tmp-*"]
snapshot_size = "10%ORIGIN"

[job.images]
files = ["/srv/a.img"]
store = "offsite"
keep_daily = 0
`

func TestGood(t *testing.T) {
	c, err := Parse("thinback.conf", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) != 3 || c.Jobs[0].Name != "vms" || c.Jobs[1].Name != "rest" || c.Jobs[2].Name != "images" {
		t.Fatalf("jobs not in the file's order: %+v", c.Jobs)
	}
	vms := c.Job("vms")
	if vms.Line != 16 || vms.Store.Name != "local" || vms.Store.Location != "/backup" || vms.Level != 3 || vms.Pre != "virsh domfsfreeze vm1" {
		t.Errorf("vms: %+v", vms)
	}
	if got := vms.Keep.Rules(); len(got) != 2 || got[0] != (Rule{"hourly", 24}) || got[1] != (Rule{"daily", 14}) {
		t.Errorf("vms keeps %v, want hourly 24 and its own daily 14 over the default's 7", got)
	}
	if len(vms.CopyTo) != 1 || vms.CopyTo[0].Name != "offsite" || !vms.CopyTo[0].IsS3() || vms.CopyTo[0].Region != "eu-west-1" {
		t.Errorf("vms copies to %+v", vms.CopyTo)
	}
	if got := vms.CopyKeep.Rules(); len(got) != 1 || got[0] != (Rule{"daily", 30}) {
		t.Errorf("vms copy keeps %v", got)
	}
	rest := c.Job("rest")
	if rest.All != "vg1" || len(rest.Exclude) != 2 || rest.MetricsFile != "/var/lib/node_exporter/textfile/thinback.prom" || rest.Store.Name != "local" {
		t.Errorf("rest: %+v", rest)
	}
	if got := rest.Keep.Rules(); len(got) != 1 || got[0] != (Rule{"daily", 7}) {
		t.Errorf("rest keeps %v, want the default's daily 7", got)
	}
	img := c.Job("images")
	if img.Store.Name != "offsite" || len(img.Files) != 1 {
		t.Errorf("images: %+v", img)
	}
	// keep_daily = 0 is given: it overrides the default, not inherits it.
	if got := img.Keep.Rules(); len(got) != 1 || got[0] != (Rule{"daily", 0}) {
		t.Errorf("images keeps %v, want its own daily 0", got)
	}
	if c.Job("nope") != nil {
		t.Error("a job that is not there")
	}
}

func TestBad(t *testing.T) {
	const store = "[store.local]\nlocation = \"/backup\"\n"
	for _, tc := range []struct{ name, file, want string }{
		{"syntax", store + "[job.web\nfiles = [\"/a\"]\n",
			"thinback.conf:3: expected ']' to close table name"},
		{"unknown key", store + "[job.web]\nfiles = [\"/a\"]\nstore = \"local\"\nkeep_dayly = 3\n",
			`thinback.conf:6: job "web": unknown key "keep_dayly"`},
		{"unknown store key", store + "secret = \"x\"\n[job.web]\nfiles = [\"/a\"]\nstore = \"local\"\n",
			`thinback.conf:3: store "local": unknown key "secret"`},
		{"unknown table", store + "[jobs.web]\nfiles = [\"/a\"]\n",
			`thinback.conf:3: unknown table or key "jobs": the file has [defaults], [store.NAME] and [job.NAME]`},
		{"two unknown keys", store + "[job.web]\nfiles = [\"/a\"]\nstore = \"local\"\nfoo = 1\n\nbar = 2\n",
			`thinback.conf:6: job "web": unknown key "foo"` + "\n" + `thinback.conf:8: job "web": unknown key "bar"`},
		{"store not a table", "store = \"local\"\n[job.web]\nfiles = [\"/a\"]\n",
			`thinback.conf:1: store: a table is wanted, not a string`},
		{"wrong type", store + "[job.web]\nfiles = [\"/a\"]\nstore = \"local\"\nkeep_daily = \"7\"\n",
			`thinback.conf:6: job.web.keep_daily: a whole number is wanted, not a string`},
		{"volumes not a list", store + "[job.web]\nvolumes = \"vg0/vm1\"\nstore = \"local\"\n",
			`thinback.conf:4: job.web.volumes: a list of strings (["a", "b"]) is wanted, not a string`},
		{"missing store", store + "\n\n[job.web]\nvolumes = [\"vg0/vm1\"]\nstore = \"offsite\"\n",
			`thinback.conf:7: job "web": store "offsite" is not defined: add a [store.offsite] table`},
		{"missing default store", "[defaults]\nstore = \"x\"\n" + store + "[job.web]\nvolumes = [\"vg0/vm1\"]\n",
			`thinback.conf:2: job "web": store "x" is not defined: add a [store.x] table`},
		{"no store", store + "[job.web]\nvolumes = [\"vg0/vm1\"]\n",
			`thinback.conf:3: job "web": no store: give store = "NAME" of a [store.NAME] table (or one in [defaults])`},
		{"not VG/LV", store + "[job.web]\nstore = \"local\"\nvolumes = [\n  \"vg0/vm1\",\n  \"vm2\",\n]\n",
			`thinback.conf:7: job "web": volume "vm2" is not VG/LV (e.g. "vg0/vm1")`},
		{"no volumes", store + "[job.web]\nstore = \"local\"\n",
			`thinback.conf:3: job "web": no volumes: give volumes = ["VG/LV", ...], all = "VG" or files = ["/path/image", ...]`},
		{"empty volumes", store + "[job.web]\nstore = \"local\"\nvolumes = []\n",
			`thinback.conf:3: job "web": no volumes: give volumes = ["VG/LV", ...], all = "VG" or files = ["/path/image", ...]`},
		{"negative retention", store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\nkeep_weekly = -1\n",
			`thinback.conf:6: job "web": keep_weekly = -1: keep a number of snapshots, 0 or more`},
		{"negative copy retention", store + "[store.b]\nlocation = \"/b\"\n[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\ncopy_to = [\"b\"]\ncopy_keep_last = -2\n",
			`thinback.conf:9: job "web": copy_keep_last = -2: keep a number of snapshots, 0 or more`},
		{"negative default", "[defaults]\nkeep_daily = -7\n" + store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:2: [defaults]: keep_daily = -7: keep a number of snapshots, 0 or more`},
		{"two kinds", store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\nall = \"vg0\"\n",
			`thinback.conf:3: job "web": give one of volumes, all and files`},
		{"relative file", store + "[job.web]\nstore = \"local\"\nfiles = [\"a.img\"]\n",
			`thinback.conf:5: job "web": file "a.img" is not an absolute path`},
		{"exclude without all", store + "[job.web]\nstore = \"local\"\nvolumes = [\"vg/a\"]\nexclude = [\"b\"]\n",
			`thinback.conf:6: job "web": exclude is for all = "VG"`},
		{"copy to missing", store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\ncopy_to = [\"s3\"]\n",
			`thinback.conf:6: job "web": copy_to store "s3" is not defined: add a [store.s3] table`},
		{"copy to itself", store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\ncopy_to = [\"local\"]\n",
			`thinback.conf:6: job "web": copy_to "local" is the job's own store`},
		{"level", store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\nlevel = 9\n",
			`thinback.conf:6: job "web": level = 9: give 1 (fastest) to 7 (smallest)`},
		{"volumes in defaults", "[defaults]\nvolumes = [\"a/b\"]\n" + store + "[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:2: [defaults]: volumes belongs in a job: a default would back up the same volumes in every job`},
		{"no location", "[store.local]\nregion = \"x\"\n[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:1: store "local": no location: give location = "/backup", "s3:https://HOST/BUCKET/PREFIX" or "ssh://HOST/PATH"`},
		{"s3 option on a directory", "[store.local]\nlocation = \"/b\"\nregion = \"x\"\n[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:3: store "local": region is for S3 stores, and /b is not one`},
		{"secret inline", "[store.s]\nlocation = \"s3:https://h/b\"\naccess_key_env = \"AKIAIOSFODNN7EXAMPLE\"\nsecret_key_env = \"wJalr/XUtnFEMI\"\n[job.web]\nstore = \"s\"\nfiles = [\"/a\"]\n",
			`thinback.conf:4: store "s": secret_key_env = "wJalr/XUtnFEMI" is not the name of an environment variable (the secret itself never goes in this file)`},
		{"two keys", "[store.local]\nlocation = \"/b\"\nkey_file = \"/k\"\npassword_file = \"/p\"\n[job.web]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:1: store "local": give one of key_file, password_file and password_command`},
		{"bad job name", store + "[job.\"we b\"]\nstore = \"local\"\nfiles = [\"/a\"]\n",
			`thinback.conf:3: job "we b": a job's name is letters, digits, '.', '_' and '-' (it names a systemd unit)`},
		{"no jobs", store, `thinback.conf: no [job.NAME] table: a configuration needs at least one job`},
		{"two errors", store + "[job.a]\nstore = \"x\"\nfiles = [\"/a\"]\n[job.b]\nstore = \"local\"\nvolumes = [\"b\"]\n",
			`thinback.conf:4: job "a": store "x" is not defined: add a [store.x] table` + "\n" + `thinback.conf:8: job "b": volume "b" is not VG/LV (e.g. "vg0/vm1")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("thinback.conf", []byte(tc.file))
			if err == nil {
				t.Fatalf("no error; want\n%s", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v is not ErrInvalid", err)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("got\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "thinback.conf"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want a missing file", err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	creds := filepath.Join(dir, "creds")
	key := filepath.Join(dir, "key")
	img := filepath.Join(dir, "a.img")
	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{creds, 0o644}, {key, 0o600}, {img, 0o644}} {
		if err := os.WriteFile(f.path, []byte("x"), f.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(f.path, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("TB_TEST_ACCESS", "id")
	t.Setenv("TB_TEST_SECRET", "")
	file := `[store.s3]
location = "s3:https://h/b"
credentials_file = "` + creds + `"
key_file = "` + key + `"
[store.env]
location = "s3:https://h/c"
access_key_env = "TB_TEST_ACCESS"
secret_key_env = "TB_TEST_SECRET"
[job.a]
store = "s3"
files = ["` + img + `", "` + dir + `/gone.img"]
`
	c, err := Parse("thinback.conf", []byte(file))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range Check(c) {
		got = append(got, strings.ReplaceAll(e.Error(), dir, "DIR"))
	}
	want := []string{
		`thinback.conf:8: store "env": secret_key_env: $TB_TEST_SECRET is not set (set it in the environment thinback runs in, e.g. the unit's EnvironmentFile=)`,
		`thinback.conf:3: store "s3": credentials_file DIR/creds can be read by others (mode 0644): chmod 600 it`,
		`thinback.conf:11: job "a": file DIR/gone.img: no such file or directory`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if err := os.Chmod(creds, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TB_TEST_SECRET", "s")
	if err := os.WriteFile(filepath.Join(dir, "gone.img"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if errs := Check(c); len(errs) != 0 {
		t.Errorf("a host with everything in place: %v", errs)
	}
}

// FuzzParse: any file gives a Config or errors that are all *Error with
// a line inside the file, never a panic.
func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("[store.a]\nlocation = \"/b\"\n[job.x]\nstore = \"a\"\nvolumes = [\"v/l\", 3]\n"))
	f.Add([]byte("job.x.store = 'a'\n[store.a]\nlocation='/b'\n[job.x]\nfiles=['/i']"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f", data)
		if err == nil {
			if len(c.Jobs) == 0 {
				t.Fatal("a configuration without jobs")
			}
			for _, j := range c.Jobs {
				if j.Store == nil {
					t.Fatalf("job %q without a store", j.Name)
				}
			}
			return
		}
		lines := strings.Count(string(data), "\n") + 1
		var errs []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			errs = j.Unwrap()
		} else {
			errs = []error{err}
		}
		for _, e := range errs {
			var ce *Error
			if !errors.As(e, &ce) || ce.Line < 0 || ce.Line > lines {
				t.Fatalf("%v: not an *Error with a line of the file's %d", e, lines)
			}
		}
	})
}
