package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func toolName() string { return "thinback " + version }

// Main runs thinback with args and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app := newAppEnv(&env{stdin: stdinFor(ctx, os.Stdin), stdout: os.Stdout, stderr: os.Stderr, tty: "/dev/tty"})
	if words, ok := completionRequest(args); ok {
		printCompletions(app, words, os.Stdout)
		return 0
	}
	err := app.RunContext(ctx, interspersed(app, args))
	if err != nil && !errors.As(err, new(reportedError)) {
		fmt.Fprintf(os.Stderr, "thinback: %s\n", errorLine(ctx, err))
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			// The signal arrived while the error was being made.
			err = fmt.Errorf("%w (interrupted: %w)", err, context.Canceled)
		}
	}
	return exitCode(err)
}

// env carries the standard streams, so tests can run commands in process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	s3             s3Config       // the S3 store options of the command running
	ssh            remote.Options // how the command running reaches an ssh:// store
	// tty is the terminal a passphrase is asked at ("": never ask).
	tty string
	// create says how the command running makes a new store (nil: a
	// command without --encrypt and --no-encrypt).
	create *newStore
	// made is the key of the store the command made encrypted, if any.
	made *madeKey
	// s3Creds are the credentials of S3 stores that a config file
	// names, by store address (see run).
	s3Creds map[string]s3Credentials
	// job is the config job a command runs for (run), "" outside one:
	// the job label of its metrics.
	job string
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return newAppEnv(&env{stdin: stdin, stdout: stdout, stderr: stderr})
}

// newAppEnv is newApp with every part of the environment given.
func newAppEnv(e *env) *cli.App {
	stdin, stdout, stderr := e.stdin, e.stdout, e.stderr
	app := &cli.App{
		Name:    "thinback",
		Usage:   "incremental block-level backups of LVM thin volumes, images and block devices",
		Version: version,
		Description: "thinback writes a snapshot of a volume, or what changed since an earlier one, as a\n" +
			"self-describing, compressed, checksummed delta file, and applies delta files to a\n" +
			"file or block device. For LVM thin volumes the changed blocks come from the thin\n" +
			"pool's metadata, so a backup reads only what changed.",
		CustomAppHelpTemplate: cli.AppHelpTemplate + "\n" + exitCodesHelp,
		Reader:                stdin,
		Writer:                stdout,
		ErrWriter:             stderr,
		HideHelpCommand:       true,
		// Errors are returned and mapped to exit codes in Main; never let
		// the framework exit on its own.
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{msg: err.Error(), hint: "thinback"}
		},
		// Without an Action, urfave shows help for "thinback frobnicate"
		// and fails with its own exit code.
		Action: func(c *cli.Context) error {
			switch a := c.Args(); {
			case a.First() == "help" && a.Get(1) == "--man":
				// Hidden: go generate writes docs/man with it.
				if a.Len() != 3 {
					return usageError{msg: "help --man: give the directory to write the manual pages in", hint: "thinback"}
				}
				return writeManPages(c.App, a.Get(2))
			case a.First() == "help" && a.Len() == 2 && c.App.Command(a.Get(1)) != nil:
				return cli.ShowCommandHelp(c, a.Get(1))
			case a.First() == "help" && a.Len() == 1:
				return cli.ShowAppHelp(c)
			case a.Present():
				return usageError{msg: fmt.Sprintf("unknown command %q", strings.Join(a.Slice(), " ")), hint: "thinback"}
			}
			return cli.ShowAppHelp(c)
		},
		Commands: []*cli.Command{
			initCommand(e),
			backupCommand(e),
			sendCommand(e),
			replicateCommand(e),
			receiveCommand(e),
			applyCommand(e),
			restoreCommand(e),
			catCommand(e),
			mountCommand(e),
			serveCommand(e),
			listCommand(e),
			pruneCommand(e),
			verifyCommand(e),
			catalogCommand(e),
			inspectCommand(e),
			keyCommand(e),
			agentCommand(e),
			copyCommand(e),
			runCommand(e), configCommand(e), installUnitsCommand(e),
			completionCommand(e),
		},
	}
	for _, cmd := range app.Commands {
		addStoreFlags(e, cmd)
		addCreateFlags(e, cmd)
		usageErrors(cmd, "thinback "+cmd.Name)
		completeFiles(cmd)
	}
	return app
}

// usageErrors makes every bad command line of cmd and its subcommands a
// usageError (exit code 2) that names the command and its usage: an
// unknown flag, a flag without its value or with one that does not parse,
// an unknown subcommand.
func usageErrors(cmd *cli.Command, path string) {
	usage := path + " [options]"
	if cmd.ArgsUsage != "" {
		usage += " " + cmd.ArgsUsage
	}
	cmd.OnUsageError = func(_ *cli.Context, err error, _ bool) error {
		return usageError{msg: fmt.Sprintf("%s: %v\nusage: %s", path[len("thinback "):], err, usage), hint: path}
	}
	if act := cmd.Action; act != nil {
		cmd.Action = func(c *cli.Context) error {
			err := act(c)
			if ue := (usageError{}); errors.As(err, &ue) && ue.hint == "" {
				return usageError{msg: err.Error(), hint: path}
			}
			return err
		}
	}
	if len(cmd.Subcommands) == 0 {
		return
	}
	var names []string
	for _, sub := range cmd.Subcommands {
		usageErrors(sub, path+" "+sub.Name)
		names = append(names, sub.Name)
	}
	if cmd.Action == nil {
		cmd.Action = func(c *cli.Context) error {
			what := "give a subcommand"
			if c.Args().Present() {
				what = fmt.Sprintf("unknown subcommand %q", c.Args().First())
			}
			return usageError{msg: fmt.Sprintf("%s: %s: %s", path[len("thinback "):], what, strings.Join(names, ", ")), hint: path}
		}
	}
}

// quietFlag silences progress and the summary line.
var quietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing but errors"}

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int, what string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) < min || (max >= 0 && len(a) > max) {
		return nil, usageError{msg: fmt.Sprintf("%s: %s", c.Command.Name, what), hint: c.Command.HelpName}
	}
	return a, nil
}

// levelFlag is the compression level of send and backup.
var levelFlag = &cli.IntFlag{Name: "level", Value: int(archive.LevelFastest),
	Usage: "compression level from 1 (fastest) to 7 (smallest); 3 is zstd's default"}

// level reads --level, refusing what is not a level.
func level(c *cli.Context) (archive.Level, error) {
	n := c.Int("level")
	if n < int(archive.LevelFastest) || n > int(archive.LevelBetter) {
		return 0, usageError{msg: fmt.Sprintf("%s: --level %d is not a compression level: give 1 (fastest) to %d (smallest)",
			c.Command.Name, n, archive.LevelBetter), hint: c.Command.HelpName}
	}
	return archive.Level(n), nil
}

// completeFiles marks a command's --file as naming a file, for fish's
// completion (ToFishCompletion). Each command makes its own --file, so
// this changes no flag another app shares; shared flags are marked where
// they are defined.
func completeFiles(cmd *cli.Command) {
	for _, f := range cmd.Flags {
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "file" {
			sf.TakesFile = true
		}
	}
}
