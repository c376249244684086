package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
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
			"Write requests are refused. There is no authentication: anyone who can connect can\n" +
			"read every volume, so prefer a unix socket, or tcp:127.0.0.1:PORT. Runs until\n" +
			"interrupted (^C, SIGTERM).",
		Flags: []cli.Flag{storeFlag, quietFlag,
			&cli.StringFlag{Name: "nbd", Usage: "where to listen: unix:PATH or tcp:HOST:PORT (required)"},
		},
		Action: func(c *cli.Context) error {
			if _, err := args(c, 0, 0, "serve takes no arguments"); err != nil {
				return err
			}
			return runServe(c.Context, e, c.String("store"), c.String("nbd"), c.Bool("quiet"))
		},
	}
}

// listenNBD listens where --nbd says.
func listenNBD(addr string) (net.Listener, error) {
	switch {
	case strings.HasPrefix(addr, "unix:"):
		path := strings.TrimPrefix(addr, "unix:")
		if _, err := os.Lstat(path); err == nil {
			return nil, fmt.Errorf("%s exists: remove it (a socket left by a killed thinback serve?) or choose another path: %w", path, fs.ErrExist)
		}
		return net.Listen("unix", path)
	case strings.HasPrefix(addr, "tcp:"):
		return net.Listen("tcp", strings.TrimPrefix(addr, "tcp:"))
	}
	return nil, usageError{msg: fmt.Sprintf("serve: --nbd %q: give unix:PATH or tcp:HOST:PORT", addr)}
}

func runServe(ctx context.Context, e *env, store, addr string, quiet bool) error {
	if addr == "" {
		return usageError{msg: "serve: give where to listen with --nbd unix:PATH or --nbd tcp:127.0.0.1:PORT"}
	}
	s, err := openReadStore(store)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err := s.View(func(*catalog.Tx) error { return nil }); err != nil {
		return fmt.Errorf("serve: store %s: %w", store, err)
	}
	l, err := listenNBD(addr)
	if err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			return err
		}
		return fmt.Errorf("serve: %w", err)
	}
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && !tcp.IP.IsLoopback() {
		warn(e, "serving on %s, which is not a loopback address: anyone who can reach it can read every volume of the store", tcp)
	}
	logf := func(format string, args ...any) { fmt.Fprintf(e.stderr, "thinback: serve: "+format+"\n", args...) }
	if !quiet {
		fmt.Fprintf(e.stderr, "thinback: serving store %s over NBD at %s, read-only; ^C to stop\n", store, addr)
	}
	err = serveNBD(ctx, l, &storeExports{s: s, logf: logf}, logf)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	if !quiet {
		fmt.Fprintf(e.stderr, "thinback: stopped serving %s\n", addr)
	}
	return nil
}

// storeExports offers the snapshots of a store: VOLUME is the newest,
// VOLUME@SEQ (or @#SEQ, @ID, @ID-PREFIX) any; the empty name is the newest
// snapshot of a store's only volume.
type storeExports struct {
	s    *readStore
	logf func(string, ...any)
}

func (x *storeExports) List() ([]string, error) {
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
func (x *storeExports) pick(tx *catalog.Tx, name string) (catalog.Snapshot, error) {
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

func (x *storeExports) Open(name string) (nbdExport, error) {
	pit, err := x.s.openPointInTime(func(tx *catalog.Tx) (catalog.Snapshot, error) { return x.pick(tx, name) })
	if errors.Is(err, catalog.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		x.logf("opening export %q: %v", name, err)
		return nil, err
	}
	r, err := archive.OpenSnapshot(context.Background(), pit.inputs, archive.SnapshotOptions{Log: func(msg string) { x.logf("%s", msg) }})
	if err != nil {
		pit.Close()
		err = x.s.damaged(err)
		x.logf("opening export %q: %v", name, err)
		return nil, err
	}
	return &pointExport{SnapshotReader: r, pit: pit}, nil
}

// pointExport is a point in time served, with its files.
type pointExport struct {
	*archive.SnapshotReader
	pit *pointInTime
}

func (p *pointExport) Close() error {
	p.SnapshotReader.Close()
	return p.pit.Close()
}
