package main

import (
	_ "embed"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// The scripts ask thinback for the candidates of the word being completed
// by running the words before it with this flag last, as urfave/cli's
// scripts do.
const completeFlag = "--generate-bash-completion"

var (
	//go:embed completion/bash
	bashCompletion string
	//go:embed completion/zsh
	zshCompletion string
)

func completionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script",
		ArgsUsage: "bash|zsh|fish",
		Description: "Prints the script that completes thinback's commands and options, and file names\n" +
			"for --store, --to, --file and -o, in bash, zsh or fish. Install it with:\n\n" +
			"  thinback completion bash > /etc/bash_completion.d/thinback\n" +
			"  thinback completion zsh > /usr/local/share/zsh/site-functions/_thinback\n" +
			"  thinback completion fish > ~/.config/fish/completions/thinback.fish",
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give the shell: bash, zsh or fish")
			if err != nil {
				return err
			}
			var script string
			switch a[0] {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				if script, err = c.App.ToFishCompletion(); err != nil {
					return err
				}
			default:
				return usageError{msg: fmt.Sprintf("completion: no completion for shell %q: give bash, zsh or fish", a[0])}
			}
			_, err = io.WriteString(e.stdout, script)
			return err
		},
	}
}

// completionRequest reports whether args (the program's name first) ask
// for completions, and the words to complete then, without the name.
func completionRequest(args []string) ([]string, bool) {
	if len(args) < 2 || args[len(args)-1] != completeFlag {
		return nil, false
	}
	return args[1 : len(args)-1], true
}

// completions returns the candidates for the last of words, the word
// being completed ("" when none is typed yet), the words before it being
// the command line after the program's name: the options of the command
// when an option is being typed, else its commands or subcommands where
// one is expected, and nothing (the shell completes file names) for the
// value of an option or a positional argument. With describe (zsh), each
// is "name:what it does".
func completions(app *cli.App, words []string, describe bool) []string {
	flags := app.VisibleFlags()
	subs := app.VisibleCommands()
	typing := ""
	if n := len(words); n > 0 {
		typing, words = words[n-1], words[:n-1]
	}
	// positional: an argument of the command was given; ended: "--" was
	// (flags are taken anywhere before it, as interspersed does).
	positional, ended := false, false
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" {
			positional, ended = true, true
			continue
		}
		if strings.HasPrefix(w, "-") && !ended {
			if f := findFlag(flags, w); f != nil && takesValue(f) && !strings.Contains(w, "=") {
				if i+1 == len(words) {
					return nil // the option's value: a file name, or free text
				}
				i++
			}
			continue
		}
		if sub := findCommand(subs, w); sub != nil && !positional {
			flags, subs = sub.VisibleFlags(), sub.VisibleCommands()
			continue
		}
		positional = true
	}
	var out []string
	item := func(name, usage string) {
		if describe && usage != "" {
			name += ":" + strings.ReplaceAll(strings.SplitN(usage, "\n", 2)[0], ":", `\:`)
		}
		out = append(out, name)
	}
	if strings.HasPrefix(typing, "-") && !ended {
		for _, f := range flags {
			for _, n := range f.Names() {
				dashes := "--"
				if len(n) == 1 {
					dashes = "-"
				}
				if strings.HasPrefix(dashes+n, typing) {
					item(dashes+n, flagUsage(f))
				}
			}
		}
		return out
	}
	if positional {
		return nil
	}
	for _, s := range subs {
		item(s.Name, s.Usage)
	}
	return out
}

func findFlag(flags []cli.Flag, word string) cli.Flag {
	name := strings.SplitN(strings.TrimLeft(word, "-"), "=", 2)[0]
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func takesValue(f cli.Flag) bool {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.TakesValue()
	}
	return false
}

func flagUsage(f cli.Flag) string {
	if d, ok := f.(cli.DocGenerationFlag); ok {
		return d.GetUsage()
	}
	return ""
}

// printCompletions answers a completion script (see completionRequest).
func printCompletions(app *cli.App, words []string, w io.Writer) {
	for _, c := range completions(app, words, os.Getenv("THINBACK_COMPLETION") == "zsh") {
		fmt.Fprintln(w, c)
	}
}
