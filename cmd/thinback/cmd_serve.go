package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/urfave/cli/v2"
)

func serveCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "serve",
		Usage:     "export every backed-up point in time of a store as a read-only NBD device",
		ArgsUsage: " ",
		Description: "Serves the points in time of thinback mount over the NBD protocol, read-only, for\n" +
			"nbd-client and QEMU. Exports: VOLUME (its newest snapshot) and VOLUME@SEQ (or\n" +
			"VOLUME@ID); nbd-client -l lists them. For example:\n\n" +
			"   thinback serve --store /backup --nbd unix:/run/thinback.sock &\n" +
			"   nbd-client -u -N vg0/vm1@12 /run/thinback.sock /dev/nbd0 -readonly\n" +
			"   mount -o ro /dev/nbd0 /mnt/x            (nbd-client -d /dev/nbd0 when done)\n" +
			"   qemu-img convert nbd+unix:///vg0/vm1@12?socket=/run/thinback.sock out.qcow2\n\n" +
			"Every block is verified as it is read; a damaged record is an I/O error for its range.\n" +
			"Write requests are refused. Without --tls-client-ca there is no authentication:\n" +
			"anyone who can connect can read every volume. The unix socket is made mode 0600\n" +
			"(only its owner, the user running serve, can connect), whatever the umask; with tcp:,\n" +
			"prefer tcp:127.0.0.1:PORT (PORT 0 picks a free port, which is printed), or TLS: with\n" +
			"--tls-cert and --tls-key every client must start TLS (NBD's STARTTLS; nbds:// URLs),\n" +
			"and with --tls-client-ca it must show a certificate that CA signed.\n\n" +
			"A client has --handshake-timeout to choose its export; at most --max-connections are\n" +
			"served at once (more are closed at once). All clients share one read budget (64 MiB of\n" +
			"reads in flight) and one cache of decoded records (--record-cache, 64 MiB), and each point in time is\n" +
			"indexed once however many clients read it. Runs until interrupted (^C, SIGTERM).\n" +
			"An encrypted store is unlocked once, before listening, as restore unlocks it; its\n" +
			"clients then read decrypted volumes, so the transport's protection above matters.",
		Flags: append([]cli.Flag{storeFlag, quietFlag,
			&cli.StringFlag{Name: "nbd", Usage: "where to listen: unix:PATH or tcp:HOST:PORT (required)"},
			&cli.IntFlag{Name: "max-connections", Value: nbd.DefaultConns, Usage: "serve at most `N` connections at once"},
			&cli.DurationFlag{Name: "handshake-timeout", Value: nbd.DefaultHandshakeTimeout, Usage: "close a connection that has not chosen its export within this `TIME`"},
			&cli.StringFlag{Name: "tls-cert", TakesFile: true, Usage: "require TLS, with this server certificate (PEM `FILE`, with --tls-key)"},
			&cli.StringFlag{Name: "tls-key", TakesFile: true, Usage: "the private key of --tls-cert (PEM `FILE`)"},
			&cli.StringFlag{Name: "tls-client-ca", TakesFile: true, Usage: "require client certificates signed by this CA (PEM `FILE`; needs --tls-cert)"},
			recordCacheFlag("shared by every client"),
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "serve takes no arguments"); err != nil {
				return err
			}
			if c.Int("max-connections") < 1 || c.Duration("handshake-timeout") <= 0 {
				return usageError{msg: "serve: --max-connections and --handshake-timeout must be positive"}
			}
			tlsConf, err := serveTLS(c.String("tls-cert"), c.String("tls-key"), c.String("tls-client-ca"))
			if err != nil {
				return err
			}
			cache, err := recordCache(c)
			if err != nil {
				return err
			}
			return runServe(c.Context, e, serveOptions{store: c.String("store"), addr: c.String("nbd"), quiet: c.Bool("quiet"), cache: cache, unlock: unlocker(e, c),
				nbd: nbd.Options{MaxConns: c.Int("max-connections"), HandshakeTimeout: c.Duration("handshake-timeout"), TLS: tlsConf}})
		},
	}
}

// serveTLS is the TLS configuration the flags ask for: nil for none.
func serveTLS(cert, key, clientCA string) (*tls.Config, error) {
	if cert == "" && key == "" && clientCA == "" {
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, usageError{msg: "serve: give --tls-cert and --tls-key together (--tls-client-ca needs them too)"}
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("serve: --tls-cert %s, --tls-key %s: %w", cert, key, err)
	}
	conf := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("serve: --tls-client-ca: %w", err)
		}
		conf.ClientCAs = x509.NewCertPool()
		if !conf.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("serve: --tls-client-ca %s holds no PEM certificate", clientCA)
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

type serveOptions struct {
	store, addr string
	quiet       bool
	cache       int64 // bytes of the cache of decoded records (0: the default)
	nbd         nbd.Options
	unlock      func(context.Context, catalog.Repository) (*archive.Key, error) // the store's key (storeKey)
	// started, if set, is called with the server, its exports and their
	// cache once it listens (tests).
	started func(*nbd.Server, *nbd.Shared, *archive.SnapshotCache)
}

// listenNBD listens where --nbd says. A unix socket is made mode 0600
// whatever the umask (the umask is narrowed while it is bound, so there
// is no moment when it is open to others): the socket is the only access
// control.
func listenNBD(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s exists: remove it (a socket left by a killed thinback serve?) or choose another path: %w", path, fs.ErrExist)
		}
		old := syscall.Umask(0o177)
		l, err := net.Listen("unix", path)
		syscall.Umask(old)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(path, 0o600); err != nil {
			l.Close()
			return nil, err
		}
		return l, nil
	case strings.HasPrefix(addr, "tcp:"):
		return net.Listen("tcp", strings.TrimPrefix(addr, "tcp:"))
	}
	return nil, usageError{msg: fmt.Sprintf("serve: --nbd %q: give unix:PATH or tcp:HOST:PORT", addr)}
}

func runServe(ctx context.Context, e *env, o serveOptions) error {
	if o.addr == "" {
		return usageError{msg: "serve: give where to listen with --nbd unix:PATH or --nbd tcp:127.0.0.1:PORT"}
	}
	s, err := openReadStore(ctx, e, o.store, o.unlock)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := s.View(func(*catalog.Tx) error { return nil }); err != nil {
		return fmt.Errorf("serve: store %s: %w", o.store, err)
	}
	l, err := listenNBD(o.addr)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		return fmt.Errorf("serve: %w", err)
	}
	where := o.addr
	if tcp, ok := l.Addr().(*net.TCPAddr); ok {
		where = "tcp:" + tcp.String() // the port chosen, for tcp:HOST:0
		if !tcp.IP.IsLoopback() && (o.nbd.TLS == nil || o.nbd.TLS.ClientCAs == nil) {
			warn(e, "serving on %s, which is not a loopback address, without --tls-client-ca: anyone who can reach it can read every volume of the store", tcp)
		}
	}
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(e.stderr, "thinback: serve: "+format+"\n", args...)
	}
	cache := archive.NewSnapshotCache(o.cache)
	defer cache.Close()
	exports := nbd.NewShared(&storePoints{s: s, logf: logf, cache: cache}, logf)
	defer exports.Close()
	o.nbd.Logf = logf
	srv := nbd.NewServer(exports, o.nbd)
	if !o.quiet {
		tlsSays := ""
		if o.nbd.TLS != nil {
			tlsSays = ", TLS required"
		}
		fmt.Fprintf(e.stderr, "thinback: serving store %s over NBD at %s, read-only%s; ^C to stop\n", o.store, where, tlsSays)
	}
	if o.started != nil {
		o.started(srv, exports, cache)
	}
	err = srv.Serve(ctx, l)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !o.quiet {
		fmt.Fprintf(e.stderr, "thinback: stopped serving %s\n", where)
	}
	return nil
}

// storePoints are the snapshots of a store as NBD exports: VOLUME is the
// newest, VOLUME@SEQ (or @#SEQ, @ID, @ID-PREFIX) any; the empty name is
// the newest snapshot of a store's only volume. Every export reads its
// decoded records through one cache.
type storePoints struct {
	s     *readStore
	logf  func(string, ...any)
	cache *archive.SnapshotCache
}

// chainKey names a point in time by its snapshot and the files it is read
// from: a prune that rewrites a file of the chain makes it another key.
func chainKey(chain []catalog.Snapshot) string {
	var b strings.Builder
	for _, sn := range chain {
		b.WriteString(sn.ID)
		b.WriteByte(0)
		b.WriteString(sn.File)
		b.WriteByte(0)
	}
	return b.String()
}

func (x *storePoints) List() ([]string, error) {
	var names []string
	err := x.s.View(func(tx *catalog.Tx) error {
		snaps, err := tx.AllSnapshots()
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, sn := range snaps {
			names = append(names, fmt.Sprintf("%s@%d", sn.Volume, sn.Seq))
			if !seen[sn.Volume] {
				seen[sn.Volume] = true
				names = append(names, sn.Volume)
			}
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

// pick resolves an export name to a snapshot; ErrNotFound if none.
func (x *storePoints) pick(tx *catalog.Tx, name string) (catalog.Snapshot, error) {
	if name == "" {
		vols, err := tx.Volumes()
		if err != nil {
			return catalog.Snapshot{}, err
		}
		if len(vols) != 1 {
			return catalog.Snapshot{}, fmt.Errorf("the store has %d volumes: name one (VOLUME or VOLUME@SEQ): %w", len(vols), catalog.ErrNotFound)
		}
		name = vols[0].Name
	}
	if _, err := tx.Volume(name); err == nil {
		return tx.Latest(name)
	}
	i := strings.LastIndexByte(name, '@')
	if i < 0 {
		return catalog.Snapshot{}, fmt.Errorf("no volume %q: %w", name, catalog.ErrNotFound)
	}
	return findSnapshot(tx, name[:i], name[i+1:])
}

// Find resolves name to its snapshot and the chain of files it is read
// from.
func (x *storePoints) Find(name string) (string, func() (nbd.Export, error), error) {
	var snap catalog.Snapshot
	var key string
	err := x.s.View(func(tx *catalog.Tx) error {
		var err error
		if snap, err = x.pick(tx, name); err != nil {
			return err
		}
		chain, err := tx.Chain(snap.ID)
		key = chainKey(chain)
		return err
	})
	if errors.Is(err, catalog.ErrNotFound) {
		return "", nil, nil
	}
	if err != nil {
		return "", nil, err
	}
	return key, func() (nbd.Export, error) { return x.open(snap.ID) }, nil
}

// open opens and indexes the point in time of snapshot id.
func (x *storePoints) open(id string) (nbd.Export, error) {
	return x.s.OpenImage(context.Background(), id, archive.SnapshotOptions{Cache: x.cache, Log: func(msg string) { x.logf("%s", msg) }})
}
