package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// cutSSH is the program cutssh N CMD ARGS... of the scripts, given as
// --rsh in front of the ssh command line: it runs CMD with its standard
// input passed through, and kills CMD (kill -9, by its pid) once N bytes
// have passed, as a connection dropped in the middle of a transfer. A
// shorter input ends as CMD ends.
func cutSSH(args []string) int {
	if len(args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: cutssh N CMD [ARGS...]")
		return 2
	}
	n, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cutssh:", err)
		return 2
	}
	cmd := exec.Command(args[1], args[2:]...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	in, err := cmd.StdinPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cutssh:", err)
		return 255
	}
	// CMD may end first (the other end failed): then so does cutssh, so
	// that nothing holds the output open that CMD's end closed.
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	copied := make(chan error, 1)
	go func() {
		_, err := io.CopyN(in, os.Stdin, n)
		if err != nil {
			in.Close()
		}
		copied <- err
	}()
	select {
	case err := <-copied:
		if err == nil {
			cmd.Process.Signal(syscall.SIGKILL)
			fmt.Fprintf(os.Stderr, "cutssh: killed %s (pid %d) after %d bytes\n", args[1], cmd.Process.Pid, n)
			<-ended
			return 255
		}
		return exitOf(<-ended)
	case err := <-ended:
		return exitOf(err)
	}
}

func exitOf(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() >= 0 {
		return ee.ExitCode()
	}
	return 255
}
