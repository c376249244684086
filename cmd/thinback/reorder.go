package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed moves a subcommand's flags ahead of its positional
// arguments: urfave/cli v2 stops parsing flags at the first positional
// argument, but people write "thinback apply full.tbk --to /dev/x". Which
// flags take a value is read from the command's own flag definitions; "--"
// ends the flags as usual.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	var cmd *cli.Command
	i := 1
	for ; i < len(args) && cmd == nil; i++ {
		if !strings.HasPrefix(args[i], "-") {
			cmd = app.Command(args[i])
			if cmd == nil {
				return args
			}
		}
	}
	if cmd == nil || cmd.SkipFlagParsing {
		return args // the agent: its arguments are its service's, in order
	}
	// Descend into subcommands ("catalog rebuild").
	for i < len(args) && len(cmd.Subcommands) > 0 && !strings.HasPrefix(args[i], "-") {
		sub := cmd.Command(args[i])
		if sub == nil {
			break
		}
		cmd = sub
		i++
	}
	takesValue := map[string]bool{}
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	out := append([]string(nil), args[:i]...)
	var flags, pos []string
	for j := i; j < len(args); j++ {
		a := args[j]
		switch {
		case a == "--":
			pos = append(pos, args[j+1:]...)
			j = len(args)
		case a == "-" || !strings.HasPrefix(a, "-"):
			pos = append(pos, a)
		default:
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && takesValue[name] {
				if j+1 == len(args) {
					// "apply x.tbk --to": the flag has no value. Given
					// last, without the positional arguments, it is the
					// parser's "flag needs an argument" (a usage error),
					// instead of taking a positional argument or "--"
					// as its value.
					return append(out, flags...)
				}
				j++
				flags = append(flags, args[j])
			}
		}
	}
	if len(pos) > 0 {
		pos = append([]string{"--"}, pos...)
	}
	return append(append(out, flags...), pos...)
}
