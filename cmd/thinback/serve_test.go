package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/cmd/internal/nbd"
	"github.com/thinback/thinback/cmd/internal/nbd/nbdtest"
	"golang.org/x/sys/unix"
)

// serveStore makes a store of two backups of a small image and returns
// it with the image's two states.
func serveStore(t *testing.T) (work, store string, states [][]byte) {
	t.Helper()
	work = t.TempDir()
	store = filepath.Join(work, "store")
	r := seededRand(t)
	img := make([]byte, 3<<20+777)
	r.Read(img[:2<<20])
	for i := 0; i < 2; i++ {
		if i > 0 {
			r.Read(img[1<<20 : 1<<20+300000])
		}
		if err := os.WriteFile(filepath.Join(work, "disk.img"), img, 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, work, "backup", "--file", "disk.img", "--store", store)
		states = append(states, append([]byte(nil), img...))
	}
	return work, store, states
}

// startServe runs serve in this process on a unix socket and returns the
// socket once the server listens, with the server and its exports; the
// server stops at the end of the test.
func startServe(t *testing.T, store string, opts nbd.Options) (sock string, srv *nbd.Server, x *nbd.Shared, cache *archive.SnapshotCache, log *syncBuffer) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "nbd.sock")
	log = &syncBuffer{}
	e := &env{stdin: strings.NewReader(""), stdout: io.Discard, stderr: writerFunc(func(b []byte) (int, error) { log.WriteString(string(b)); return len(b), nil })}
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- runServe(ctx, e, serveOptions{store: store, addr: "unix:" + sock, quiet: true, nbd: opts,
			started: func(s *nbd.Server, xs *nbd.Shared, c *archive.SnapshotCache) {
				srv, x, cache = s, xs, c
				close(started)
			}})
	}()
	select {
	case <-started:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return sock, srv, x, cache, log
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

// TestServeShared: many clients of two points in time, each choosing its
// export after NBD_OPT_INFO, share one index per point in time and one
// cache of decoded records, and the reads they ask for, never taken from
// their sockets, hold the server's one read budget at most: when the
// budget is spent, reads wait. Then every reply arrives, with the bytes
// of its export.
func TestServeShared(t *testing.T) {
	_, store, states := serveStore(t)
	waited := make(chan struct{}, 1)
	sock, srv, x, cache, log := startServe(t, store, nbd.Options{OnReadWait: func() {
		select {
		case waited <- struct{}{}:
		default:
		}
	}})

	const clients = 40
	names := []string{"disk.img@1", "disk.img"}
	var ks []*nbdtest.Client
	for i := range clients {
		k := nbdtest.Dial(t, "unix", sock)
		if final, _ := k.Info(names[i%2]); final != nbd.RepAck {
			t.Fatalf("client %d: NBD_OPT_INFO %s: reply %#x", i, names[i%2], final)
		}
		if final := k.Go(names[i%2]); final != nbd.RepAck {
			t.Fatalf("client %d: NBD_OPT_GO %s: reply %#x", i, names[i%2], final)
		}
		ks = append(ks, k)
	}
	st := x.Stats()
	if st.Built != 2 || st.Open != 2 {
		t.Fatalf("%d clients of 2 points in time, each with NBD_OPT_INFO then NBD_OPT_GO: %d indexes built, %d open; want 2 and 2", clients, st.Built, st.Open)
	}
	t.Logf("%d idle clients: %d indexes of %d bytes in all, %d connections", clients, st.Built, st.IndexBytes, srv.Connections())

	// Every client asks for its whole image, 1 MiB at a time, and takes
	// no reply yet: 160 units of reads asked for, 16 in the budget.
	const piece = 1 << 20
	for i, k := range ks {
		want := states[i%2]
		for h, off := uint64(1), 0; off < len(want); h, off = h+1, off+piece {
			k.Request(nbd.CmdRead, h, uint64(off), uint32(min(piece, len(want)-off)), nil)
		}
	}
	<-waited // reads wait: the budget is spent
	b := srv.ReadBudget()
	if b.Used > b.Limit || b.Peak > b.Limit {
		t.Fatalf("the read budget: %d units in use, %d at most, limit %d", b.Used, b.Peak, b.Limit)
	}
	var wg sync.WaitGroup
	for i, k := range ks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			want := states[i%2]
			n := (len(want) + piece - 1) / piece
			for range n {
				var magic, code uint32
				var h uint64
				if err := binary.Read(k.Conn, binary.BigEndian, &magic); err != nil {
					t.Errorf("client %d: %v", i, err)
					return
				}
				binary.Read(k.Conn, binary.BigEndian, &code)
				binary.Read(k.Conn, binary.BigEndian, &h)
				off := int(h-1) * piece
				if magic != nbd.ReplyMagic || code != 0 || h < 1 || h > uint64(n) {
					t.Errorf("client %d: reply %#x code %d handle %d", i, magic, code, h)
					return
				}
				b := make([]byte, min(piece, len(want)-off))
				if _, err := io.ReadFull(k.Conn, b); err != nil || !bytes.Equal(b, want[off:off+len(b)]) {
					t.Errorf("client %d: the read at %d: %v, or other bytes", i, off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b = srv.ReadBudget()
	st = x.Stats()
	if b.Peak != b.Limit || st.Built != 2 || cache.Bytes() > cache.Limit() {
		t.Fatalf("after every read: the budget was used up to %d units (limit %d), %d indexes built, %d bytes cached (limit %d)", b.Peak, b.Limit, st.Built, cache.Bytes(), cache.Limit())
	}
	t.Logf("served %d clients: read budget at most %d of %d units of %d MiB, %d bytes of decoded records cached", clients, b.Peak, b.Limit, nbd.ReadSlot>>20, cache.Bytes())
	if s := log.String(); s != "" {
		t.Logf("serve said:\n%s", s)
	}
}

// TestServeRepliesNoPaths: an export that cannot be opened (its delta
// file damaged) is refused to the client with a message naming the
// export and nothing of the store's files; the server's log has the
// details.
func TestServeRepliesNoPaths(t *testing.T) {
	_, store, _ := serveStore(t)
	files, err := filepath.Glob(filepath.Join(store, "volumes", "*", "*.tbk"))
	if err != nil || len(files) != 2 {
		t.Fatalf("delta files %v: %v", files, err)
	}
	for _, f := range files {
		if err := os.Truncate(f, 1000); err != nil {
			t.Fatal(err)
		}
	}
	sock, _, _, _, log := startServe(t, store, nbd.Options{})
	k := nbdtest.Dial(t, "unix", sock)
	final, msg := k.Info("disk.img@1")
	if final != nbd.RepErrUnknown || !strings.Contains(msg, "disk.img@1") {
		t.Fatalf("NBD_OPT_INFO of a damaged export: reply %#x %q", final, msg)
	}
	dir, _ := filepath.Abs(store)
	for _, leak := range []string{dir, filepath.Base(files[0]), "volumes/"} {
		if strings.Contains(msg, leak) {
			t.Fatalf("the reply to the client names the store's files (%s): %q", leak, msg)
		}
	}
	if !strings.Contains(log.String(), filepath.Base(files[0])) {
		t.Fatalf("the server's log does not name the damaged file:\n%s", log.String())
	}
}

// serveProc is thinback serve run as its own process.
type serveProc struct {
	cmd   *exec.Cmd
	lines chan string
	log   *syncBuffer
}

// startServeProc starts thinback serve with args under umask 000 (as a
// careless service manager might run it).
func startServeProc(t *testing.T, work string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{cmd: thinbackCmd(t, work, append([]string{"serve"}, args...)...), lines: make(chan string, 100), log: &syncBuffer{}}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	old := syscall.Umask(0)
	err = p.cmd.Start()
	syscall.Umask(old)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		s := bufio.NewScanner(stderr)
		for s.Scan() {
			p.log.WriteString(s.Text() + "\n")
			select {
			case p.lines <- s.Text():
			default:
			}
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.cmd.Wait()
	})
	return p
}

// waitLine waits for a line of standard error holding want.
func (p *serveProc) waitLine(t *testing.T, want string) string {
	t.Helper()
	for line := range p.lines {
		if strings.Contains(line, want) {
			return line
		}
	}
	err := p.cmd.Wait()
	t.Fatalf("serve ended (%v) without saying %q:\n%s", err, want, p.log.String())
	return ""
}

// TestServeSocketAndPort: the unix socket is 0600 even under umask 000,
// and tcp:HOST:0 prints the port chosen, where the server answers.
func TestServeSocketAndPort(t *testing.T) {
	work, store, _ := serveStore(t)
	sock := filepath.Join(work, "nbd.sock")
	p := startServeProc(t, work, "--store", store, "--nbd", "unix:"+sock)
	p.waitLine(t, "serving store")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the socket under umask 000: %v, want a socket of mode 0600", fi.Mode())
	}

	p = startServeProc(t, work, "--store", store, "--nbd", "tcp:127.0.0.1:0")
	line := p.waitLine(t, "serving store")
	i := strings.Index(line, "at tcp:127.0.0.1:")
	if i < 0 {
		t.Fatalf("serve said %q, not where it listens", line)
	}
	addr := strings.Fields(line[i+len("at tcp:"):])[0]
	addr = strings.TrimSuffix(addr, ",")
	if strings.HasSuffix(addr, ":0") {
		t.Fatalf("serve printed port 0: %q", line)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("the address printed, %s: %v", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	var magic uint64
	if err := binary.Read(c, binary.BigEndian, &magic); err != nil || magic != nbd.Magic {
		t.Fatalf("at %s: %#x, %v; want the NBD greeting", addr, magic, err)
	}
}

// TestServeAcceptBackoff: when accepting fails because the server is
// out of file descriptors, it says so and goes on: once connections
// end, new clients are served.
func TestServeAcceptBackoff(t *testing.T) {
	work, store, _ := serveStore(t)
	sock := filepath.Join(work, "nbd.sock")
	p := startServeProc(t, work, "--store", store, "--nbd", "unix:"+sock, "--max-connections", "1000")
	p.waitLine(t, "serving store")
	// Few descriptors from now on: the ones open, and a few more.
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	limit := uint64(len(fds) + 4)
	if err := unix.Prlimit(p.cmd.Process.Pid, unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: limit, Max: limit}, nil); err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for range 12 {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	p.waitLine(t, "too many open files; trying again")
	for _, c := range conns {
		c.Close()
	}
	k := nbdtest.Dial(t, "unix", sock)
	if final, names := k.List(); final != nbd.RepAck || len(names) != 3 {
		t.Fatalf("NBD_OPT_LIST after running out of descriptors: %#x, %d names", final, len(names))
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve after running out of descriptors: %v\n%s", err, p.log.String())
	}
}

// TestServeNbdinfo: libnbd's own client (nbdinfo, nbdcopy: Debian's
// libnbd-bin) lists the exports with their sizes, read-only, and copies
// each point in time byte for byte over several connections at once,
// while the server indexes each point in time once for all its
// NBD_OPT_INFO and NBD_OPT_GO requests.
func TestServeNbdinfo(t *testing.T) {
	nbdtest.NeedLibnbd(t)
	_, store, states := serveStore(t)
	sock, _, x, _, log := startServe(t, store, nbd.Options{})
	uri := func(name string) string { return "nbd+unix:///" + name + "?socket=" + sock }
	sizes := nbdtest.NbdinfoList(t, uri(""))
	want := map[string]int64{"disk.img": int64(len(states[1])), "disk.img@1": int64(len(states[0])), "disk.img@2": int64(len(states[1]))}
	if fmt.Sprint(sizes) != fmt.Sprint(want) {
		t.Fatalf("nbdinfo --list: %v, want %v", sizes, want)
	}
	for name, state := range map[string][]byte{"disk.img@1": states[0], "disk.img": states[1], "disk.img@2": states[1]} {
		nbdtest.Nbdcopy(t, uri(name), state)
	}
	// disk.img and disk.img@2 are one point in time.
	if st := x.Stats(); st.Built != 2 {
		t.Fatalf("2 points in time listed, queried and copied: %d indexes built, want 2", st.Built)
	}
	out, err := exec.Command("nbdinfo", uri("disk.img@9")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "disk.img@9") || strings.Contains(string(out), store) {
		t.Fatalf("nbdinfo of an export that does not exist: %v\n%s", err, out)
	}
	if s := log.String(); s != "" {
		t.Logf("serve said:\n%s", s)
	}
}
