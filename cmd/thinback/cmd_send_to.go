package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/urfave/cli/v2"
)

// send --to: lvmsync's one-liner, the same transfer as
// `send -o - | ssh HOST thinback receive --to PATH`.
var (
	sendToFlag = &cli.StringFlag{Name: "to", TakesFile: true,
		Usage: "apply the delta on another host as receive --to does there: HOST:/dev/VG/LV, ssh://[USER@]HOST[:PORT]/PATH, or a file or device on this host"}
	sendSnapbackFlag = &cli.StringFlag{Name: "snapback", TakesFile: true, Usage: "with --to: save the data the apply overwrites in this new delta file, on the receiving host"}
	sendForceFlag    = &cli.BoolFlag{Name: "force", Usage: "with --to: apply even if the target is not known to hold the base snapshot"}
)

const sendToHelp = "With --to HOST:/dev/VG/LV (or ssh://[USER@]HOST[:PORT]/PATH, where VG/LV stands for\n" +
	"/dev/VG/LV), the delta is applied on HOST as 'thinback receive --to' does there: its state\n" +
	"file and checks, --snapback FILE and --force on the receiving host. thinback is run there\n" +
	"over ssh (--rsh, --remote-thinback; nothing passes through a shell unquoted) after a\n" +
	"handshake that checks both ends speak the same protocol. send exits with the receiver's\n" +
	"exit code and error, prefixed with the host; 15 when the host could not be reached or has\n" +
	"no (or an incompatible) thinback. A --to without a host runs the receiver here. The\n" +
	"stream goes in the clear through ssh, which encrypts the connection: --to takes no\n" +
	"--store or --key-file."

// sendToArgs reads send --to's flags into o.
func sendToArgs(e *env, c *cli.Context, o *sendOptions) error {
	o.to, o.snapback, o.force = c.String(sendToFlag.Name), c.String(sendSnapbackFlag.Name), c.Bool(sendForceFlag.Name)
	switch {
	case o.to == "" && (o.snapback != "" || o.force):
		return usageError{msg: "send: --snapback and --force go with --to"}
	case o.to == "":
		return nil
	case o.out != "":
		return usageError{msg: "send: give -o or --to, not both"}
	case c.IsSet(sendStoreFlag.Name) || c.IsSet(keyFileFlag.Name):
		return usageError{msg: "send: --to sends in the clear through ssh, which encrypts the connection, to a receiver that applies it: drop --store and --key-file (or unset $THINBACK_KEY_FILE)"}
	}
	if _, err := remote.ParseDest(o.to); err != nil {
		return usageError{msg: fmt.Sprintf("send: --to: %v", err)}
	}
	o.key = nil
	o.remote = remoteOptions(e, c)
	return nil
}

// sendRemote writes the delta of so to the agent of o.to, which applies
// it as receive --to does, and returns the receiver's error, if any, as
// the send's.
func sendRemote(ctx context.Context, e *env, o sendOptions, so sendToOptions) (sendStats, error) {
	d, err := remote.ParseDest(o.to)
	if err != nil {
		return sendStats{}, usageError{msg: fmt.Sprintf("send: --to: %v", err)}
	}
	path := d.Path
	if d.Remote() && !strings.HasPrefix(path, "/") {
		path = "/dev/" + path // VG/LV: ParseDest keeps only that relative
	}
	args := []string{"--to", path}
	if o.snapback != "" {
		args = append(args, "--snapback", o.snapback)
	}
	if o.force {
		args = append(args, "--force")
	}
	if o.quiet {
		args = append(args, "--quiet")
	}
	c, err := remote.Dial(ctx, d, o.remote, "receive", args...)
	if err != nil {
		return sendStats{}, fmt.Errorf("send: --to %s: %w", d, err)
	}
	defer c.Kill() // when the transfer failed; after Close it finds nothing
	so.to, so.toName = c, d.String()
	st, serr := sendTo(ctx, e, so)
	if serr == nil {
		if err := c.CloseWrite(); err != nil {
			serr = fmt.Errorf("send: --to %s: %w", d, err)
		}
	}
	// The receiver stops reading when it refuses the stream, and says why
	// before it exits: its error is the send's, whatever the sending met.
	rerr := readStatus(c, d.Where())
	cerr := c.Close()
	var re *remoteError
	switch {
	case ctx.Err() != nil:
		return st, fmt.Errorf("send --to %s: the receiver stops at the last record it verified; the same send, run again, finishes the target: %w", d, ctx.Err())
	case errors.As(rerr, &re):
		return st, fmt.Errorf("send: %w", rerr)
	case serr != nil && cerr != nil:
		return st, fmt.Errorf("%w; %v", serr, cerr)
	case serr != nil:
		return st, serr
	case cerr != nil:
		return st, fmt.Errorf("send: --to %s: %w", d, cerr)
	case rerr != nil:
		return st, fmt.Errorf("send: --to %s: %w", d, rerr)
	}
	return st, nil
}
