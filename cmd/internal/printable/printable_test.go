package printable

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzSafe: whatever a file, stream or catalog holds, what String prints
// carries no rune a terminal acts on, is valid UTF-8, and an ordinary
// string is printed as it is. Message differs only in keeping
// newlines.
func FuzzSafe(f *testing.F) {
	for _, s := range []string{"vg0/vm1", "snap\x1b]0;title\x07", "\x1b[2J", "a\u202eb", "\u0085", "\xff\xfe", "café 日本 😀", "a\nb\tc\r", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, keep := range []bool{false, true} {
			out := escape(s, keep)
			if !utf8.ValidString(out) {
				t.Fatalf("escape(%q, %v) = %q: not UTF-8", s, keep, out)
			}
			for _, r := range out {
				if Escaped(r) && !(keep && r == '\n') {
					t.Fatalf("escape(%q, %v) = %q holds %U", s, keep, out, r)
				}
			}
			if keep && strings.Count(out, "\n") != strings.Count(s, "\n") {
				t.Fatalf("Message(%q) = %q changed the lines", s, out)
			}
			clean := utf8.ValidString(s)
			for _, r := range s {
				if Escaped(r) && !(keep && r == '\n') {
					clean = false
				}
			}
			if clean && out != s {
				t.Fatalf("escape(%q, %v) = %q changed an ordinary string", s, keep, out)
			}
		}
	})
}
