// Package printable makes text from outside thinback safe to print on a
// terminal: names and attributes come from delta files, streams and
// catalogs that anyone can write.
package printable

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Names and attributes printed for people come from delta files, streams
// and catalogs that anyone can write. A name holding "ESC ] 0;..." would
// retitle the user's terminal, "ESC [2J" clear it, a bidi override make
// one name read as another. Human output therefore passes every such
// string through String; --json output keeps them exact (JSON escapes
// what it must, and a program reads the value, not the screen).

// Escaped reports the runes String escapes: C0 and C1 controls and DEL,
// bidirectional embeddings, overrides, isolates and marks, and the line
// and paragraph separators. Everything else, accents, CJK and emoji
// included, is printed as it is, so ordinary names stay readable.
func Escaped(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c, r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// String returns s with each rune a terminal would act on written as a Go
// escape (\x1b, \n, \u202e), and each byte that is not UTF-8 as \xNN.
// A string without such runes is returned unchanged.
func String(s string) string { return escape(s, false) }

// Message is String for a message of several lines: newlines, which
// thinback's own messages use to separate advice from the error, are
// kept; every other control is escaped. Names inside thinback's messages
// are passed through String where they are formatted, so a newline in a
// name does not reach here as a newline from cmd's own messages.
func Message(s string) string { return escape(s, true) }

func escape(s string, keepNewlines bool) string {
	clean := true
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || (Escaped(r) && !(keepNewlines && r == '\n')) {
			clean = false
			break
		}
		i += n
	}
	if clean {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])>>4, 16))
			b.WriteString(strconv.FormatUint(uint64(s[i])&15, 16))
		case Escaped(r) && !(keepNewlines && r == '\n'):
			q := strconv.QuoteRuneToASCII(r) // '\x1b', '\u202e'
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// Sayf writes one line of human output to w: the formatted text, passed
// through String as a whole (so no name in it can carry a control to the
// terminal, a newline included), and a newline.
func Sayf(w io.Writer, format string, a ...any) {
	fmt.Fprintln(w, String(fmt.Sprintf(format, a...)))
}
