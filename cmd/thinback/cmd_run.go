package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/thinback/thinback/cmd/internal/config"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/urfave/cli/v2"
)

// configFlag names the configuration file of run and config check.
var configFlag = &cli.StringFlag{Name: "config", EnvVars: []string{"THINBACK_CONFIG"}, Value: config.DefaultPath,
	Usage: "the configuration file (or $THINBACK_CONFIG)"}

func runCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run jobs of the configuration file: their backups, then their copies (the systemd timer's command)",
		ArgsUsage: "JOB... (or --all)",
		Description: "Each job of the configuration file (" + config.DefaultPath + ", or --config) becomes\n" +
			"command lines of thinback's own commands, run one after the other in this process: a\n" +
			"backup of its volumes into its store with its retention, hooks, snapshot size and level,\n" +
			"then a copy to each store of its copy_to (whatever the backup's result: copy brings what\n" +
			"the store holds). An option means the same in the file as on the command line, and the\n" +
			"options of run (--store, --keep-*, --metrics-file, --json, --quiet) override the job's.\n" +
			"--dry-run prints the command lines and runs nothing.\n\n" +
			"The exit status is the worst of the commands' (130 if interrupted, else the highest);\n" +
			"a failed job never stops the others.",
		Flags: append([]cli.Flag{
			configFlag,
			&cli.BoolFlag{Name: "all", Usage: "run every job of the file, in its order"},
			&cli.StringFlag{Name: "store", Usage: "back up into this store instead of the job's: a [store.NAME] of the file, or an address"},
			&cli.StringFlag{Name: "metrics-file", Usage: "write metrics into this file instead of the job's metrics_file"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "print the command lines a job runs; run nothing"},
			jsonFlag, quietFlag,
		}, keepFlags()...),
		Action: func(c *cli.Context) error {
			names := c.Args().Slice()
			switch {
			case c.Bool("all") && len(names) > 0:
				return usageError{msg: "run: give JOB names or --all, not both"}
			case !c.Bool("all") && len(names) == 0:
				return usageError{msg: "run: give JOB names or --all"}
			}
			cfg, err := config.Load(c.String(configFlag.Name))
			if err != nil {
				return configError(e, c, err)
			}
			jobs, err := pickJobs(cfg, names, c.Bool("all"))
			if err != nil {
				return err
			}
			o, err := runOverrides(c, cfg)
			if err != nil {
				return err
			}
			return runJobs(c.Context, e, jobs, o, c.Bool("dry-run"))
		},
	}
}

// configError says how to get at a configuration file that is not
// there, and prints each problem of a bad one on a line of its own.
func configError(e *env, c *cli.Context, err error) error {
	if errors.Is(err, os.ErrNotExist) && !c.IsSet(configFlag.Name) {
		return fmt.Errorf("%w: write one (see thinback run --help) or give --config FILE", err)
	}
	var errs interface{ Unwrap() []error }
	if errors.As(err, &errs) {
		for _, err := range errs.Unwrap() {
			printable.Sayf(e.stderr, "thinback: %v", err)
		}
		return reportedError{err}
	}
	return err
}

func pickJobs(cfg *config.Config, names []string, all bool) ([]*config.Job, error) {
	if all {
		return cfg.Jobs, nil
	}
	var jobs []*config.Job
	for _, n := range names {
		j := cfg.Job(n)
		if j == nil {
			var have []string
			for _, j := range cfg.Jobs {
				have = append(have, j.Name)
			}
			return nil, usageError{msg: fmt.Sprintf("run: %s has no job %q: its jobs are %s", cfg.Path, n, strings.Join(have, ", "))}
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// overrides are the options of run that replace a job's.
type overrides struct {
	store       *config.Store // nil: the job's
	keep        map[string]int
	metricsFile string
	json, quiet bool
}

func runOverrides(c *cli.Context, cfg *config.Config) (overrides, error) {
	o := overrides{keep: map[string]int{}, metricsFile: c.String("metrics-file"), json: c.Bool("json"), quiet: c.Bool("quiet")}
	if _, err := retentionFrom(c); err != nil {
		return o, err
	}
	for _, f := range keepFlags() {
		if n := f.Names()[0]; c.IsSet(n) {
			o.keep[strings.TrimPrefix(n, "keep-")] = c.Int(n)
		}
	}
	if s := c.String("store"); s != "" {
		o.store = cfg.Stores[s]
		if o.store == nil {
			o.store = &config.Store{Name: s, Location: s}
		}
	}
	return o, nil
}

// step is one command line of a job, with the credentials of the S3
// stores it names (never on the command line).
type step struct {
	job   string
	args  []string
	creds map[string]s3Credentials
}

// jobSteps turns a job into the command lines that run it. Only with
// creds are the credentials read from the environment variables a store
// names (config check reports those missing itself).
func jobSteps(j *config.Job, o overrides, creds bool) ([]step, error) {
	st := j.Store
	if o.store != nil {
		st = o.store
	}
	metrics := j.MetricsFile
	if o.metricsFile != "" {
		metrics = o.metricsFile
	}
	common := func(a []string) []string {
		if metrics != "" {
			a = append(a, "--metrics-file", metrics, "--metrics-job", j.Name)
		}
		if o.json {
			a = append(a, "--json")
		}
		if o.quiet {
			a = append(a, "--quiet")
		}
		return a
	}
	sc := map[string]s3Credentials{}
	s3args, err := s3Args(sc, st, creds)
	if err != nil {
		return nil, fmt.Errorf("job %q: %w", j.Name, err)
	}
	backup := []string{"backup", "--store", st.Location}
	backup = append(backup, s3args...)
	backup = append(backup, keyArgs(st, "")...)
	backup = append(backup, keepArgs("keep", j.Keep, o.keep)...)
	for _, f := range []struct{ flag, v string }{{"pre", j.Pre}, {"post", j.Post}, {"snapshot-size", j.SnapshotSize}} {
		if f.v != "" {
			backup = append(backup, "--"+f.flag, f.v)
		}
	}
	if j.Level != 0 {
		backup = append(backup, "--level", strconv.Itoa(j.Level))
	}
	backup = common(backup)
	var steps []step
	var volumes []string // the volumes' names in the store, for copy
	switch {
	case len(j.Files) > 0:
		// backup takes one image at a time.
		for _, f := range j.Files {
			steps = append(steps, step{args: append(append([]string{}, backup...), "--file", f), creds: sc})
			volumes = append(volumes, filepath.Base(f))
		}
	case j.All != "":
		a := append(append([]string{}, backup...), "--all", j.All)
		for _, x := range j.Exclude {
			a = append(a, "--exclude", x)
		}
		steps = append(steps, step{args: a, creds: sc})
		// Copy everything the store holds: which LVs --all found is
		// known only once it ran.
	default:
		steps = append(steps, step{args: append(append([]string{}, backup...), j.Volumes...), creds: sc})
		volumes = j.Volumes
	}
	for _, to := range j.CopyTo {
		cc := map[string]s3Credentials{}
		from, err := s3Args(cc, st, creds)
		if err != nil {
			return nil, fmt.Errorf("job %q: %w", j.Name, err)
		}
		dst, err := s3Args(cc, to, creds)
		if err != nil {
			return nil, fmt.Errorf("job %q: %w", j.Name, err)
		}
		// copy has one set of S3 options for both stores.
		if len(from) > 0 && len(dst) > 0 && strings.Join(from, " ") != strings.Join(dst, " ") {
			return nil, fmt.Errorf("job %q: copy from store %q to store %q: their S3 options (region, bucket_lookup, cacert, cache) differ, and one copy takes one set", j.Name, st.Name, to.Name)
		}
		a := []string{"copy", "--from", st.Location, "--to", to.Location}
		a = append(a, from...)
		if len(from) == 0 {
			a = append(a, dst...)
		}
		a = append(a, keyArgs(st, "")...)
		a = append(a, keyArgs(to, "to-")...)
		a = append(a, keepArgs("keep", j.CopyKeep, nil)...)
		a = common(a)
		steps = append(steps, step{args: append(a, volumes...), creds: cc})
	}
	return steps, nil
}

// s3Args are the options of an S3 store; with read, its credentials are
// put into creds.
func s3Args(creds map[string]s3Credentials, st *config.Store, read bool) ([]string, error) {
	if !st.IsS3() {
		return nil, nil
	}
	var a []string
	for _, f := range []struct{ flag, v string }{
		{s3RegionFlag.Name, st.Region}, {s3LookupFlag.Name, st.BucketLookup}, {caCertFlag.Name, st.CACert}, {cacheFlag.Name, st.Cache},
	} {
		if f.v != "" {
			a = append(a, "--"+f.flag, f.v)
		}
	}
	if !read {
		return a, nil
	}
	cr := s3Credentials{file: st.CredentialsFile, profile: st.Profile}
	if st.AccessKeyEnv != "" {
		cr.accessKey, cr.secretKey = os.Getenv(st.AccessKeyEnv), os.Getenv(st.SecretKeyEnv)
		if cr.accessKey == "" || cr.secretKey == "" {
			return nil, fmt.Errorf("store %q: $%s and $%s must both be set (its access_key_env and secret_key_env)", st.Name, st.AccessKeyEnv, st.SecretKeyEnv)
		}
	}
	if cr != (s3Credentials{}) {
		creds[st.Location] = cr
	}
	return a, nil
}

// keyArgs are the options that unlock an encrypted store's key; prefix
// "to-" names copy's destination's.
func keyArgs(st *config.Store, prefix string) []string {
	switch {
	case st.KeyFile != "":
		return []string{"--" + prefix + "key-file", st.KeyFile}
	case st.PasswordFile != "":
		return []string{"--" + prefix + "password-file", st.PasswordFile}
	case st.PasswordCommand != "":
		return []string{"--" + prefix + "password-command", st.PasswordCommand}
	}
	return nil
}

// keepArgs are the --keep-* options of r, each replaced by over's.
func keepArgs(prefix string, r config.Retention, over map[string]int) []string {
	given := map[string]int{}
	for _, rule := range r.Rules() {
		given[rule.Name] = rule.N
	}
	for k, n := range over {
		given[k] = n
	}
	var a []string
	for _, f := range keepFlags() {
		name := strings.TrimPrefix(f.Names()[0], "keep-")
		if n, ok := given[name]; ok {
			a = append(a, fmt.Sprintf("--%s-%s", prefix, name), strconv.Itoa(n))
		}
	}
	return a
}

// runJobs runs each job's command lines through thinback's own commands,
// in this process: the worst exit status of them all is run's.
func runJobs(ctx context.Context, e *env, jobs []*config.Job, o overrides, dryRun bool) error {
	var codes []int
	var failed []string
	for _, j := range jobs {
		steps, err := jobSteps(j, o, !dryRun)
		if err != nil {
			if !dryRun {
				printable.Sayf(e.stderr, "thinback: run %s: %v", j.Name, err)
			}
			codes = append(codes, exitUsage)
			failed = append(failed, fmt.Sprintf("%s (exit %d)", j.Name, exitUsage))
			if dryRun {
				return usageError{msg: fmt.Sprintf("run: %v", err)}
			}
			continue
		}
		var jc []int
		for _, s := range steps {
			if dryRun {
				fmt.Fprintln(e.stdout, commandLine(s.args))
				continue
			}
			if ctx.Err() != nil {
				jc = append(jc, exitInterrupted)
				break
			}
			s.job = j.Name
			jc = append(jc, runStep(ctx, e, s))
		}
		code := worstExit(jc)
		codes = append(codes, code)
		if code != exitOK {
			failed = append(failed, fmt.Sprintf("%s (exit %d)", j.Name, code))
		}
		if code == exitInterrupted {
			break
		}
	}
	code := worstExit(codes)
	if code == exitOK {
		return nil
	}
	printable.Sayf(e.stderr, "thinback: run: %d of %d jobs failed: %s", len(failed), len(jobs), strings.Join(failed, ", "))
	return multiError{code: code, failed: len(failed), total: len(jobs)}
}

// runStep runs one command line in this process, as Main runs thinback's,
// printing its error as Main does, and returns its exit status.
func runStep(ctx context.Context, parent *env, s step) int {
	e := &env{stdin: parent.stdin, stdout: parent.stdout, stderr: parent.stderr, tty: parent.tty, s3Creds: s.creds, job: s.job}
	app := newAppEnv(e)
	err := app.RunContext(ctx, append([]string{"thinback"}, s.args...))
	if err != nil && !errors.As(err, new(reportedError)) {
		msg := err.Error()
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			msg = "interrupted: " + strings.TrimSuffix(msg, ": context canceled")
		}
		fmt.Fprintf(e.stderr, "thinback: %s\n", printable.Message(msg))
	}
	return exitCode(err)
}

// commandLine is args as a shell reads them back.
func commandLine(args []string) string {
	q := []string{"thinback"}
	for _, a := range args {
		if a == "" || strings.IndexFunc(a, func(r rune) bool {
			return !(r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./=:@,+%", r)))
		}) >= 0 {
			a = remote.Quote(a)
		}
		q = append(q, a)
	}
	return strings.Join(q, " ")
}
