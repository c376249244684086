package lvmtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestStartSSHD: the throwaway sshd takes the client's key, knows no
// password, and gives its sessions the environment it was started with.
func TestStartSSHD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("sshd must run as root")
	}
	s, err := StartSSHD(t.TempDir(), []string{"THINBACK_SSHD_TEST=here", "PATH=/usr/bin:/bin"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := s.Stop(); err != nil {
			t.Error(err)
		}
	}()
	out, err := exec.Command(s.SSH, s.Dest, `echo "$THINBACK_SSHD_TEST $PATH"`).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", s.SSH, s.Dest, err, out)
	}
	if got := strings.TrimSpace(string(out)); !strings.HasPrefix(got, "here ") || !strings.HasSuffix(got, "/usr/bin:/bin") {
		t.Fatalf("session environment %q", got)
	}
	args := append(strings.Fields(s.Rsh), s.Dest, "true")
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	// Another key is refused, without a prompt.
	other := t.TempDir() + "/key"
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	args = append(strings.Fields(strings.Replace(s.Rsh, s.Dir+"/user_key", other, 1)), s.Dest, "true")
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err == nil {
		t.Fatalf("a key not authorized logged in: %s", out)
	}
}
