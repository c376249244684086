package nbd

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// testPoints are points in time in memory: name -> key -> bytes. Each
// open of a key is counted, and closes of its Exports signalled.
type testPoints struct {
	names map[string]string // export name -> key
	data  map[string][]byte // key -> bytes
	fail  map[string]error  // key -> the error of its next open

	mu     sync.Mutex
	opens  map[string]int
	closed chan string // keys whose Export was closed
	gate   chan struct{}
}

func newTestPoints() *testPoints {
	return &testPoints{
		names: map[string]string{"v": "k2", "v@1": "k1", "v@2": "k2"},
		data:  map[string][]byte{"k1": []byte("first"), "k2": []byte("second!")},
		fail:  map[string]error{},
		opens: map[string]int{}, closed: make(chan string, 100),
	}
}

func (p *testPoints) List() ([]string, error) { return []string{"v", "v@1", "v@2"}, nil }

func (p *testPoints) Find(name string) (string, func() (Export, error), error) {
	if name == "broken" {
		return "", nil, errors.New("the catalog of /store cannot be read")
	}
	key, ok := p.names[name]
	if !ok {
		return "", nil, nil
	}
	return key, func() (Export, error) {
		if p.gate != nil {
			<-p.gate
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.opens[key]++
		if err := p.fail[key]; err != nil {
			delete(p.fail, key)
			return nil, err
		}
		return &testExport{Reader: bytes.NewReader(p.data[key]), key: key, closed: p.closed}, nil
	}, nil
}

func (p *testPoints) openCount(key string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.opens[key]
}

type testExport struct {
	*bytes.Reader
	key    string
	closed chan string
}

func (e *testExport) IndexBytes() int64 { return 100 }

func (e *testExport) Close() error {
	e.closed <- e.key
	return nil
}

func mustOpen(t *testing.T, x *Shared, name string) Export {
	t.Helper()
	e, err := x.Open(name)
	if err != nil || e == nil {
		t.Fatalf("Open(%q): %v, %v", name, e, err)
	}
	return e
}

// TestShared: every name of one point in time shares one Export, opened
// once for all its clients, including those that come while it is being
// opened; it stays open, idle, once the last client closed it, and is
// closed by Close; an unknown name is no export, and an error finding a
// name or opening its point in time is logged and returned, the next
// client trying again.
func TestShared(t *testing.T) {
	p := newTestPoints()
	p.gate = make(chan struct{})
	var log strings.Builder
	var logMu sync.Mutex
	x := NewShared(p, func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintf(&log, format+"\n", args...)
	})
	if names, err := x.List(); err != nil || strings.Join(names, " ") != "v v@1 v@2" {
		t.Fatalf("List: %q, %v", names, err)
	}

	// Clients of v and v@2 at once, the point in time not opened yet.
	const clients = 8
	exps := make(chan Export, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exps <- mustOpen(t, x, []string{"v", "v@2"}[i%2])
		}()
	}
	close(p.gate)
	wg.Wait()
	close(exps)
	if n := p.openCount("k2"); n != 1 {
		t.Fatalf("%d clients of one point in time: opened %d times, want once", clients, n)
	}
	var handles []Export
	for e := range exps {
		b := make([]byte, e.Size())
		if _, err := e.ReadAt(b, 0); err != nil || string(b) != "second!" {
			t.Fatalf("a shared export reads %q, %v", b, err)
		}
		handles = append(handles, e)
	}
	if st := x.Stats(); st.Built != 1 || st.Open != 1 || st.IndexBytes != 100 {
		t.Fatalf("Stats: %+v, want 1 built, 1 open, 100 index bytes", st)
	}
	for _, e := range handles {
		e.Close()
		e.Close() // a second close of a handle does nothing
	}
	select {
	case k := <-p.closed:
		t.Fatalf("the point in time %s was closed with its last client: want it kept idle", k)
	default:
	}
	e := mustOpen(t, x, "v@2") // idle: not opened again
	if n := p.openCount("k2"); n != 1 {
		t.Fatalf("an idle point in time was opened again (%d opens)", n)
	}
	e.Close()

	if e, err := x.Open("v@9"); e != nil || err != nil {
		t.Fatalf("Open of an unknown name: %v, %v; want nil, nil", e, err)
	}
	if _, err := x.Open("broken"); err == nil || !strings.Contains(log.String(), `opening export "broken": the catalog of /store cannot be read`) {
		t.Fatalf("Open of a name that cannot be found: %v; log:\n%s", err, log.String())
	}
	p.fail["k1"] = errors.New("damaged file /store/volumes/v/1-k1.tbk")
	if _, err := x.Open("v@1"); err == nil || !strings.Contains(log.String(), `opening export "v@1": damaged file`) {
		t.Fatalf("Open of a point in time that cannot be opened: %v; log:\n%s", err, log.String())
	}
	e = mustOpen(t, x, "v@1") // tried again
	if n := p.openCount("k1"); n != 2 {
		t.Fatalf("a point in time that failed to open was not tried again: %d opens", n)
	}
	e.Close()
	if st := x.Stats(); st.Built != 3 || st.Open != 2 {
		t.Fatalf("Stats: %+v, want 3 built, 2 open", st)
	}
	if err := x.Close(); err != nil {
		t.Fatal(err)
	}
	closed := map[string]bool{<-p.closed: true, <-p.closed: true}
	if !closed["k1"] || !closed["k2"] {
		t.Fatalf("Close closed %v, want k1 and k2", closed)
	}
}

// TestSharedIdle: of the points in time no client has open, the oldest
// beyond the most kept idle are closed, and any once its time is up; a
// client that opens one again before takes it back.
func TestSharedIdle(t *testing.T) {
	p := &testPoints{names: map[string]string{}, data: map[string][]byte{}, fail: map[string]error{},
		opens: map[string]int{}, closed: make(chan string, 100)}
	for i := range 4 {
		k := fmt.Sprint("k", i)
		p.names[k], p.data[k] = k, []byte(k)
	}
	x := NewShared(p, nil)
	x.max = 2
	for i := range 3 {
		mustOpen(t, x, fmt.Sprint("k", i)).Close()
	}
	if k := <-p.closed; k != "k0" {
		t.Fatalf("3 idle, 2 kept: %s closed, want the oldest, k0", k)
	}
	mustOpen(t, x, "k1").Close() // taken back: k1 is now the newest
	mustOpen(t, x, "k3").Close()
	if k := <-p.closed; k != "k2" {
		t.Fatalf("%s closed, want k2, the oldest idle", k)
	}
	if n := p.openCount("k1"); n != 1 {
		t.Fatalf("k1 opened %d times, want once", n)
	}

	x.ttl = time.Nanosecond // every one idle from now on is closed at once
	e := mustOpen(t, x, "k0")
	e.Close()
	got := map[string]bool{}
	for len(got) < 1 || !got["k0"] {
		got[<-p.closed] = true
	}
	if st := x.Stats(); st.Open > 2 {
		t.Fatalf("Stats after the idle time: %+v", st)
	}
	x.Close()
}
