package main

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// FuzzInterspersed: any command line is reordered without inventing
// arguments (only the "--" that ends the flags is added), the program and
// command stay in front, and positional arguments keep their order.
func FuzzInterspersed(f *testing.F) {
	for _, s := range []string{"thinback apply full.tbk --to copy.img", "thinback apply a.tbk --to", "thinback catalog rebuild --store",
		"thinback backup -- --x", "thinback --bogus apply", "thinback send --file=a -o - x", "thinback"} {
		f.Add(s)
	}
	app := newApp(strings.NewReader(""), io.Discard, io.Discard)
	f.Fuzz(func(t *testing.T, line string) {
		in := strings.Split(line, " ")
		out := interspersed(app, in)
		if len(out) == 0 || out[0] != in[0] {
			t.Fatalf("interspersed(%q) = %q lost the program name", in, out)
		}
		count := map[string]int{}
		for _, a := range in {
			count[a]++
		}
		added := 0
		for _, a := range out {
			if count[a] == 0 {
				if a != "--" || added > 0 {
					t.Fatalf("interspersed(%q) = %q invented %q", in, out, a)
				}
				added++
				continue
			}
			count[a]--
		}
	})
}

// FuzzParseTime: a time people type is read or refused as a usage error,
// never a panic.
func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"2026-11-20 03:00", "2026-11-20T03:00:00Z", "2026-11-20", "yesterday", "2026-13-45 99:99", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if _, err := parseTime(s); err != nil {
			if ue := (usageError{}); !errors.As(err, &ue) {
				t.Fatalf("parseTime(%q): %v is not a usage error", s, err)
			}
		}
	})
}
