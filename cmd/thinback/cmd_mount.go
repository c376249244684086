package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/fusefs"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func mountCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show every backed-up point in time of a store as a read-only disk image (FUSE)",
		ArgsUsage: "MOUNTPOINT",
		Description: "Mounts a read-only tree at MOUNTPOINT, an empty directory (not a symbolic link):\n\n" +
			"   MOUNTPOINT/<volume>/<seq>-<UTC time>.img   each snapshot of the volume\n" +
			"   MOUNTPOINT/<volume>/latest.img             the newest one (the same file)\n\n" +
			"<volume> is escaped as in the store (vg0/vm1 → vg0%2Fvm1). Each image is a file of the\n" +
			"volume's size whose contents are the volume at that point in time, read from the delta\n" +
			"files on demand and verified block by block; nothing is restored. Get files back with\n" +
			"   mount -o loop,ro MOUNTPOINT/vg0%2Fvm1/12-20261120T030004Z.img /mnt/x\n" +
			"(or losetup -P -r for a disk image with partitions). A damaged record is an I/O error\n" +
			"for its range only, with a line on standard error; never other data.\n\n" +
			"Runs in the foreground until MOUNTPOINT is unmounted (umount, fusermount3 -u) or it is\n" +
			"interrupted (^C, SIGTERM), which unmounts it; if something still uses it, it says what\n" +
			"to do and keeps serving. Everything is read-only: the mount, the files, the store.\n" +
			"The files of a point in time are held open while it is open, so a prune meanwhile\n" +
			"does not change what it reads (their disk space is freed when they are closed). On an\n" +
			"S3 store a prune deletes the objects: an image open across it reads what it has cached\n" +
			"and gets I/O errors for the rest, never other data; open it again to read the merged\n" +
			"file (a new mount sees the store as it is then). Each open image keeps up to\n" +
			"--record-cache MiB of decoded records in memory (default 64), and records are\n" +
			"fetched as reads need them (ranged GETs on S3), decoding ahead of sequential reads.\n" +
			"An encrypted store is unlocked once, before mounting, as restore unlocks it.",
		Flags: append([]cli.Flag{storeFlag, quietFlag,
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE request (to standard error)"},
			recordCacheFlag("of each open image"),
		}, keyFlags...),
		Action: func(c *cli.Context) error {
			a, err := args(c, 1, 1, "give the directory to mount the store on")
			if err != nil {
				return err
			}
			cache, err := recordCache(c)
			if err != nil {
				return err
			}
			return runMount(c.Context, e, mountOptions{store: c.String("store"), mountpoint: a[0], quiet: c.Bool("quiet"), debug: c.Bool("debug"), cache: cache, unlock: unlocker(e, c)})
		},
	}
}

type mountOptions struct {
	store, mountpoint string
	quiet, debug      bool
	cache             int64                                                           // bytes of decoded records of each open image (0: the default)
	unlock            func(context.Context, catalog.Repository) (*archive.Key, error) // the store's key (storeKey)
	// ready, if set, is called once the tree is mounted (tests).
	ready func()
}

func runMount(ctx context.Context, e *env, o mountOptions) error {
	s, err := openReadStore(ctx, e, o.store, o.unlock)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	if err := s.View(func(*catalog.Tx) error { return nil }); err != nil {
		return fmt.Errorf("mount: store %s: %w", o.store, err)
	}
	mp, err := checkMountpoint(o.mountpoint)
	if err != nil {
		return fmt.Errorf("mount: %w", err)
	}
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(e.stderr, "thinback: mount: "+format+"\n", args...)
	}
	m := fusefs.New(ctx, storeImages{store: s, log: logf, cache: o.cache}, logf)
	var debug *log.Logger
	if o.debug {
		debug = newStderrLogger(e)
	}
	t, err := mountTree(mp, o.mountpoint, m, debug, logf)
	if err != nil {
		return err
	}
	defer m.Close()
	if !o.quiet {
		fmt.Fprintf(e.stderr, "thinback: mounted store %s at %s, read-only; ^C or umount %s to stop\n", o.store, o.mountpoint, o.mountpoint)
	}
	if o.ready != nil {
		o.ready()
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	done := ctx.Done()
	for {
		select {
		case <-t.served:
			if !o.quiet {
				fmt.Fprintf(e.stderr, "thinback: unmounted %s\n", o.mountpoint)
			}
			return nil
		case <-done:
			done = nil
			t.unmount()
		case <-sigs:
			t.unmount()
		}
	}
}

// mountedTree is the tree thinback mount serves, to unmount when asked.
type mountedTree struct {
	path   string      // the mount point, with no symbolic link in it
	name   string      // the mount point as it was given
	root   unix.Stat_t // what was at path once mounted
	server *fuse.Server
	served chan struct{} // closed once the server stopped: unmounted
	log    func(format string, args ...any)
	tried  time.Time
}

// mountTree mounts m at path (name as it was given) and serves it until
// it is unmounted: t.served is closed then.
func mountTree(path, name string, m *fusefs.FS, debug *log.Logger, logf func(format string, args ...any)) (*mountedTree, error) {
	server, err := fusefs.Mount(path, m, debug)
	if err != nil {
		return nil, fmt.Errorf("mount: mounting %s: %w%s", name, err, mountAdvice(err, os.Geteuid()))
	}
	t := &mountedTree{path: path, name: name, server: server, served: make(chan struct{}), log: logf}
	go func() {
		server.Wait()
		close(t.served)
	}()
	// The root of the tree mounted, to know it again when unmounting.
	if err := unix.Lstat(path, &t.root); err != nil {
		server.Unmount()
		<-t.served
		return nil, fmt.Errorf("mount: %s after mounting: %w", name, err)
	}
	return t, nil
}

// unmount unmounts the tree if path still leads to it. While the tree is
// busy it says what to do, and the tree goes on serving.
func (t *mountedTree) unmount() {
	if time.Since(t.tried) < 500*time.Millisecond {
		return // the same ^C, seen both as the context and as a signal
	}
	t.tried = time.Now()
	// What is at path must still be the tree mounted there: the path
	// has no link left in it, and UMOUNT_NOFOLLOW keeps it so.
	var now unix.Stat_t
	if err := unix.Lstat(t.path, &now); err != nil || now.Dev != t.root.Dev || now.Ino != t.root.Ino {
		select {
		case <-t.served:
			return
		default:
		}
		t.log("not unmounting %s: it is no longer the directory this mount is on (it was replaced or moved); unmount the tree yourself (findmnt -t fuse.thinback)", t.name)
		return
	}
	// umount(2) first, as root: go-fuse's Unmount falls back to
	// fusermount on any error, which would hide EBUSY.
	err := unix.Unmount(t.path, unix.UMOUNT_NOFOLLOW)
	if errors.Is(err, syscall.EPERM) {
		err = t.server.Unmount() // not root: fusermount3 -u
	}
	if err != nil {
		select {
		case <-t.served:
			return
		default:
		}
		if errors.Is(err, syscall.EBUSY) {
			t.log("cannot unmount %s: it is busy; unmount what is mounted from its images (umount, losetup -d) and leave the directory, then press ^C again (or umount -l %s)", t.name, t.name)
			return
		}
		t.log("cannot unmount %s: %v", t.name, err)
	}
}

// checkMountpoint refuses a mountpoint that is missing, not a directory,
// not empty, already a mount point (busy), a dead FUSE mount or a
// symbolic link, and returns it as an absolute path with no symbolic
// link in it. A link is refused, and the links of the directories above
// are resolved here once, because the tree is unmounted by path when
// thinback mount is stopped: a link re-pointed meanwhile would make ^C
// unmount another file system.
func checkMountpoint(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if fi, err := os.Lstat(abs); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		to, _ := os.Readlink(abs)
		return "", usageError{msg: fmt.Sprintf("mount point %s is a symbolic link (to %s): give the directory itself, so that stopping thinback mount unmounts what it mounted and nothing else", dir, to), hint: "thinback mount"}
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	var st, parent syscall.Stat_t
	if err := syscall.Stat(abs, &st); err != nil {
		if errors.Is(err, syscall.ENOTCONN) {
			return "", fmt.Errorf("%s is a dead FUSE mount (of a killed thinback mount?): unmount it first (umount %s, or fusermount3 -u %s)", dir, dir, dir)
		}
		return "", fmt.Errorf("mount point %s: %w; create an empty directory to mount on", dir, err)
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		return "", fmt.Errorf("mount point %s is not a directory", dir)
	}
	if err := syscall.Stat(filepath.Dir(abs), &parent); err == nil && parent.Dev != st.Dev && abs != "/" {
		return "", fmt.Errorf("mount point %s is busy: something is mounted there already (see findmnt %s)", dir, dir)
	}
	d, err := os.Open(abs)
	if err != nil {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	names, err := d.Readdirnames(1)
	d.Close()
	if err != nil && err != io.EOF {
		return "", fmt.Errorf("mount point %s: %w", dir, err)
	}
	if len(names) > 0 {
		return "", fmt.Errorf("mount point %s is not empty (it holds %s): mount on an empty directory, so nothing is hidden", dir, names[0])
	}
	return abs, nil
}

// mountAdvice says what to do after a failed mount, by euid and the
// error. An *exec.Error is go-fuse's when it found no fusermount3 or
// fusermount to run (it looks in PATH, then in /bin, and returns the
// second look's error: not exec.ErrNotFound, but ENOENT, which alone
// would read as a missing /dev/fuse). As root the helper is only the
// fallback of a mount(2) that failed, whose error go-fuse drops.
func mountAdvice(err error, euid int) string {
	var helper *exec.Error
	switch {
	case errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES):
		return "\nmounting needs root, or fusermount3 (Debian's fuse3 package) for other users"
	case euid != 0 && errors.As(err, &helper):
		return "\nas a user other than root, mounting needs fusermount3 (Debian's fuse3 package)"
	case errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT):
		return "\nis FUSE available? (modprobe fuse; /dev/fuse must exist)"
	case euid != 0:
		// Other users mount through fusermount3, whose own message is
		// the error above.
		return "\nas a user other than root, mounting goes through fusermount3 (Debian's fuse3 package): see its message above"
	}
	return ""
}

// storeImages shows a store's catalog and points in time to the FUSE
// file system.
type storeImages struct {
	store *readStore
	log   func(format string, args ...any)
	cache int64 // SnapshotOptions.CacheSize
}

func (si storeImages) Volumes() ([]string, error) {
	var names []string
	err := si.store.View(func(tx *catalog.Tx) error {
		vols, err := tx.Volumes()
		if err != nil {
			return err
		}
		for _, v := range vols {
			if _, err := tx.Latest(v.Name); err == nil {
				names = append(names, v.Name)
			}
		}
		return nil
	})
	return names, err
}

func (si storeImages) Snapshots(volume string) ([]catalog.Snapshot, error) {
	var snaps []catalog.Snapshot
	err := si.store.View(func(tx *catalog.Tx) error {
		var err error
		snaps, err = tx.Snapshots(volume)
		return err
	})
	return snaps, err
}

// Open opens the snapshot's chain, looked up again by id, and indexes it.
func (si storeImages) Open(ctx context.Context, snap catalog.Snapshot) (fusefs.Image, error) {
	return si.store.OpenImage(ctx, snap.ID, archive.SnapshotOptions{CacheSize: si.cache, Log: func(msg string) { si.log("%s", msg) }})
}

func newStderrLogger(e *env) *log.Logger {
	return log.New(e.stderr, "thinback: fuse: ", log.Lmicroseconds)
}
