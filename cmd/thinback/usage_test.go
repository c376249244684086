package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every bad command line exits 2 with the command's usage hint.
func TestUsageExitCodes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.img"), make([]byte, 65536), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		hint string
	}{
		{[]string{"frobnicate"}, "thinback --help"},
		{[]string{"--bogus"}, "thinback --help"},
		{[]string{"backup", "--bogus", "vg0/vm1"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--block-size", "abc"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--block-size", "1000"}, "block-size 1000"},
		{[]string{"backup", "--file", "a.img", "--store"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--level", "-5"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--level", "99"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--keep-daily", "-1"}, "thinback backup --help"},
		{[]string{"backup", "--file", "a.img", "--store", "s", "--keep-daily", "x"}, "thinback backup --help"},
		{[]string{"send", "--file", "a.img", "-o", "x.tbk", "--level", "0"}, "thinback send --help"},
		{[]string{"send", "--file", "a.img", "-o", "x.tbk", "--level", "8"}, "thinback send --help"},
		{[]string{"send", "--file", "a.img", "-o"}, "thinback send --help"},
		{[]string{"send", "--file", "a.img", "-o", "x.tbk", "--block-size", "64k"}, "thinback send --help"},
		{[]string{"apply", "x.tbk", "--to"}, "thinback apply --help"},
		{[]string{"apply", "x.tbk", "--to", "t.img", "--force=maybe"}, "thinback apply --help"},
		{[]string{"apply", "x.tbk"}, "--to"},
		{[]string{"restore", "v", "--store", "s", "--to", "t.img", "--at", "x", "--snapshot", "1"}, "thinback restore --help"},
		{[]string{"list", "--store"}, "thinback list --help"},
		{[]string{"list", "--bogus"}, "thinback list --help"},
		{[]string{"inspect", "--json=3", "x.tbk"}, "thinback inspect --help"},
		{[]string{"inspect"}, "thinback inspect --help"},
		{[]string{"verify", "--quiet=x"}, "thinback verify --help"},
		{[]string{"prune", "--store", "s", "--keep-last", "-1"}, "thinback prune --help"},
		{[]string{"prune", "--keep-last"}, "thinback prune --help"},
		{[]string{"receive", "--bogus"}, "thinback receive --help"},
		{[]string{"receive", "extra"}, "thinback receive --help"},
		{[]string{"init", "--store"}, "thinback init --help"},
		{[]string{"init", "--store", "s", "--encrypt", "--no-encrypt"}, "thinback init --help"},
		{[]string{"init", "--store", "s", "--new-key-file", "k"}, "thinback init --help"},
		{[]string{"init", "--store", "s", "--encrypt", "--pbkdf-memory", "2"}, "thinback init --help"},
		{[]string{"key"}, "thinback key --help"},
		{[]string{"key", "bogus"}, "thinback key --help"},
		{[]string{"key", "list", "--bogus"}, "thinback key list --help"},
		{[]string{"key", "remove", "--store", "s"}, "thinback key remove --help"},
		{[]string{"key", "passwd", "--store", "s", "a", "b"}, "thinback key passwd --help"},
		{[]string{"key", "add", "--store", "s"}, "thinback key add --help"},
		{[]string{"catalog"}, "thinback catalog --help"},
		{[]string{"catalog", "bogus"}, "thinback catalog --help"},
		{[]string{"catalog", "rebuild", "--bogus"}, "thinback catalog rebuild --help"},
		{[]string{"catalog", "rebuild", "extra"}, "thinback catalog rebuild --help"},
	} {
		r := thinback(t, dir, "", tc.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tc.hint) {
			t.Errorf("thinback %s: exit %d, %q; want exit 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.hint)
		}
	}
	for _, name := range []string{"x.tbk", "s"} {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			t.Errorf("a bad command line created %s", name)
		}
	}
}
