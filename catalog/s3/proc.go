package s3

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// What tells a process of this machine from every other process, ever:
// a pid alone is reused, on one machine after a reboot or a wrap-around,
// and between pid namespaces (containers) of one boot.
var (
	bootIDFile = "/proc/sys/kernel/random/boot_id" // random at each boot
	procDir    = "/proc"
)

// bootID returns the kernel's boot ID, or "" if it cannot be read.
func bootID() string {
	b, err := os.ReadFile(bootIDFile)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// pidNamespace returns this process's pid namespace ("pid:[4026531836]"),
// in which the pids of its locks are numbered, or "" if unknown.
func pidNamespace() string {
	ns, err := os.Readlink(procDir + "/self/ns/pid")
	if err != nil {
		return ""
	}
	return ns
}

// errNoProcess: no process has that pid (in this pid namespace).
var errNoProcess = errors.New("no such process")

// procStat returns a process's start time (clock ticks after boot, field
// 22 of /proc/PID/stat) and state (field 3: R, S, D, Z for a zombie...).
// A pid that does not exist is errNoProcess.
func procStat(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(procDir + "/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return 0, 0, errNoProcess
	}
	if err != nil {
		return 0, 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces
	// and parentheses itself: the fields that follow start after the last
	// ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("%s/%d/stat: no command name", procDir, pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, 0, fmt.Errorf("%s/%d/stat: %d fields after the command name", procDir, pid, len(f))
	}
	// f[0] is field 3 (state), so field 22 is f[19].
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%s/%d/stat: start time: %w", procDir, pid, err)
	}
	return start, f[0][0], nil
}

// identify fills in o's boot ID, pid namespace and start time for the
// process o.PID of this machine, as far as they can be read.
func identify(o *Owner) {
	o.BootID, o.PIDNS = bootID(), pidNamespace()
	if start, _, err := procStat(o.PID); err == nil {
		o.Start = start
	}
}

// Gone reports whether the lock's holder is a process of this machine,
// in this boot and pid namespace, that provably no longer runs: no
// process has its pid, the one that has it is a zombie, or it started at
// another time (the pid was reused). why says which. A lock of another
// host, another boot, another pid namespace or written by a thinback
// that recorded none of these (or undecodable) is never Gone: a host
// name alone proves nothing, and only a stale lock may then be broken,
// on request.
func (o Owner) Gone() (gone bool, why string) {
	host, _ := os.Hostname()
	if o.Token == "" || o.PID <= 0 || o.Host != host || o.BootID == "" || o.PIDNS == "" || o.Start == 0 {
		return false, ""
	}
	if o.BootID != bootID() || o.PIDNS != pidNamespace() {
		return false, ""
	}
	start, state, err := procStat(o.PID)
	switch {
	case errors.Is(err, errNoProcess):
		return true, fmt.Sprintf("pid %d no longer runs", o.PID)
	case err != nil:
		return false, ""
	case state == 'Z' || state == 'X':
		return true, fmt.Sprintf("pid %d has exited", o.PID)
	case start != o.Start:
		return true, fmt.Sprintf("pid %d is now another process (started at tick %d, the holder at %d)", o.PID, start, o.Start)
	}
	return false, ""
}
