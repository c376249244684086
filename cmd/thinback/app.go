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

	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func toolName() string { return "thinback " + version }

// Main runs thinback with args and returns the exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	app := newApp(stdinFor(ctx, os.Stdin), os.Stdout, os.Stderr)
	err := app.RunContext(ctx, interspersed(app, args))
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			// The signal arrived while the error was being made.
			err = fmt.Errorf("%w (interrupted: %w)", err, context.Canceled)
		}
		msg := err.Error()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			msg = "interrupted: " + strings.TrimSuffix(msg, ": context canceled")
		}
		fmt.Fprintf(os.Stderr, "thinback: %s\n", msg)
	}
	return exitCode(err)
}

// env carries the standard streams, so tests can run commands in process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	return &cli.App{
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
			return usageError{err.Error()}
		},
		Commands: []*cli.Command{
			initCommand(e),
			backupCommand(e),
			sendCommand(e),
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
		},
	}
}

// quietFlag silences progress and the summary line.
var quietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print nothing but errors"}

// args checks the number of positional arguments.
func args(c *cli.Context, min, max int, what string) ([]string, error) {
	a := c.Args().Slice()
	if len(a) < min || (max >= 0 && len(a) > max) {
		return nil, usageError{fmt.Sprintf("%s: %s (see thinback %s --help)", c.Command.Name, what, c.Command.Name)}
	}
	return a, nil
}
