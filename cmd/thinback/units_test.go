package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallUnits installs the systemd units into a directory and has
// systemd's own checker read them: a unit systemd would refuse, a setting
// it does not know, or an ExecStart= binary that is not there fails. The
// checker is part of the test: where it is missing the test fails
// (scripts/test installs systemd).
func TestInstallUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("systemd-analyze is needed to check the units (apt-get install systemd): %v", err)
	}
	dir := t.TempDir()
	units := filepath.Join(dir, "units")
	if err := os.Mkdir(units, 0o755); err != nil {
		t.Fatal(err)
	}

	// --dry-run writes nothing and says what it would run.
	r := thinback(t, dir, "", "install-units", "--dir", units, "--dry-run")
	r.want(t, 0, "install-units --dry-run")
	if ents, _ := os.ReadDir(units); len(ents) != 0 {
		t.Fatalf("--dry-run wrote %v", ents)
	}
	for _, want := range []string{"would write " + filepath.Join(units, "thinback@.service"), "systemctl daemon-reload", "systemctl enable --now thinback@JOB.timer"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--dry-run does not say %q:\n%s", want, r.stdout)
		}
	}
	// --enable takes jobs of the configuration file only.
	conf := filepath.Join(dir, "tb.conf")
	if err := os.WriteFile(conf, []byte("[store.s]\nlocation = \"/b\"\n[job.web]\nstore = \"s\"\nfiles = [\"/a.img\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = thinback(t, dir, "", "install-units", "--dir", units, "--dry-run", "--config", conf, "--enable", "web")
	r.want(t, 0, "install-units --enable web --dry-run")
	if !strings.Contains(r.stdout, "systemctl enable --now thinback@web.timer\n") {
		t.Errorf("--enable web --dry-run:\n%s", r.stdout)
	}
	r = thinback(t, dir, "", "install-units", "--dir", units, "--dry-run", "--config", conf, "--enable", "db")
	r.want(t, 2, "install-units --enable db")
	if !strings.Contains(r.stderr, `has no job "db": its jobs are web`) {
		t.Errorf("--enable of a job not in the file:\n%s", r.stderr)
	}

	r = thinback(t, dir, "", "install-units", "--dir", units)
	r.want(t, 0, "install-units")
	exe := thinbackCmd(t, dir).Path
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	service, err := os.ReadFile(filepath.Join(units, "thinback@.service"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(service), "\nExecStart="+exe+" run %i\n") {
		t.Errorf("ExecStart= is not this thinback (%s):\n%s", exe, service)
	}
	// Installing again replaces the units (an upgrade).
	thinback(t, dir, "", "install-units", "--dir", units).want(t, 0, "install-units again")
	ents, err := os.ReadDir(units)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "thinback-failure@.service thinback@.service thinback@.timer" {
		t.Errorf("installed %s", got)
	}

	// systemd reads the units as instances of a job; the OnFailure=
	// example is checked uncommented. The man page is the package's to
	// install, not install-units'.
	hooked := strings.Replace(string(service), "\n# OnFailure=", "\nOnFailure=", 1)
	if hooked == string(service) {
		t.Fatal("thinback@.service has no OnFailure= example")
	}
	for name, text := range map[string]string{"thinback@web.service": hooked} {
		if err := os.WriteFile(filepath.Join(units, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, pair := range [][2]string{{"thinback@.timer", "thinback@web.timer"}, {"thinback-failure@.service", "thinback-failure@thinback@web.service.service"}} {
		data, err := os.ReadFile(filepath.Join(units, pair[0]))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(units, pair[1]), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, unit := range []string{"thinback@web.service", "thinback@web.timer", "thinback-failure@thinback@web.service.service", "thinback@.service"} {
		cmd := exec.Command(analyze, "verify", "--man=no", filepath.Join(units, unit))
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+units+":")
		out, err := cmd.CombinedOutput()
		if err != nil || len(out) > 0 {
			t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
		}
	}
	// The sandbox: systemd's own score of the service's exposure (6.3 of
	// 10 by systemd 252, the most LVM allows: see the unit's comments). A
	// setting dropped or weakened scores more and fails here.
	cmd := exec.Command(analyze, "security", "--offline=true", "--threshold=63", "--no-pager", filepath.Join(units, "thinback@web.service"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze security: %v: the sandbox is weaker than it was\n%s", err, out)
	}
}

func TestRunExitStatus(t *testing.T) {
	for _, tc := range []struct {
		codes []int
		want  int
	}{
		{nil, 0}, {[]int{0, 0}, 0}, {[]int{0, 7, 1}, 7}, {[]int{12, 130, 14}, 130}, {[]int{2, 0}, 2},
	} {
		if got := worstExit(tc.codes); got != tc.want {
			t.Errorf("worstExit(%v) = %d, want %d", tc.codes, got, tc.want)
		}
	}
	err := error(multiError{code: 7, failed: 1, total: 3})
	if exitCode(err) != 7 {
		t.Errorf("exitCode(multiError{code: 7}) = %d", exitCode(err))
	}
	var re reportedError
	if !errors.As(err, &re) {
		t.Error("a multiError is not a reportedError: Main would print it again")
	}
}
