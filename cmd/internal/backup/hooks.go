package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// hooks are a run's --pre and --post commands: run with sh, their output
// going to out (thinback's stderr: a cron job mails it), with the
// backup's details in their environment (vars).
type hooks struct {
	out  io.Writer
	vars map[string]string
}

// run runs the command of hook which ("pre" or "post"), if any.
func (hk hooks) run(ctx context.Context, which, command string) error {
	if command == "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdout, cmd.Stderr = hk.out, hk.out
	cmd.Env = os.Environ()
	for k, v := range hk.vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "THINBACK_HOOK="+which)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("--%s command %q failed: %w", which, command, err)
	}
	return nil
}

// RunHook runs the --pre or --post command (which) of a command that takes
// snapshots itself, as a backup runs them: with sh, its output to out,
// vars added to its environment.
func RunHook(ctx context.Context, out io.Writer, which, command string, vars map[string]string) error {
	v := map[string]string{}
	for k, x := range vars {
		v[k] = x
	}
	return hooks{out: out, vars: v}.run(ctx, which, command)
}
