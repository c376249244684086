package remote

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/thinback/thinback/cmd/internal/printable"
)

// The handshake. Both ends write, in this order, a fixed greeting line
// and one line of JSON, a Hello; the client first, the agent after it has
// read and accepted the client's. The greeting lines never change, so
// that any two versions of thinback recognise each other and say which
// versions they are; what a version of the protocol means is in its
// number. The client's and the agent's greetings differ, so that a remote
// command that echoes its input (cat) is not taken for an agent.
//
//	client: "thinback-agent-client\n" || JSON(Hello) || "\n"
//	agent:  "thinback-agent-ready\n"  || JSON(Hello) || "\n"
//
// An agent that refuses the client (another protocol version, a service
// it does not have) answers with a Hello whose Error says why, and exits.
// After the handshake the stream is the service's, raw.
const (
	clientGreeting = "thinback-agent-client\n"
	agentGreeting  = "thinback-agent-ready\n"
	// maxHello bounds a hello line: read from the other host, it is
	// never trusted for an allocation.
	maxHello = 64 << 10
)

// ProtocolName is the name both ends give the protocol in their Hello.
const ProtocolName = "thinback-agent"

// protocolVersion is the version of the protocol this thinback speaks. A
// variable only so that this package's tests can build an agent of
// another version; nothing outside the tests sets it.
var protocolVersion = 1

// Version is the thinback version both ends put in their Hello; the
// command sets it from its own.
var Version = "unknown"

var (
	// ErrVersion is an agent of another protocol version.
	ErrVersion = errors.New("incompatible thinback on the other host")
	// ErrProtocol is a peer that did not speak the handshake: a shell
	// banner on standard output, another program, a refusal.
	ErrProtocol = errors.New("the other end did not answer as a thinback agent")
)

// Hello is what each end says of itself in the handshake.
type Hello struct {
	Protocol string   `json:"protocol"` // ProtocolName
	Version  int      `json:"version"`  // the protocol version
	Thinback string   `json:"thinback"` // the thinback version
	Service  string   `json:"service,omitempty"`
	Args     []string `json:"args,omitempty"`
	Error    string   `json:"error,omitempty"` // the agent refuses; it exits after this
}

func ourHello(service string, args []string) Hello {
	return Hello{Protocol: ProtocolName, Version: protocolVersion, Thinback: Version, Service: service, Args: args}
}

func writeHello(w io.Writer, greeting string, h Hello) error {
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	_, err = w.Write(append(append([]byte(greeting), b...), '\n'))
	return err
}

// readHello reads a greeting and the Hello after it. A peer that says
// something else is ErrProtocol, quoting the first bytes it said.
func readHello(r *bufio.Reader, greeting string) (Hello, error) {
	got := make([]byte, 0, len(greeting))
	for len(got) < len(greeting) {
		c, err := r.ReadByte()
		if err != nil {
			if len(got) == 0 {
				return Hello{}, io.ErrUnexpectedEOF
			}
			return Hello{}, notHandshake(got, r)
		}
		got = append(got, c)
		if c != greeting[len(got)-1] {
			return Hello{}, notHandshake(got, r)
		}
	}
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxHello {
			return Hello{}, fmt.Errorf("%w: its hello is longer than %d bytes", ErrProtocol, maxHello)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return Hello{}, fmt.Errorf("%w: its hello was cut short: %v", ErrProtocol, err)
		}
	}
	var h Hello
	if err := json.Unmarshal(bytes.TrimSuffix(line, []byte("\n")), &h); err != nil {
		return Hello{}, fmt.Errorf("%w: its hello does not parse: %v", ErrProtocol, err)
	}
	if h.Protocol != ProtocolName {
		return Hello{}, fmt.Errorf("%w: it speaks %q, not %s", ErrProtocol, printable.String(h.Protocol), ProtocolName)
	}
	return h, nil
}

// notHandshake quotes what the peer said instead of the handshake: the
// bytes read so far and what else of that line has arrived, sanitised.
func notHandshake(got []byte, r *bufio.Reader) error {
	more, _ := r.Peek(min(r.Buffered(), 80))
	b := append(got, more...)
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	if len(b) > 80 {
		b = b[:80]
	}
	return fmt.Errorf("%w: it printed \"%s\" before any handshake (a login script writing to standard output? make it quiet for sessions without a terminal)",
		ErrProtocol, printable.String(strings.ToValidUTF8(string(b), "?")))
}

// Accept is the agent's side of the handshake, on its stdin/stdout: it
// reads the client's Hello, refuses (answering why) a client of another
// protocol version or one that asks for another service, and answers with
// its own. service is the one the agent was started for.
func Accept(r io.Reader, w io.Writer, service string) (*Conn, error) {
	return accept(r, w, service, nil, false)
}

// AcceptArgs is Accept that also refuses a client whose Hello names other
// arguments than args, those the agent was started with: a remote login
// shell that is not a POSIX shell (fish, csh) may read the quoting of the
// command line otherwise, and the agent must not act on what it made of
// it.
func AcceptArgs(r io.Reader, w io.Writer, service string, args []string) (*Conn, error) {
	return accept(r, w, service, args, true)
}

// Refuse reads the client's Hello and answers that this agent has no such
// service (an older or newer thinback): msg says what to do.
func Refuse(r io.Reader, w io.Writer, service, msg string) error {
	_, err := accept(r, w, service, nil, false, msg)
	return err
}

func accept(r io.Reader, w io.Writer, service string, args []string, checkArgs bool, refusal ...string) (*Conn, error) {
	br := bufio.NewReader(r)
	h, err := readHello(br, clientGreeting)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: standard input ended before the handshake (thinback agent is started by thinback on another host, not by hand)", ErrProtocol)
		}
		return nil, fmt.Errorf("%w (thinback agent is started by thinback on another host, not by hand)", err)
	}
	refuse := func(msg string, e error) (*Conn, error) {
		reply := ourHello(service, nil)
		reply.Error = msg
		if werr := writeHello(w, agentGreeting, reply); werr != nil {
			return nil, fmt.Errorf("%s: %w (and telling the client failed: %v)", msg, e, werr)
		}
		return nil, fmt.Errorf("%s: %w", msg, e)
	}
	switch {
	case h.Version != protocolVersion:
		return refuse(fmt.Sprintf("the client (thinback %s) speaks protocol version %d, this agent (thinback %s) version %d: install the same thinback on both hosts",
			printable.String(h.Thinback), h.Version, Version, protocolVersion), ErrVersion)
	case len(refusal) > 0:
		return refuse(refusal[0], ErrProtocol)
	case h.Service != service:
		return refuse(fmt.Sprintf("the client asks for service %q, this agent was started for %q", printable.String(h.Service), service), ErrProtocol)
	case checkArgs && !slices.Equal(h.Args, args):
		return refuse(fmt.Sprintf("the agent was started with arguments %q, the client sent %q: is the remote user's login shell a POSIX shell?",
			printable.String(strings.Join(args, " ")), printable.String(strings.Join(h.Args, " "))), ErrProtocol)
	}
	if err := writeHello(w, agentGreeting, ourHello(service, h.Args)); err != nil {
		return nil, err
	}
	return &Conn{r: br, w: w, peer: h}, nil
}
