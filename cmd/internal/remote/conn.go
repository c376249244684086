package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/thinback/thinback/cmd/internal/printable"
)

var (
	// ErrNoRemote is a host without thinback at the path run there: the
	// remote shell did not find it (exit 127) or could not run it (126).
	ErrNoRemote = errors.New("no thinback on the other host")
	// ErrHostKey is ssh refusing the other host's key.
	ErrHostKey = errors.New("ssh refused the host key")
	// ErrSSH is ssh failing otherwise: the host not reached, the login
	// refused, the connection lost (ssh's exit status 255), or no ssh.
	ErrSSH = errors.New("ssh failed")
)

// Options say how Dial reaches the other host.
type Options struct {
	Rsh            string    // the ssh command, split as a shell would (no shell run): default "ssh"
	RemoteThinback string    // the thinback to run there: default "thinback" (locally: this executable)
	Stderr         io.Writer // where the agent's stderr goes (line by line, prefixed "HOST: "); nil: nowhere
}

// tailLines is how many of the agent's last stderr lines an error quotes.
const tailLines = 5

// Conn is the agent's stdin/stdout after the handshake: a raw byte
// stream; users put their own encoding on it.
//
// On the client's side (Dial) it also owns the process: ssh, or the local
// agent. The context given to Dial bounds its life: when it is cancelled
// the process is killed and Read and Write fail with the context's error.
type Conn struct {
	r    io.Reader
	w    io.Writer
	peer Hello

	// The client's side only.
	ctx     context.Context
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	dest    Dest
	shown   string // the command run, for messages
	binary  string // the thinback run, for messages
	tail    *tail
	stderrs sync.WaitGroup
	group   bool // the process leads a process group of its own
	once    sync.Once
	waitErr error
}

// Peer is the other end's Hello: on the client's side the agent's, on the
// agent's side the client's (with the service and the arguments it asked
// for).
func (c *Conn) Peer() Hello { return c.peer }

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if err != nil && c.ctx != nil && c.ctx.Err() != nil {
		err = c.ctx.Err()
	}
	return n, err
}

func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	if err != nil && c.ctx != nil && c.ctx.Err() != nil {
		err = c.ctx.Err()
	}
	return n, err
}

// CloseWrite closes the stream towards the other end, which reads EOF.
func (c *Conn) CloseWrite() error {
	if c.stdin != nil {
		return c.stdin.Close()
	}
	if cw, ok := c.w.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	if cl, ok := c.w.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// Kill ends the process at once (ssh, and what it started, when it runs
// in a process group of its own), for an interruption. Close still
// collects it.
func (c *Conn) Kill() error {
	if c.cmd == nil || c.cmd.Process == nil {
		return nil
	}
	if c.group {
		if err := syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return err
		}
		return nil
	}
	if err := c.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	return nil
}

// Close closes the stream towards the agent, reads and discards what the
// agent still writes, and waits for the process. An agent (or ssh) that
// exits with a non-zero status, or is killed, is an error naming the host,
// the command and the last lines the agent wrote to stderr.
func (c *Conn) Close() error {
	if c.cmd == nil {
		return c.CloseWrite()
	}
	c.once.Do(func() {
		c.stdin.Close()
		io.Copy(io.Discard, c.r)
		c.stderrs.Wait()
		c.waitErr = c.exitError(c.cmd.Wait(), true)
	})
	return c.waitErr
}

// Dial starts `thinback agent SERVICE ARGS...` on d's host and does the
// handshake. Over ssh, the command is o.Rsh's words, -T (the stream is
// binary: no terminal), -p PORT when d has a port, [USER@]HOST, and the
// remote command as one argument with every word quoted for the remote
// user's POSIX shell; arguments with control characters are refused.
// On this host (d.Host empty) the agent is o.RemoteThinback, or this
// executable, run directly.
//
// Errors name the host and the command run, and say what to do:
// ErrNoRemote (no thinback there), ErrVersion (an incompatible one),
// ErrHostKey (ssh refused the host key), ErrSSH (ssh failed otherwise),
// ErrProtocol (something else answered).
func Dial(ctx context.Context, d Dest, o Options, service string, args ...string) (*Conn, error) {
	agent := append([]string{"agent", service}, args...)
	var argv []string
	c := &Conn{}
	if d.Remote() {
		rsh, err := SplitCommand(o.Rsh)
		if err != nil {
			return nil, fmt.Errorf("--rsh: %v: %w", err, ErrArg)
		}
		if len(rsh) == 0 {
			rsh = []string{"ssh"}
		}
		if strings.HasPrefix(d.Host, "-") || strings.HasPrefix(d.User, "-") {
			return nil, fmt.Errorf("%w: host %q or user %q begins with -", ErrDest, d.Host, d.User)
		}
		thinback := o.RemoteThinback
		if thinback == "" {
			thinback = "thinback"
		}
		remoteCmd, err := remoteCommand(append([]string{thinback}, agent...))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.Where(), err)
		}
		argv = append(argv, rsh...)
		argv = append(argv, "-T")
		if d.Port != 0 {
			argv = append(argv, "-p", strconv.Itoa(d.Port))
		}
		argv = append(argv, d.Where(), remoteCmd)
		c.binary = thinback
	} else {
		thinback := o.RemoteThinback
		if thinback == "" {
			exe, err := os.Executable()
			if err != nil {
				return nil, fmt.Errorf("finding this thinback to run its agent: %w (give its path with --remote-thinback)", err)
			}
			thinback = exe
		}
		for _, a := range agent {
			if err := checkWord(a); err != nil {
				return nil, err
			}
		}
		argv = append([]string{thinback}, agent...)
		c.binary = thinback
	}
	c.ctx, c.dest, c.tail = ctx, d, &tail{}
	if d.Remote() {
		c.shown = showCommand(argv[:len(argv)-1]) + " " + argv[len(argv)-1]
	} else {
		c.shown = showCommand(argv)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// In a process group of its own, Kill reaches what ssh starts too
	// (a ProxyCommand). Not when there is a terminal: ssh asks for a
	// password or passphrase there, which a background process group
	// cannot read; it then gets the terminal's SIGINT as thinback does.
	c.group = !haveTerminal()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: c.group}
	cmd.Cancel = c.Kill
	cmd.WaitDelay = 10 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	c.cmd, c.stdin = cmd, stdin
	if err := cmd.Start(); err != nil {
		if !d.Remote() {
			return nil, fmt.Errorf("this host has no thinback at %s (ran: %s): %v: give its path with --remote-thinback: %w", argv[0], c.shown, err, ErrNoRemote)
		}
		return nil, fmt.Errorf("running %s: %v: install OpenSSH's client or give the ssh command with --rsh: %w", argv[0], err, ErrSSH)
	}
	prefix := d.Host
	if prefix == "" {
		prefix = "agent"
	}
	c.stderrs.Add(1)
	go func() {
		defer c.stderrs.Done()
		c.tail.copy(o.Stderr, prefix+": ", stderr)
	}()
	br := bufio.NewReader(stdout)
	c.r, c.w = br, stdin
	// The agent answers after it has read the client's hello; the hello
	// is small enough for any pipe.
	if err := writeHello(stdin, clientGreeting, ourHello(service, args)); err != nil {
		return nil, c.failed(fmt.Errorf("sending the handshake: %w", err))
	}
	h, err := readHello(br, agentGreeting)
	if err != nil {
		return nil, c.failed(err)
	}
	c.peer = h
	if h.Error != "" {
		err := ErrProtocol
		if h.Version != protocolVersion {
			err = ErrVersion
		}
		return nil, c.failed(fmt.Errorf("refused: %s: %w", printable.String(h.Error), err))
	}
	if h.Version != protocolVersion {
		return nil, c.failed(fmt.Errorf("the agent on %s (thinback %s) speaks protocol version %d, this thinback (%s) version %d: install the same thinback on both hosts: %w",
			d.Where(), printable.String(h.Thinback), h.Version, Version, protocolVersion, ErrVersion))
	}
	return c, nil
}

// failed ends a Dial whose handshake failed: the process is collected,
// and its exit status and stderr say better than the handshake what went
// wrong when ssh failed or found no thinback.
func (c *Conn) failed(herr error) error {
	c.stdin.Close()
	if errors.Is(herr, ErrProtocol) || errors.Is(herr, ErrVersion) {
		// Something answered, and it is not going to serve us.
		c.Kill()
	}
	io.Copy(io.Discard, c.r)
	c.stderrs.Wait()
	werr := c.cmd.Wait()
	if c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	if err := c.exitError(werr, false); err != nil && (errors.Is(err, ErrNoRemote) || errors.Is(err, ErrSSH) || errors.Is(err, ErrHostKey)) {
		return err
	}
	if errors.Is(herr, io.ErrUnexpectedEOF) {
		herr = fmt.Errorf("%w: it ended before the handshake%s", ErrProtocol, c.tail.quote())
	}
	return fmt.Errorf("%s (ran: %s): %w", c.dest.Where(), c.shown, herr)
}

// exitError makes an error of how the process ended. served says the
// handshake was done: then the stderr lines are the agent's own.
func (c *Conn) exitError(werr error, served bool) error {
	if werr == nil {
		return nil
	}
	if c.ctx.Err() != nil {
		return c.ctx.Err()
	}
	where := c.dest.Where()
	var ee *exec.ExitError
	if !errors.As(werr, &ee) {
		return fmt.Errorf("%s (ran: %s): %w", where, c.shown, werr)
	}
	code := ee.ExitCode()
	last := c.tail.last()
	switch {
	case !served && (code == 127 || code == 126 || (code != 255 && c.tail.has("command not found", "No such file"))):
		return fmt.Errorf("%s has no thinback at %s (ran: %s)%s: install it there or give its path with --remote-thinback: %w",
			where, c.binary, c.shown, c.tail.quote(), ErrNoRemote)
	case code == 255 && c.dest.Remote() && c.tail.has("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED"):
		return fmt.Errorf("ssh refused the host key of %s (ran: %s)%s: check the key (ssh-keyscan, ssh-keygen -lf) and put it in known_hosts: %w",
			where, c.shown, c.tail.quote(), ErrHostKey)
	case code == 255 && c.dest.Remote():
		return fmt.Errorf("ssh to %s failed (ran: %s): %s: %w", where, c.shown, printable.String(last), ErrSSH)
	case code < 0:
		return fmt.Errorf("%s: %s was killed (%v)%s", where, c.shown, ee.ProcessState, c.tail.quote())
	}
	return fmt.Errorf("%s: %s exited with status %d%s", where, c.shown, code, c.tail.quote())
}

// haveTerminal reports whether this process has a controlling terminal.
func haveTerminal() bool {
	f, err := os.Open("/dev/tty")
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// tail copies stderr line by line and keeps its last lines.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) copy(w io.Writer, prefix string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		line := printable.String(strings.TrimSuffix(sc.Text(), "\r"))
		t.mu.Lock()
		t.lines = append(t.lines, line)
		if len(t.lines) > tailLines {
			t.lines = t.lines[1:]
		}
		t.mu.Unlock()
		if w != nil {
			fmt.Fprintf(w, "%s%s\n", prefix, line)
		}
	}
	io.Copy(io.Discard, r) // a line too long: the rest is not kept
}

func (t *tail) last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(nothing on stderr)"
	}
	return t.lines[len(t.lines)-1]
}

func (t *tail) has(subs ...string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines {
		for _, s := range subs {
			if strings.Contains(l, s) {
				return true
			}
		}
	}
	return false
}

// quote gives the last lines for an error, after ": ".
func (t *tail) quote() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	var b bytes.Buffer
	b.WriteString(": ")
	b.WriteString(strings.Join(t.lines, " / "))
	return b.String()
}
