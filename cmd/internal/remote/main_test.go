package remote

import (
	"fmt"
	"io"
	"os"
	"testing"
)

// agentEnv makes this test binary a thinback agent for the tests: set by
// the script sshtest.RemoteThinback writes, never by a user, since it
// lives only in this package's test binary. Its value says what kind:
//
//	1       an agent of this protocol version
//	v2      an agent of protocol version 2
//	banner  an agent whose login prints a banner on standard output first
const agentEnv = "THINBACK_REMOTE_TEST_AGENT"

func TestMain(m *testing.M) {
	if kind := os.Getenv(agentEnv); kind != "" {
		os.Exit(testAgent(kind, os.Args[1:]))
	}
	os.Exit(m.Run())
}

// testAgent is `thinback agent SERVICE` with test services:
//
//	echo  copies its input back, then writes "bye" on stderr
//	fail  writes seven numbered lines on stderr and exits 3
//	hang  reads until its input ends
func testAgent(kind string, args []string) int {
	if len(args) < 2 || args[0] != "agent" {
		fmt.Fprintf(os.Stderr, "test agent: want agent SERVICE, got %q\n", args)
		return 2
	}
	switch kind {
	case "v2":
		protocolVersion = 2
	case "banner":
		fmt.Println("Welcome to \x1b[1mhost2\x1b[0m, have a nice day")
	}
	Version = "test-agent"
	c, err := Accept(os.Stdin, os.Stdout, args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "thinback: %v\n", err)
		return 4
	}
	switch args[1] {
	case "echo":
		if _, err := io.Copy(c, c); err != nil {
			fmt.Fprintf(os.Stderr, "echo: %v\n", err)
			return 1
		}
		fmt.Fprintln(os.Stderr, "bye")
	case "fail":
		for i := 1; i <= 7; i++ {
			fmt.Fprintf(os.Stderr, "line %d\n", i)
		}
		return 3
	case "hang":
		io.Copy(io.Discard, c)
	}
	return 0
}
