package main

import (
	"io"
	"reflect"
	"strings"
	"testing"
)

func TestInterspersed(t *testing.T) {
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	for _, tc := range []struct{ in, want string }{
		{"thinback apply full.tbk --to copy.img", "thinback apply --to copy.img -- full.tbk"},
		{"thinback apply --to=x a b --force", "thinback apply --to=x --force -- a b"},
		{"thinback apply - --to x", "thinback apply --to x -- -"},
		{"thinback catalog rebuild --store /s", "thinback catalog rebuild --store /s"},
		{"thinback restore vg/lv --to /dev/x --at 2026-11-20", "thinback restore --to /dev/x --at 2026-11-20 -- vg/lv"},
		{"thinback apply a -- --weird-name", "thinback apply -- a --weird-name"},
		{"thinback apply --to x -- -f", "thinback apply --to x -- -f"},
		{"thinback nosuch a --b", "thinback nosuch a --b"},
		{"thinback --version", "thinback --version"},
		// A flag without its value stays without one: a usage error, not
		// a positional argument taken as the value.
		{"thinback apply a.tbk --to", "thinback apply --to"},
		{"thinback backup --file x --store", "thinback backup --file x --store"},
	} {
		got := interspersed(app, strings.Fields(tc.in))
		if want := strings.Fields(tc.want); !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.in, got, want)
		}
	}
}
