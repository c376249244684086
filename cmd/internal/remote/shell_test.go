package remote

import (
	"errors"
	"os/exec"
	"reflect"
	"strings"
	"testing"
)

func TestSplitCommand(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"ssh", []string{"ssh"}},
		{"  ssh   -p 2222\t-i key ", []string{"ssh", "-p", "2222", "-i", "key"}},
		{`ssh -i '/my keys/id' -o "ProxyCommand=nc %h %p"`, []string{"ssh", "-i", "/my keys/id", "-o", "ProxyCommand=nc %h %p"}},
		{`a\ b c\\d 'e'"f"g`, []string{"a b", `c\d`, "efg"}},
		{`"a \" \\ \$ \x"`, []string{`a " \ $ \x`}},
		{`'it'\''s'`, []string{"it's"}},
		{`''`, []string{""}},
		{"a\\\nb", []string{"ab"}},
		{`$HOME ~ *`, []string{"$HOME", "~", "*"}},
	} {
		got, err := SplitCommand(c.in)
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("SplitCommand(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{`ssh 'x`, `ssh "x`, `ssh x\`, `"a\"`} {
		if got, err := SplitCommand(in); err == nil {
			t.Errorf("SplitCommand(%q) = %q, want an error", in, got)
		}
	}
}

// TestQuoteShell runs the remote command a real POSIX shell would get and
// checks that it sees every word as it was.
func TestQuoteShell(t *testing.T) {
	words := []string{"printf", `%s|`, "plain", "with space", "it's", `"dq"`, `$HOME`, "`id`", "*", "~", `back\slash`, "", "'", "-n", "ünï"}
	cmd, err := remoteCommand(words)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("sh", "-c", cmd).Output()
	if err != nil {
		t.Fatalf("sh -c %s: %v", cmd, err)
	}
	if want := strings.Join(words[2:], "|") + "|"; string(out) != want {
		t.Errorf("sh -c %s printed %q, want %q", cmd, out, want)
	}
	if back, err := SplitCommand(cmd); err != nil || !reflect.DeepEqual(back, words) {
		t.Errorf("SplitCommand(%q) = %q, %v", cmd, back, err)
	}
	for _, w := range []string{"a\nb", "a\rb", "\x00", "\x1b[31m"} {
		if _, err := remoteCommand([]string{"thinback", w}); !errors.Is(err, ErrArg) {
			t.Errorf("remoteCommand with %q: %v, want ErrArg", w, err)
		}
	}
}
