package sshstore

import (
	"bytes"
	"context"
	"encoding/gob"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"

	"github.com/thinback/thinback/catalog"
)

// fakePeer is the other end of a connection, speaking raw messages.
type fakePeer struct {
	conn net.Conn
	c    *codec
}

func newPeers(t *testing.T) (net.Conn, *fakePeer) {
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, &fakePeer{conn: b, c: newCodec(b)}
}

// TestHostileServer: a server that answers with a message larger than
// any the protocol sends, or with nonsense, gets a clear ErrProtocol,
// and the client does not hold what it sent.
func TestHostileServer(t *testing.T) {
	// Encoded before the client's allocations are counted.
	var buf bytes.Buffer
	if err := gob.NewEncoder(&buf).Encode(&msg{Op: opReply, Data: make([]byte, 64<<20)}); err != nil {
		t.Fatal(err)
	}
	oversized := buf.Bytes()
	for _, tc := range []struct {
		name   string
		answer func(p *fakePeer) error
		want   error
	}{
		{"oversized", func(p *fakePeer) error {
			// Data of 64 MiB in one message: gob would read it whole.
			_, err := p.conn.Write(oversized)
			return err
		}, ErrProtocol},
		{"huge claimed length", func(p *fakePeer) error {
			// A message that says it is 7 GiB long, then stops.
			_, err := p.conn.Write([]byte{0xfc, 0x01, 0xc0, 0x00, 0x00, 0x00, 0x01, 0x02})
			p.conn.Close()
			return err
		}, ErrClosed},
		{"garbage", func(p *fakePeer) error {
			_, err := p.conn.Write(bytes.Repeat([]byte{0x7f, 0xff}, 1000))
			return err
		}, ErrProtocol},
		{"a request instead of an answer", func(p *fakePeer) error {
			return p.c.send(&msg{Op: opRemove})
		}, ErrProtocol},
		{"other version", func(p *fakePeer) error {
			return p.c.send(&msg{Op: opHello, Proto: Protocol, Version: Version + 1})
		}, ErrVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, p := newPeers(t)
			done := make(chan error, 1)
			go func() {
				if _, err := p.c.recv(); err != nil { // the hello
					done <- err
					return
				}
				err := tc.answer(p)
				if errors.Is(err, io.ErrClosedPipe) {
					err = nil // the client hung up while it was sent
				}
				done <- err
			}()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := NewClient(cc, "ssh://hostile/store")
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.want) {
				t.Errorf("NewClient: %v, want %v", err, tc.want)
			}
			p.conn.Close()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			// What the client read for the message is bounded by
			// maxMessage, whatever the server sent or announced.
			if grown := after.TotalAlloc - before.TotalAlloc; grown > 4*maxMessage {
				t.Errorf("the client allocated %d bytes reading one answer", grown)
			}
		})
	}
}

// TestHostileClient: a client that sends oversized messages, unknown
// requests or handles it was never given is cut off with ErrProtocol,
// and what it held is released.
func TestHostileClient(t *testing.T) {
	for _, tc := range []struct {
		name string
		send func(p *fakePeer) error
	}{
		{"oversized", func(p *fakePeer) error {
			return gob.NewEncoder(p.conn).Encode(&msg{Op: opPutKeySlot, Slots: []slot{{ID: "k", Data: make([]byte, 64<<20)}}})
		}},
		{"unknown request", func(p *fakePeer) error { return p.c.send(&msg{Op: opLast + 3}) }},
		{"an answer as a request", func(p *fakePeer) error { return p.c.send(&msg{Op: opReply}) }},
		{"unlock not held", func(p *fakePeer) error { return p.c.send(&msg{Op: opUnlock, Handle: 42}) }},
		{"read not opened", func(p *fakePeer) error { return p.c.send(&msg{Op: opReadAt, Handle: 7, Len: 10}) }},
		{"data of no write", func(p *fakePeer) error { return p.c.send(&msg{Op: opData, Handle: 3, Data: []byte("x")}) }},
		{"read too long", func(p *fakePeer) error {
			if err := p.c.send(&msg{Op: opLockVolume, Volume: "v"}); err != nil {
				return err
			}
			if _, err := p.c.recv(); err != nil {
				return err
			}
			return p.c.send(&msg{Op: opReadAt, Handle: 1, Len: 1 << 30})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := catalog.OpenStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			sc, p := newPeers(t)
			done := make(chan error, 1)
			go func() { done <- Serve(context.Background(), sc, s) }()
			if err := p.c.send(&msg{Op: opHello, Proto: Protocol, Version: Version}); err != nil {
				t.Fatal(err)
			}
			if _, err := p.c.recv(); err != nil {
				t.Fatal(err)
			}
			go func() {
				_ = tc.send(p)
			}()
			if err := <-done; !errors.Is(err, ErrProtocol) {
				t.Errorf("Serve: %v, want ErrProtocol", err)
			}
			// The volume lock a hostile client took is released.
			unlock, err := s.LockVolume("v")
			if err != nil {
				t.Fatalf("the lock after the client was cut off: %v", err)
			}
			unlock()
		})
	}
}

// FuzzRecv: whatever bytes arrive, reading a message returns one within
// the protocol's bounds or an error; it never panics.
func FuzzRecv(f *testing.F) {
	for _, m := range []*msg{
		{Op: opHello, Proto: Protocol, Version: Version},
		{Op: opReply, Snaps: []catalog.Snapshot{{ID: ids[0], Volume: "v", Seq: 1}}, More: true},
		{Op: opData, Handle: 1, Data: []byte("some bytes")},
		{Op: opReply, Checks: []wireCheck{{Problem: 3, Volume: "v", Err: &wireError{Msg: "x", Kinds: []uint8{1, 200}}}}},
		{Op: opPutKeySlot, Slots: []slot{{ID: "k", Data: []byte("slot")}}},
	} {
		var buf bytes.Buffer
		if err := gob.NewEncoder(&buf).Encode(m); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newCodec(struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(data), io.Discard})
		for i := 0; i < 4; i++ {
			m, err := c.recv()
			if err != nil {
				return
			}
			if m.Op == 0 || m.Op >= opLast || len(m.Data) > chunkSize {
				t.Fatalf("recv accepted %+v", m)
			}
			for _, ch := range m.Checks {
				_ = ch.problem().Error()
			}
			_ = m.Err.err()
		}
	})
}

// TestHostileCatalog: a server that sends a catalog larger than any
// store's is cut off, and the partial copy is removed.
func TestHostileCatalog(t *testing.T) {
	defer func(n int64) { maxCatalog = n }(maxCatalog)
	maxCatalog = 3 * chunkSize
	cc, p := newPeers(t)
	go func() {
		if _, err := p.c.recv(); err != nil {
			return
		}
		if err := p.c.send(&msg{Op: opHello, Proto: Protocol, Version: Version}); err != nil {
			return
		}
		if _, err := p.c.recv(); err != nil { // the View
			return
		}
		chunk := make([]byte, chunkSize)
		for {
			if err := p.c.send(&msg{Gen: generation{Tx: 7}, Data: chunk, More: true}); err != nil {
				return
			}
		}
	}()
	cl, err := NewClient(cc, "ssh://hostile/store")
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	err = cl.View(func(*catalog.Tx) error { return nil })
	if !errors.Is(err, ErrProtocol) {
		t.Fatalf("View of an endless catalog: %v, want ErrProtocol", err)
	}
	if got := dirEntries(t, cl.dir); len(got) != 0 {
		t.Errorf("left in the copy's directory: %v", got)
	}
}

// TestConnectionFails: a connection that fails under a client, whatever
// the failure (a broken pipe, a reset), is ErrClosed: what a command
// tells its user is that the store's host went away.
func TestConnectionFails(t *testing.T) {
	dir := t.TempDir()
	cl := serve(t, dir)
	cl.conn.Close() // this end: writes fail with io.ErrClosedPipe
	if _, err := cl.Files(); !errors.Is(err, ErrClosed) {
		t.Errorf("Files over a closed connection: %v, want ErrClosed", err)
	}
	if _, err := cl.LockVolume("v"); !errors.Is(err, ErrClosed) {
		t.Errorf("LockVolume after the connection failed: %v, want ErrClosed", err)
	}
}
