package backup

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// runHook runs a --pre or --post command with sh, its output going to
// out (thinback's stderr: a cron job mails it), with the backup's details
// in its environment.
func runHook(ctx context.Context, out io.Writer, which, command string, vars map[string]string) error {
	if command == "" {
		return nil
	}
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", command)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = os.Environ()
	for k, v := range vars {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, "THINBACK_HOOK="+which)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("--%s command %q failed: %w", which, command, err)
	}
	return nil
}
