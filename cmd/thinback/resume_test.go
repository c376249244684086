package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

// resumeRand returns the seeded generator of a resume test, logging the
// seed; THINBACK_SEED replays it.
func resumeRand(t *testing.T) *rand.Rand {
	seed := time.Now().UnixNano()
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// transfer runs thinback send sendArgs -o - piped into thinback receive
// recvArgs through the test, which passes on at most limit bytes (all
// when limit < 0) and then closes the receiver's input, or, with kill,
// SIGKILLs the receiver with its input still open. It returns receive's
// result and the bytes passed on.
func transfer(t *testing.T, dir string, sendArgs, recvArgs []string, limit int64, kill bool) (result, int64) {
	t.Helper()
	send := thinbackCmd(t, dir, append(append([]string{"send"}, sendArgs...), "-o", "-")...)
	var sendErr bytes.Buffer
	send.Stderr = &sendErr
	from, err := send.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	recv := thinbackCmd(t, dir, append([]string{"receive"}, recvArgs...)...)
	var out, errb bytes.Buffer
	recv.Stdout, recv.Stderr = &out, &errb
	to, err := recv.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := send.Start(); err != nil {
		t.Fatal(err)
	}
	if err := recv.Start(); err != nil {
		t.Fatal(err)
	}
	var n int64
	if limit < 0 {
		n, err = io.Copy(to, from)
	} else {
		n, err = io.CopyN(to, from, limit)
	}
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, syscall.EPIPE) {
		t.Fatalf("passing the stream on: %v", err)
	}
	if kill {
		recv.Process.Signal(syscall.SIGKILL)
	}
	to.Close()
	from.Close() // the sender's output goes nowhere now: it stops
	rerr := recv.Wait()
	serr := send.Wait()
	if limit < 0 && serr != nil {
		t.Fatalf("send %s: %v\n%s", strings.Join(sendArgs, " "), serr, sendErr.String())
	}
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(rerr, &ee):
		r.code = ee.ExitCode()
		if kill && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled() {
			r.code = -1
		}
	case rerr != nil:
		t.Fatal(rerr)
	}
	t.Logf("send %s | cut after %d of the bytes | receive %s: exit %d\n%s", strings.Join(sendArgs, " "), n, strings.Join(recvArgs, " "), r.code, r.stderr)
	return r, n
}

var tokenLine = regexp.MustCompile(`thinback send \.\.\. -o - --resume ([A-Za-z0-9_-]+)`)

func sha(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// restFrom returns how many bytes of the delta file at path hold the
// records from volume offset from on (END included): what a transfer
// cut there has still to send.
func restFrom(t *testing.T, path string, key *archive.Key, from int64) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	rd := archive.NewReader(f, archive.WithKey(key))
	for {
		at := rd.Offset()
		rec, err := rd.Next()
		if err == io.EOF {
			return fi.Size() - at
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.End() > from {
			return fi.Size() - at
		}
		if rec.Kind == archive.KindData {
			if _, err := rd.ReadPayload(nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// TestResumeCutStream cuts send | receive --to FILE --resumable at a
// random byte of the stream (a pipe closed, or the receiver killed with
// SIGKILL), then sends only the rest with send --resume TOKEN: the file
// ends up equal to the image sent, the rest is no more than what the
// receiver had not made durable, and the snapback file written by both
// runs undoes the incremental. In the clear and encrypted (--key-file).
func TestResumeCutStream(t *testing.T) {
	r := resumeRand(t)
	const mib = 1 << 20
	for _, enc := range []bool{false, true} {
		for _, kill := range []bool{false, true} {
			name := map[bool]string{false: "pipe closed", true: "receiver killed"}[kill]
			if enc {
				name += ", encrypted"
			}
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				var keyArgs []string
				var key *archive.Key
				if enc {
					kf := writeKeyFile(t, dir, "stream.key")
					keyArgs, key = []string{"--key-file", kf}, keyFileStreamKey(t, kf)
				}
				// Incompressible data, so that stream bytes are volume bytes.
				a := make([]byte, 12*mib)
				r.Read(a)
				clear(a[3*mib : 4*mib])
				b := append([]byte(nil), a...)
				for i := 0; i < 40; i++ {
					off := r.Intn(len(b) - 256<<10)
					r.Read(b[off : off+r.Intn(256<<10)])
				}
				for name, data := range map[string][]byte{"a.img": a, "b.img": b} {
					if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
				target := filepath.Join(dir, "target.img")

				for _, round := range []struct {
					sendArgs []string
					snapback bool
					want     string
				}{
					{[]string{"--file", "a.img", "--volume", "vm1"}, false, "a.img"},
					{[]string{"--file", "b.img", "--base-file", "a.img", "--volume", "vm1"}, true, "b.img"},
				} {
					sendArgs := append(round.sendArgs, keyArgs...)
					whole := filepath.Join(dir, "whole.tbk")
					os.Remove(whole)
					run(t, dir, append(append([]string{"send"}, sendArgs...), "-o", whole, "--quiet")...)
					fi, err := os.Stat(whole)
					if err != nil {
						t.Fatal(err)
					}
					size := fi.Size()
					cut := size/4 + r.Int63n(size/2)
					extra := append([]string(nil), keyArgs...)
					if round.snapback {
						extra = append(extra, "--snapback", "undo.tbk")
					}
					recvArgs := append([]string{"--to", target, "--resumable", "--checkpoint-mib", "1"}, extra...)
					res, n := transfer(t, dir, sendArgs, recvArgs, cut, kill)
					if res.code == 0 {
						t.Fatalf("the transfer cut after %d of %d bytes succeeded", n, size)
					}
					var token string
					if kill {
						tr := thinback(t, dir, "", append([]string{"receive", "--resume-token", "--to", target}, keyArgs...)...)
						if tr.code == exitChain {
							t.Logf("killed before its first checkpoint: %s", tr.stderr)
						} else {
							tr.want(t, 0, "receive --resume-token")
							token = strings.TrimSpace(tr.stdout)
						}
					} else {
						res.want(t, exitCorrupt, "a cut stream")
						if m := tokenLine.FindStringSubmatch(res.stderr); m != nil {
							token = m[1]
						}
					}
					var rest int64
					if token == "" {
						// Nothing durable: the whole stream again.
						res, rest = transfer(t, dir, sendArgs, append([]string{"--to", target}, extra...), -1, false)
					} else {
						tok, err := parseResumeToken(token)
						if err != nil {
							t.Fatal(err)
						}
						res, rest = transfer(t, dir, append(sendArgs, "--resume", token), append([]string{"--to", target}, extra...), -1, false)
						// The rest is the whole file's records from the
						// token's offset (one of them split there), with
						// a header of its own.
						if most := restFrom(t, whole, key, tok.From) + 64<<10; rest > most {
							t.Errorf("the resumed stream is %d bytes, the whole file's records from byte %d are %d", rest, tok.From, most)
						}
						// Sent again: what was past the last checkpoint
						// before the cut, at most the checkpoint interval
						// and the records in the receiver's pipeline (one
						// per worker and as many waiting), besides what
						// the pipe held.
						workers := int64(archive.WorkerCount(0))
						if again := rest - (size - n); again > mib+(2*workers+2)*(mib+64<<10)+64<<10 {
							t.Errorf("the resumed stream sent %d bytes again (%d of %d had been passed on, the rest is %d)", again, n, size, rest)
						}
						t.Logf("cut after %d of %d bytes; resumed from volume byte %d with %d bytes", n, size, tok.From, rest)
					}
					res.want(t, 0, "the resumed transfer")
					if sha(t, target) != sha(t, filepath.Join(dir, round.want)) {
						t.Fatalf("after the resumed transfer the target differs from %s", round.want)
					}
				}
				// The snapback file of both runs undoes the incremental.
				run(t, dir, append([]string{"apply", "undo.tbk", "--to", target}, keyArgs...)...)
				if sha(t, target) != sha(t, filepath.Join(dir, "a.img")) {
					t.Fatal("the snapback file written by the cut and the resumed run does not undo them")
				}
			})
		}
	}
}

// TestResumeTokenRefused: send --resume refuses a token of another
// transfer, naming both, and a token cut short; receive refuses the rest
// of a transfer on a target that holds no such interrupted transfer.
func TestResumeTokenRefused(t *testing.T) {
	dir := t.TempDir()
	r := resumeRand(t)
	a := make([]byte, 2<<20)
	r.Read(a)
	if err := os.WriteFile(filepath.Join(dir, "a.img"), a, 0o600); err != nil {
		t.Fatal(err)
	}
	otherID := archive.NewID()
	other := resumeToken{Snapshot: otherID, From: 1 << 20, VolumeSize: int64(len(a))}.String()
	res := thinback(t, dir, "", "send", "--file", "a.img", "-o", "rest.tbk", "--resume", other)
	res.want(t, exitChain, "send --resume with another transfer's token")
	if !strings.Contains(res.stderr, "the token is of a transfer of snapshot "+otherID.String()) || !strings.Contains(res.stderr, "but this send writes snapshot") {
		t.Errorf("the refusal does not name both snapshots: %s", res.stderr)
	}
	thinback(t, dir, "", "send", "--file", "a.img", "-o", "rest.tbk", "--resume", other[:len(other)-3]).want(t, exitUsage, "a token cut short")

	// The rest of a real transfer, to a target that never had it.
	run(t, dir, "send", "--file", "a.img", "-o", "whole.tbk", "--quiet")
	f, _ := os.Open(filepath.Join(dir, "whole.tbk"))
	h, err := archive.NewReader(f).Header()
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	tok := resumeToken{Snapshot: h.Snapshot.ID, From: 1 << 20, VolumeSize: h.VolumeSize}.String()
	run(t, dir, "send", "--file", "a.img", "-o", "rest.tbk", "--resume", tok, "--quiet")
	res = thinback(t, dir, "rest.tbk", "receive", "--to", "t.img")
	res.want(t, exitChain, "the rest of a transfer to a target without it")
	if !strings.Contains(res.stderr, "holds no interrupted transfer") {
		t.Errorf("the refusal does not say why: %s", res.stderr)
	}
	// Nor does a store take it: it is no snapshot.
	res = thinback(t, dir, "rest.tbk", "receive", "--store", "store")
	res.want(t, exitChain, "the rest of a transfer into a store")
	if !strings.Contains(res.stderr, "is the rest of an interrupted transfer") {
		t.Errorf("the store's refusal does not say why: %s", res.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "t.img")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused receive left t.img behind: %v", err)
	}
	thinback(t, dir, "", "receive", "--to", "t.img", "--resume-token").want(t, exitError, "a token of a target that does not exist")
	if err := os.WriteFile(filepath.Join(dir, "t.img"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	thinback(t, dir, "", "receive", "--to", "t.img", "--resume-token").want(t, exitChain, "a token of a target with no interrupted transfer")
}
