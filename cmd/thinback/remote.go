package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/thinback/thinback/cmd/internal/printable"
	"github.com/thinback/thinback/cmd/internal/remote"
	"github.com/urfave/cli/v2"
)

func init() { remote.Version = version }

// The flags of every command that reaches another host.
var (
	rshFlag = &cli.StringFlag{Name: "rsh", EnvVars: []string{"THINBACK_RSH"}, Value: "ssh",
		Usage: "the ssh command reaching the other host, split into words as a shell would (no shell is run), e.g. 'ssh -i KEY -p 2222'"}
	remoteThinbackFlag = &cli.StringFlag{Name: "remote-thinback", EnvVars: []string{"THINBACK_REMOTE_THINBACK"},
		Usage: "the thinback to run on the other host (default: thinback, found in the remote PATH; on this host: this thinback)"}
	remoteFlags = []cli.Flag{rshFlag, remoteThinbackFlag}
)

// remoteOptions are how c's command reaches another host: its --rsh and
// --remote-thinback; the agent's stderr goes to the command's, prefixed
// with the host.
func remoteOptions(e *env, c *cli.Context) remote.Options {
	return remote.Options{Rsh: c.String(rshFlag.Name), RemoteThinback: c.String(remoteThinbackFlag.Name), Stderr: e.stderr}
}

// agentStatus is the last thing an agent service that runs one of
// thinback's commands writes, a line of JSON: how the command ended there,
// so that this end exits with the code it would have exited with there.
type agentStatus struct {
	Code    int    `json:"code"`
	Message string `json:"message,omitempty"`
}

// maxStatus bounds the status line, read from the other host.
const maxStatus = 64 << 10

func writeStatus(w io.Writer, err error) error {
	st := agentStatus{Code: exitCode(err)}
	if err != nil {
		st.Message = err.Error()
	}
	b, jerr := json.Marshal(st)
	if jerr != nil {
		return jerr
	}
	_, werr := w.Write(append(b, '\n'))
	return werr
}

// errNoStatus is an agent that ended without saying how.
var errNoStatus = errors.New("no status from the agent")

// readStatus reads an agent's status: nil when its command succeeded, a
// *remoteError when it failed, errNoStatus when the stream ended first.
func readStatus(r io.Reader, where string) error {
	br := bufio.NewReader(io.LimitReader(r, maxStatus))
	line, err := br.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%w: %v", errNoStatus, err)
	}
	var st agentStatus
	if err := json.Unmarshal([]byte(strings.TrimSpace(line)), &st); err != nil {
		return fmt.Errorf("%w: the agent's status does not parse: %v", errNoStatus, err)
	}
	if st.Code == exitOK {
		return nil
	}
	return &remoteError{where: where, code: st.Code, msg: st.Message}
}

// remoteError is a command that failed on the other host: this end exits
// with the code it exited with there (see exitCode).
type remoteError struct {
	where string
	code  int
	msg   string
}

func (e *remoteError) Error() string {
	return e.where + ": " + printable.Message(e.msg)
}

// reportedError is an error an agent has sent to the other end already:
// thinback exits with its code without printing it again (its message
// went to the other host, which prints it).
type reportedError struct{ err error }

func (e reportedError) Error() string { return e.err.Error() }
func (e reportedError) Unwrap() error { return e.err }
