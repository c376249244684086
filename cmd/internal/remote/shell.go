package remote

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
)

// ErrArg is an argument that cannot be passed to the other host: it holds
// a control character (a newline would end the remote shell's command).
var ErrArg = errors.New("argument not passed to the other host")

// SplitCommand splits a command line as a POSIX shell would split its
// words, without running a shell: blanks separate words; '...' is literal;
// in "..." a backslash escapes \ " $ ` and newline; outside quotes a
// backslash escapes the next character. No variable, glob or tilde is
// expanded.
func SplitCommand(s string) ([]string, error) {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			inWord = true
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' in %q", s)
			}
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inWord = true
			i++
			for ; ; i++ {
				if i >= len(s) {
					return nil, fmt.Errorf("unterminated \" in %q", s)
				}
				if s[i] == '"' {
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\\\"$`\n", s[i+1]) >= 0 {
					i++
					if s[i] == '\n' {
						continue
					}
				}
				w.WriteByte(s[i])
			}
		case c == '\\':
			if i+1 >= len(s) {
				return nil, fmt.Errorf("%q ends in a backslash", s)
			}
			i++
			if s[i] == '\n' {
				continue
			}
			inWord = true
			w.WriteByte(s[i])
		default:
			inWord = true
			w.WriteByte(c)
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words, nil
}

// Quote quotes s for a POSIX shell: in single quotes, each single quote
// of s written as a quote ending the quoting, an escaped quote (\') and a
// quote starting it again.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// quoteIfNeeded quotes s only when a shell would not read it as one plain
// word: for showing a command line in a message.
func quoteIfNeeded(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-_./=:@,+%", r)))
	}) < 0 {
		return s
	}
	return Quote(s)
}

// checkWord refuses a word with a control character: a newline or a
// carriage return ends a shell's command, others garble messages.
func checkWord(s string) error {
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%q holds a control character (%U): %w", s, r, ErrArg)
		}
	}
	return nil
}

// remoteCommand is the one argument ssh gets as the command to run: every
// word quoted, so that the remote user's POSIX shell runs argv as it is.
func remoteCommand(argv []string) (string, error) {
	q := make([]string, len(argv))
	for i, a := range argv {
		if err := checkWord(a); err != nil {
			return "", err
		}
		q[i] = Quote(a)
	}
	return strings.Join(q, " "), nil
}

// showCommand writes argv for a message, quoting words that need it.
func showCommand(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = quoteIfNeeded(a)
	}
	return strings.Join(q, " ")
}
