package main

import (
	"context"
	"fmt"
	"slices"

	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3store"
	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/urfave/cli/v2"
)

// The options of a store on S3-compatible object storage (--store
// s3:https://HOST/BUCKET/PREFIX). Credentials are not among them: they
// come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN
// or the shared credentials file (AWS_PROFILE), as for every S3 tool, and
// never from a command line that ps shows.
var (
	cacheFlag = &cli.StringFlag{Name: "cache", TakesFile: true, EnvVars: []string{"THINBACK_CACHE"},
		Usage: "S3 stores: directory of the local caches of their catalogs (default $XDG_CACHE_HOME/thinback, or /var/cache/thinback for root)"}
	s3RegionFlag = &cli.StringFlag{Name: "s3-region", EnvVars: []string{"THINBACK_S3_REGION"},
		Usage: "S3 stores: the region (default $AWS_DEFAULT_REGION or $AWS_REGION, else asked of the server)"}
	s3LookupFlag = &cli.StringFlag{Name: "s3-bucket-lookup", EnvVars: []string{"THINBACK_S3_BUCKET_LOOKUP"}, Value: "auto",
		Usage: "S3 stores: how requests name the bucket: auto, dns (virtual-host style) or path"}
	caCertFlag = &cli.StringFlag{Name: "cacert", TakesFile: true, EnvVars: []string{"THINBACK_CACERT"},
		Usage: "S3 stores: a PEM file of certificates to trust besides the system's"}
	insecureTLSFlag = &cli.BoolFlag{Name: "insecure-tls",
		Usage: "S3 stores: do not verify the server's TLS certificate (only for tests: anyone in between can read and change the backups)"}
	breakStaleLockFlag = &cli.BoolFlag{Name: "break-stale-lock",
		Usage: "S3 stores: remove a volume's stale lock (not renewed within its time to live by the bucket's clock, or of an older thinback of this host that died); a lock of this host's killed run is removed without it, and a lock that is being renewed never"}
)

// s3Flags are added to every command that takes --store (see
// addStoreFlags).
var s3Flags = []cli.Flag{cacheFlag, s3RegionFlag, s3LookupFlag, caCertFlag, insecureTLSFlag, breakStaleLockFlag}

// s3Config is what the flags of a command say about an S3 store.
type s3Config struct {
	cache, region, lookup, caFile string
	insecureTLS, breakStale       bool
}

// s3Credentials are an S3 store's credentials when a config file says
// where they come from (run): keys read from the environment variables it
// names, or a shared credentials file and profile.
type s3Credentials struct {
	accessKey, secretKey string
	file, profile        string
}

// addStoreFlags gives cmd and its subcommands that take --store the
// options of S3 stores, read into e before the command runs: every
// command that opens a store opens an S3 one the same way.
func addStoreFlags(e *env, cmd *cli.Command) {
	for _, sub := range cmd.Subcommands {
		addStoreFlags(e, sub)
	}
	// copy names two stores (--from, --to), which take the same options.
	if !slices.Contains(cmd.Flags, cli.Flag(storeFlag)) && cmd.Name != "copy" {
		return
	}
	// A store may be on another host (ssh://): the command reaches it
	// as send --to reaches one.
	for _, f := range remoteFlags {
		if !slices.Contains(cmd.Flags, f) {
			cmd.Flags = append(cmd.Flags, f)
		}
	}
	// cat, mount and serve only read: no lock of theirs is ever stale.
	readOnly := cmd.Name == "cat" || cmd.Name == "mount" || cmd.Name == "serve"
	for _, f := range s3Flags {
		if !(readOnly && f == cli.Flag(breakStaleLockFlag)) {
			cmd.Flags = append(cmd.Flags, f)
		}
	}
	before := cmd.Before
	cmd.Before = func(c *cli.Context) error {
		e.ssh = remoteOptions(e, c)
		e.s3 = s3Config{
			cache: c.String(cacheFlag.Name), region: c.String(s3RegionFlag.Name), lookup: c.String(s3LookupFlag.Name),
			caFile: c.String(caCertFlag.Name), insecureTLS: c.Bool(insecureTLSFlag.Name), breakStale: c.Bool(breakStaleLockFlag.Name),
		}
		if before != nil {
			return before(c)
		}
		return nil
	}
}

// openS3Store opens the store at an s3: address; create makes it when the
// address holds none (init, backup, receive, catalog rebuild).
func openS3Store(ctx context.Context, e *env, addr string, create bool) (catalog.Repository, error) {
	loc, err := s3.ParseLocation(addr)
	if err != nil {
		return nil, usageError{msg: err.Error()}
	}
	lookup, err := s3.ParseLookup(e.s3.lookup)
	if err != nil {
		return nil, usageError{msg: fmt.Sprintf("--%s: %v", s3LookupFlag.Name, err)}
	}
	if loc.Insecure && e.s3.caFile != "" {
		return nil, usageError{msg: fmt.Sprintf("--%s is for https, and %s is plain http", caCertFlag.Name, addr)}
	}
	if e.s3.insecureTLS {
		warn(e, "--%s: the certificate of %s is not verified", insecureTLSFlag.Name, loc.Host)
	}
	opts := &s3store.Options{
		S3: s3.Options{
			Region: e.s3.region, Lookup: lookup, CAFile: e.s3.caFile, InsecureTLS: e.s3.insecureTLS,
		},
		Cache:           e.s3.cache,
		Create:          create,
		BreakStaleLocks: e.s3.breakStale,
		Notify:          func(msg string) { printable.Sayf(e.stderr, "thinback: %s", msg) },
	}
	if cr, ok := e.s3Creds[addr]; ok {
		opts.S3.AccessKey, opts.S3.SecretKey = cr.accessKey, cr.secretKey
		opts.S3.CredentialsFile, opts.S3.Profile = cr.file, cr.profile
	}
	st, err := s3store.Open(ctx, loc, opts)
	if err != nil {
		return nil, err
	}
	return st, nil
}
