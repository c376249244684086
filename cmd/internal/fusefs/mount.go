package fusefs

import (
	"log"
	"os"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// Mount mounts m at dir, an absolute path to an empty directory, read-only
// and owned by the user who mounts, and serves it until it is unmounted
// (the server's Wait returns then). As root it mounts with mount(2)
// itself, else through fusermount3; its errors are go-fuse's as they are.
// debug, if set, logs every FUSE request.
func Mount(dir string, m *FS, debug *log.Logger) (*fuse.Server, error) {
	neg := entryTimeout
	opts := &fs.Options{
		EntryTimeout:    &entryTimeout,
		AttrTimeout:     &entryTimeout,
		NegativeTimeout: &neg,
		UID:             uint32(os.Getuid()),
		GID:             uint32(os.Getgid()),
		MountOptions: fuse.MountOptions{
			FsName: "thinback",
			Name:   "thinback",
			// Read-only in the superblock (the kernel refuses every write
			// with EROFS before it reaches us) and in the mount.
			Options:          []string{"ro", "noexec", "default_permissions"},
			DirectMount:      true, // as root: mount(2) itself, no fusermount needed
			DirectMountFlags: syscall.MS_RDONLY | syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC,
			// Requests of up to 1 MiB: a sequential reader then costs a
			// request per MiB, and the reader decodes ahead of it.
			MaxWrite:      1 << 20,
			DisableXAttrs: true,
			Debug:         debug != nil,
		},
	}
	if debug != nil {
		opts.Logger = debug
		opts.MountOptions.Logger = debug
	}
	return fs.Mount(dir, m.Root(), opts)
}
