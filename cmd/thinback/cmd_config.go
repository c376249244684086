package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/config"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/dist/systemd"
	"github.com/urfave/cli/v2"
)

func configCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "the configuration file of run",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "check the configuration file and print what each job runs",
			Description: "Loads the file (" + config.DefaultPath + ", or --config), checks it and what it\n" +
				"names on this host (key, password and credentials files there and readable by their\n" +
				"owner only, the environment variables of access_key_env/secret_key_env, images), and\n" +
				"prints each job with the command lines run would run. Every problem is printed with\n" +
				"its line; a file with any exits with code 2.",
			Flags: []cli.Flag{configFlag},
			Action: func(c *cli.Context) error {
				if _, err := args(c, 0, 0, "takes no arguments"); err != nil {
					return err
				}
				return runConfigCheck(e, c.String(configFlag.Name), c)
			},
		}},
	}
}

func runConfigCheck(e *env, path string, c *cli.Context) error {
	cfg, err := config.Load(path)
	if err != nil {
		return configError(e, c, err)
	}
	var bad []error
	for _, j := range cfg.Jobs {
		steps, err := jobSteps(j, overrides{}, false)
		if err != nil {
			bad = append(bad, &config.Error{File: cfg.Path, Line: j.Line, Msg: err.Error()})
			continue
		}
		fmt.Fprintf(e.stdout, "job %s (line %d):\n", j.Name, j.Line)
		for _, s := range steps {
			fmt.Fprintf(e.stdout, "  %s\n", commandLine(s.args))
		}
	}
	bad = append(bad, config.Check(cfg)...)
	if len(bad) > 0 {
		for _, err := range bad {
			printable.Sayf(e.stderr, "thinback: %v", err)
		}
		return multiError{code: exitUsage, failed: len(bad), total: len(cfg.Jobs)}
	}
	fmt.Fprintf(e.stdout, "%s: %d job(s), %d store(s): ok\n", cfg.Path, len(cfg.Jobs), len(cfg.Stores))
	return nil
}

func installUnitsCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "install-units",
		Usage: "install the systemd units that run jobs on a timer",
		Description: "Writes thinback@.service (runs \"thinback run JOB\", sandboxed), thinback@.timer\n" +
			"(hourly, Persistent=true, a randomized delay) and thinback-failure@.service (an\n" +
			"OnFailure= example that logs a failed run) into --dir, with the path of this thinback\n" +
			"binary in ExecStart=, then prints the systemctl commands that enable a job's timer.\n" +
			"With --enable JOB it runs them: systemctl daemon-reload, and systemctl enable --now\n" +
			"thinback@JOB.timer for each JOB (which must be a job of the configuration file).\n" +
			"--dry-run prints what it would write and run.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Value: "/etc/systemd/system", Usage: "the directory of the units"},
			&cli.StringSliceFlag{Name: "enable", Usage: "enable and start the timer of this job (several times for several jobs)"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print what would be written and run; change nothing"},
			configFlag,
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "takes no arguments: give jobs with --enable JOB"); err != nil {
				return err
			}
			jobs := c.StringSlice("enable")
			if len(jobs) > 0 {
				cfg, err := config.Load(c.String(configFlag.Name))
				if err != nil {
					return configError(e, c, err)
				}
				if _, err := pickJobs(cfg, jobs, false); err != nil {
					return err
				}
			}
			exe, err := os.Executable()
			if err == nil {
				exe, err = filepath.EvalSymlinks(exe)
			}
			if err != nil {
				return fmt.Errorf("install-units: the path of this thinback: %w", err)
			}
			return runInstallUnits(c.Context, e, c.String("dir"), exe, jobs, c.Bool("dry-run"))
		},
	}
}

// runInstallUnits writes the units into dir, running exe, and enables
// the timers of jobs.
func runInstallUnits(ctx context.Context, e *env, dir, exe string, jobs []string, dryRun bool) error {
	if strings.ContainsAny(exe, " \t\n\"'\\%$;") {
		return fmt.Errorf("install-units: this thinback is at %q, a path that ExecStart= would not read as one word: install it at %s", exe, systemd.ExecPath)
	}
	units, err := fs.ReadDir(systemd.Units, ".")
	if err != nil {
		return err
	}
	for _, u := range units {
		data, err := fs.ReadFile(systemd.Units, u.Name())
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(data), systemd.ExecPath, exe)
		path := filepath.Join(dir, u.Name())
		if dryRun {
			fmt.Fprintf(e.stdout, "would write %s\n", path)
			continue
		}
		if err := writeUnit(path, text); err != nil {
			return fmt.Errorf("install-units: %w", err)
		}
		printable.Sayf(e.stderr, "thinback: wrote %s", path)
	}
	cmds := [][]string{{"systemctl", "daemon-reload"}}
	for _, j := range jobs {
		cmds = append(cmds, []string{"systemctl", "enable", "--now", "thinback@" + j + ".timer"})
	}
	if len(jobs) == 0 || dryRun {
		if len(jobs) == 0 {
			cmds = append(cmds, []string{"systemctl", "enable", "--now", "thinback@JOB.timer"})
			fmt.Fprintln(e.stdout, "# then, for each JOB of the configuration file:")
		}
		for _, c := range cmds {
			fmt.Fprintln(e.stdout, strings.Join(c, " "))
		}
		return nil
	}
	for _, c := range cmds {
		cmd := exec.CommandContext(ctx, c[0], c[1:]...)
		cmd.Stdout, cmd.Stderr = e.stdout, e.stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("install-units: %s: %w", strings.Join(c, " "), err)
		}
	}
	return nil
}

// writeUnit replaces the file at path with text, atomically: an older
// unit of the same name stays whole until the new one is.
func writeUnit(path, text string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".thinback-unit-*")
	if err != nil {
		return err
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return errors.Join(err, os.Remove(f.Name()))
	}
	return catalog.SyncDir(filepath.Dir(path))
}
