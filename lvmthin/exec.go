package lvmthin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// CommandStats count the external commands run on behalf of one context
// (see CountCommands) and the time they took, so that a run can say what
// its fixed cost in LVM is.
type CommandStats struct {
	LVM     int // lvs, lvcreate, lvchange, lvremove, lvrename
	DMSetup int // dmsetup status and messages (with THINBACK_DM=dmsetup)
	// DMIoctls count the device-mapper ioctls (status, table, messages)
	// asked in place of dmsetup commands.
	DMIoctls int
	Tools    int           // thin_delta, thin_dump
	LVMTime  time.Duration // wall time of the LVM and dmsetup commands and dm ioctls
	// ToolsTime is the wall time of the thin tools.
	ToolsTime time.Duration
	// ByProgram counts each program, e.g. {"lvs": 2, "dmsetup": 5}, and
	// the ioctls as "dm-ioctl".
	ByProgram map[string]int
}

type commandCounter struct {
	mu sync.Mutex
	s  CommandStats
}

type commandCounterKey struct{}

// CountCommands returns a context under which every command this package
// runs is counted, and a function returning the counts so far. Contexts
// derived from it count into the same total, including the ones the
// package uses to release a metadata snapshot or deactivate a volume after
// the caller's context is cancelled.
func CountCommands(ctx context.Context) (context.Context, func() CommandStats) {
	c := &commandCounter{s: CommandStats{ByProgram: map[string]int{}}}
	return context.WithValue(ctx, commandCounterKey{}, c), func() CommandStats {
		c.mu.Lock()
		defer c.mu.Unlock()
		s := c.s
		s.ByProgram = make(map[string]int, len(c.s.ByProgram))
		for k, v := range c.s.ByProgram {
			s.ByProgram[k] = v
		}
		return s
	}
}

// count records one command run under ctx.
func count(ctx context.Context, prog string, took time.Duration) {
	c, _ := ctx.Value(commandCounterKey{}).(*commandCounter)
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch prog {
	case programs.thinDelta, programs.thinDump:
		c.s.Tools++
		c.s.ToolsTime += took
	case programs.dmsetup:
		c.s.DMSetup++
		c.s.LVMTime += took
	case ioctlName:
		c.s.DMIoctls++
		c.s.LVMTime += took
	default:
		c.s.LVM++
		c.s.LVMTime += took
	}
	c.s.ByProgram[filepathBase(prog)]++
}

// filepathBase is a program's name without the directory tests put it in.
func filepathBase(prog string) string {
	if i := strings.LastIndexByte(prog, '/'); i >= 0 {
		return prog[i+1:]
	}
	return prog
}

// programs names the external tools. Tests point them at other binaries
// (fakes that print crafted output, or the real tools at another path).
var programs = struct {
	lvs, vgs, lvcreate, lvchange, lvremove, lvrename, dmsetup, thinDelta, thinDump string
}{
	lvs:       "lvs",
	vgs:       "vgs",
	lvcreate:  "lvcreate",
	lvchange:  "lvchange",
	lvremove:  "lvremove",
	lvrename:  "lvrename",
	dmsetup:   "dmsetup",
	thinDelta: "thin_delta",
	thinDump:  "thin_dump",
}

// maxStderr bounds what is kept of a command's standard error: enough for
// every message the tools print, not a flood.
const maxStderr = 8 << 10

// commandGrace is how long a cancelled command gets between SIGTERM and
// SIGKILL. LVM blocks signals around its metadata commits, so SIGTERM is
// safe and lets it finish the step it is in.
const commandGrace = 10 * time.Second

// run runs one external command; every command of this package goes through
// it. With consume == nil it returns the command's standard output; otherwise
// consume reads standard output as a stream while the command runs (and
// nothing is returned), so output of any size is handled in bounded memory.
// The stream comes through toolPipe and batchReader, which keep a tool that
// writes line by line from being slowed down by its reader.
//
// On failure the error is a *CommandError with the full command line, exit
// status and trimmed standard error, classified into a sentinel by
// classify. If consume fails, the command is stopped and consume's error is
// returned, unless the command itself failed (its error then says more).
//
// Commands run with LC_ALL=C, because classify reads their messages, with
// standard input closed, so no prompt can block, and in a process group of
// their own, so a Ctrl-C at the terminal reaches only thinback, which decides
// what to stop (it must still release a metadata snapshot with dmsetup).
func run(ctx context.Context, consume func(io.Reader) error, prog string, args ...string) ([]byte, error) {
	argv := append([]string{prog}, args...)
	started := time.Now()
	defer func() { count(ctx, prog, time.Since(started)) }()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C", "LVM_SUPPRESS_FD_WARNINGS=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Stop the whole process group: a tool run through a wrapper script
	// would otherwise leave children holding our pipe open.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = commandGrace
	stderr := &headBuffer{max: maxStderr}
	cmd.Stderr = stderr

	var stdout bytes.Buffer
	var pipe, pipeW *os.File
	if consume == nil {
		cmd.Stdout = &stdout
	} else {
		var err error
		if pipe, pipeW, err = toolPipe(); err != nil {
			return nil, &CommandError{Args: argv, ExitCode: -1, Err: err}
		}
		defer pipe.Close()
		cmd.Stdout = pipeW
	}
	err := cmd.Start()
	if pipeW != nil {
		// The command has its copy; ours would keep the pipe from ever
		// reaching its end.
		pipeW.Close()
	}
	if err != nil {
		return nil, &CommandError{Args: argv, ExitCode: -1, Err: err}
	}
	var consumeErr error
	if consume != nil {
		consumeErr = consume(&batchReader{r: pipe, sleep: time.Sleep})
		if consumeErr != nil {
			// Stop a producer we no longer listen to; it would block on
			// a full pipe otherwise.
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		}
		// Drain so the command can finish writing and exit normally.
		_, _ = io.Copy(io.Discard, pipe)
	}
	waitErr := cmd.Wait()
	if waitErr != nil && (consumeErr == nil || !isSignalExit(waitErr)) {
		ce := &CommandError{Args: argv, ExitCode: -1, Err: waitErr, Stderr: cleanStderr(stderr.String())}
		var ee *exec.ExitError
		if errors.As(waitErr, &ee) {
			ce.ExitCode = ee.ExitCode()
		}
		ce.kind = classify(argv, ce.Stderr)
		if ctxErr := ctx.Err(); ctxErr != nil && ce.kind == nil {
			// Stopped because the caller gave up: say that, not "signal:
			// terminated".
			return nil, fmt.Errorf("%s: stopped: %w", quoteArgs(argv), ctxErr)
		}
		return nil, ce
	}
	if consumeErr != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			// The output broke off because we stopped the command.
			return nil, fmt.Errorf("%s: stopped: %w", quoteArgs(argv), ctxErr)
		}
		return nil, consumeErr
	}
	return stdout.Bytes(), nil
}

// isSignalExit reports whether a command ended by a signal (as it does when
// run stops it after consume failed).
func isSignalExit(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled()
}

// cleanStderr trims a command's error output for an error message: the thin
// tools follow their one-line complaint with the whole usage text.
func cleanStderr(s string) string {
	if i := strings.Index(s, "\nUsage:"); i >= 0 {
		s = s[:i]
	} else if strings.HasPrefix(s, "Usage:") {
		s = ""
	}
	lines := strings.Split(strings.TrimSpace(s), "\n")
	kept := lines[:0]
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && l != "Command failed." {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "; ")
}

// headBuffer keeps the first max bytes written to it. The first lines of a
// tool's stderr carry the reason; what follows is repetition.
type headBuffer struct {
	buf bytes.Buffer
	max int
}

func (t *headBuffer) Write(p []byte) (int, error) {
	if room := t.max - t.buf.Len(); room > 0 {
		if len(p) > room {
			t.buf.Write(p[:room])
		} else {
			t.buf.Write(p)
		}
	}
	return len(p), nil
}

func (t *headBuffer) String() string { return t.buf.String() }
