package main

import (
	"os"
	"strconv"

	"github.com/rogpeppe/go-internal/testscript"
	"github.com/thinback/thinback/lvmthin/lvmtest"
)

// startsshd: start a throwaway sshd on 127.0.0.1 (lvmtest.StartSSHD) for
// a script that reaches "another host" over ssh: in the guest, two volume
// groups on one kernel stand for two hosts. It sets
//
//	RSH      the ssh command line for --rsh (its own keys and known_hosts)
//	SSH      a script running that ssh: exec $SSH $SSHDEST COMMAND
//	SSHDEST  root@127.0.0.1
//	SSHPORT  the port
//	SSHSTATE the THINBACK_STATE of the sessions (the "remote" host's own)
//
// Sessions get the script's PATH (so `thinback` is this test binary), the
// guest's LVM configuration (LVM_SYSTEM_DIR) and LC_ALL; sshd stops when
// the script ends. Its files are in $WORK/sshd (sshd.log: its log).
func cmdStartsshd(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: startsshd")
	}
	dir := ts.MkAbs("sshd")
	state := ts.MkAbs("sshd/state.db")
	env := []string{"PATH=" + ts.Getenv("PATH"), "THINBACK_STATE=" + state}
	for _, k := range []string{"LVM_SYSTEM_DIR", "LC_ALL", "THINBACK_GUEST", "THINBACK_UML_WORK"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	s, err := lvmtest.StartSSHD(dir, env)
	ts.Check(err)
	ts.Defer(func() {
		if err := s.Stop(); err != nil {
			ts.Logf("%v", err)
		}
	})
	ts.Setenv("RSH", s.Rsh)
	ts.Setenv("SSH", s.SSH)
	ts.Setenv("SSHDEST", s.Dest)
	ts.Setenv("SSHPORT", strconv.Itoa(s.Port))
	ts.Setenv("SSHSTATE", state)
}
