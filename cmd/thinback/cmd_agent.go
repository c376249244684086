package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/urfave/cli/v2"
)

// agentService serves a client of another host over c, the agent's
// standard input and output after the handshake; args are those the
// agent was started with after the service's name.
type agentService func(ctx context.Context, e *env, c *remote.Conn, args []string) error

// agentServices are the services thinback agent runs, by name; each is
// registered in an init of its command's file (a map literal naming them
// would be an initialization cycle: the services run the app, whose help
// lists them).
var agentServices = map[string]agentService{}

func init() { agentServices["receive"] = agentReceive }

func agentCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "agent",
		Usage:     "the other end of a command that reaches this host over ssh (not run by hand)",
		ArgsUsage: "SERVICE [ARGS...]",
		Hidden:    true,
		Description: "thinback runs 'thinback agent SERVICE ARGS...' on another host over ssh (send --to\n" +
			"HOST:/PATH, and the commands that reach a host with --rsh) and talks to it over ssh's\n" +
			"standard input and output: first a handshake, in which both ends check that they\n" +
			"speak the same protocol version, then the service's own stream. Nothing in it is run\n" +
			"by a shell. It is not meant to be run by hand: started by hand, it waits for the\n" +
			"handshake on standard input.\n\n" +
			"Services: " + strings.Join(agentServiceNames(), ", ") + ".",
		SkipFlagParsing: true, // the arguments are the service's
		Action: func(c *cli.Context) error {
			a := c.Args().Slice()
			switch {
			case len(a) == 0:
				return usageError{msg: "agent: give the service to run"}
			case a[0] == "--help" || a[0] == "-h":
				cli.HelpPrinter(c.App.Writer, cli.CommandHelpTemplate, c.Command)
				return nil
			}
			return runAgent(c.Context, e, a[0], a[1:])
		},
	}
}

func agentServiceNames() []string {
	var names []string
	for n := range agentServices {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func runAgent(ctx context.Context, e *env, service string, args []string) error {
	serve, ok := agentServices[service]
	if !ok {
		msg := fmt.Sprintf("this thinback (%s) has no service %q (it has %s): install the same thinback on both hosts",
			version, printable.String(service), strings.Join(agentServiceNames(), ", "))
		if err := remote.Refuse(e.stdin, e.stdout, service, msg); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		return nil
	}
	c, err := remote.AcceptArgs(e.stdin, e.stdout, service, args)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return serve(ctx, e, c, args)
}

// agentReceive is `thinback receive ARGS` with the stream on c: send --to
// on another host is its client. When the receive is done or has failed,
// the client gets its status: the exit code and the error.
func agentReceive(ctx context.Context, e *env, c *remote.Conn, args []string) error {
	if !slices.ContainsFunc(args, func(a string) bool { return a == "--to" || strings.HasPrefix(a, "--to=") }) {
		err := usageError{msg: "agent receive: give --to TARGET"}
		writeStatus(c, err)
		return reportedError{err}
	}
	// Standard output is the stream back to the client: what receive
	// would print goes to stderr, which the client shows.
	app := newAppEnv(&env{stdin: c, stdout: e.stderr, stderr: e.stderr})
	err := app.RunContext(ctx, append([]string{"thinback", "receive"}, args...))
	if werr := writeStatus(c, err); werr != nil {
		if err == nil {
			return fmt.Errorf("agent: telling the client the receive succeeded: %w", werr)
		}
		return err
	}
	if err != nil {
		return reportedError{err}
	}
	return nil
}
