package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestCompletions: the candidates thinback gives a completion script.
func TestCompletions(t *testing.T) {
	app := newApp(nil, &bytes.Buffer{}, &bytes.Buffer{})
	for _, tc := range []struct {
		words []string
		has   []string // among the candidates
		none  bool     // no candidates: the shell completes file names
	}{
		{words: []string{""}, has: []string{"backup", "restore", "completion", "key"}},
		{words: []string{"bac"}, has: []string{"backup"}},
		{words: []string{"backup", "--sto"}, has: []string{"--store"}},
		{words: []string{"backup", "--store"}, has: []string{"--store"}},
		{words: []string{"backup", "-"}, has: []string{"--store", "--json", "-q", "--quiet"}},
		{words: []string{"backup", "--store", ""}, none: true},
		{words: []string{"backup", "--store", "sto"}, none: true},
		{words: []string{"backup", "--store", "s", "--fi"}, has: []string{"--file"}},
		{words: []string{"backup", "-q", ""}, none: true},
		{words: []string{"restore", "--to", ""}, none: true},
		{words: []string{"send", "-o", ""}, none: true},
		{words: []string{"key", ""}, has: []string{"list", "add"}},
		{words: []string{"key", "list", "--"}, has: []string{"--store", "--json"}},
		{words: []string{"apply", "full.tbk", ""}, none: true},
		{words: []string{"apply", "--", "--"}, none: true},
		{words: []string{"apply", "x.tbk", "--t"}, has: []string{"--to"}},
	} {
		got := completions(app, tc.words, false)
		if tc.none && len(got) > 0 {
			t.Errorf("%q: %q, want none (file names)", tc.words, got)
		}
		for _, h := range tc.has {
			if !slices.Contains(got, h) {
				t.Errorf("%q: %q lacks %q", tc.words, got, h)
			}
		}
	}
	for _, c := range completions(app, []string{"backup", "--sto"}, true) {
		if !strings.HasPrefix(c, "--store:") {
			t.Errorf("zsh candidate %q has no description", c)
		}
	}
}

// completionEnv makes a directory with a thinback on PATH (this test
// binary, run as the command) and a file a store path can complete to.
func completionEnv(t *testing.T) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	wrapper := "#!/bin/sh\nTHINBACK_TEST_AS_MAIN=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "thinback"), []byte(wrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "store-offsite"), 0o755); err != nil {
		t.Fatal(err)
	}
	env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "HOME="+dir, "XDG_CONFIG_HOME="+dir+"/config")
	return dir, env
}

func runShell(t *testing.T, dir string, env []string, shell string, args ...string) string {
	t.Helper()
	cmd := exec.Command(shell, args...)
	cmd.Dir, cmd.Env = dir, env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		t.Fatalf("%s %q: %v\n%s%s", shell, args, err, out, stderr.String())
	}
	return string(out)
}

// TestCompletionBash: the bash script, in a real bash, completes commands,
// options and the file name after --store.
func TestCompletionBash(t *testing.T) {
	bash := needTool(t, "bash")
	dir, env := completionEnv(t)
	for _, tc := range []struct{ line, want string }{
		{"thinback bac", "backup"},
		{"thinback backup --sto", "--store"},
		{"thinback backup vg0/vm1 --store store-o", "store-offsite"},
		{"thinback key li", "list"},
		{"thinback restore --to sto", "store-offsite"},
	} {
		script := `source <(thinback completion bash)
COMP_LINE="$1"; read -ra COMP_WORDS <<<"$1"; COMP_CWORD=$((${#COMP_WORDS[@]}-1))
_thinback_complete
printf '%s\n' "${COMPREPLY[@]}"`
		got := strings.Fields(runShell(t, dir, env, bash, "-c", script, "bash", tc.line))
		if !slices.Equal(got, []string{tc.want}) {
			t.Errorf("bash, %q: %q, want %q", tc.line, got, tc.want)
		}
	}
}

// zshDriver types a command line and TAB into an interactive zsh on a
// pseudo-terminal (zsh/zpty), with the real completion system (compinit)
// and the script; once the prompt after READY shows (zle has put the
// terminal in raw mode, so keys are not echoed by the line discipline),
// types the line, TAB, then Ctrl-E and END: zle reads keys in order, so END
// shows only once the completion is done, and what precedes it on the
// line is what TAB made of it.
const zshDriver = `zmodload zsh/zpty
zpty z 'PS1="> " TERM=dumb zsh -f -i'
zpty -w z 'autoload -Uz compinit && compinit -u -D && source <(thinback completion zsh) && print -r READ""Y'
zpty -r z out '*READY*> '
zpty -w -n z "$1"$'\t'$'\005'' END'$'\n'
zpty -r z out '*END*'
print -r -- "${${out##*> }%% END*}"
zpty -d z
`

// TestCompletionZsh: in a real interactive zsh, TAB completes commands,
// options and the file name after --store.
func TestCompletionZsh(t *testing.T) {
	zsh := needTool(t, "zsh")
	dir, env := completionEnv(t)
	for _, tc := range []struct{ line, want string }{
		{"thinback bac", "thinback backup "},
		{"thinback backup --sto", "thinback backup --store "},
		{"thinback backup --store store-o", "thinback backup --store store-offsite/"},
		{"thinback key li", "thinback key list "},
	} {
		// The context only ends a zsh that hangs; it measures nothing.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		cmd := exec.CommandContext(ctx, zsh, "-f", "-c", zshDriver, "zsh", tc.line)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("zsh, %q: %v, %q, want %q", tc.line, err, out, tc.want)
		}
	}
	// The script is also a valid completion function file (fpath).
	runShell(t, dir, env, zsh, "-n", "-c", zshCompletion)
}

// TestCompletionFish: fish's own completion engine (complete -C) with the
// script ToFishCompletion makes.
func TestCompletionFish(t *testing.T) {
	fish := needTool(t, "fish")
	dir, env := completionEnv(t)
	for _, tc := range []struct{ line, want string }{
		{"thinback bac", "backup"},
		{"thinback backup --sto", "--store"},
		{"thinback backup --store store-o", "store-offsite/"},
		{"thinback key li", "list"},
	} {
		out := runShell(t, dir, env, fish, "--no-config", "-c", "thinback completion fish | source; complete -C $argv[1]", tc.line)
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			got = append(got, strings.SplitN(l, "\t", 2)[0])
		}
		if !slices.Contains(got, tc.want) {
			t.Errorf("fish, %q: %q, want %q", tc.line, got, tc.want)
		}
	}
}

// TestCompletionCommand: an unknown shell is a usage error.
func TestCompletionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	err := newApp(nil, &out, &errb).Run([]string{"thinback", "completion", "tcsh"})
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "bash, zsh or fish") {
		t.Errorf("completion tcsh: %v (exit %d)", err, exitCode(err))
	}
}
