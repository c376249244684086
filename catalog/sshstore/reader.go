package sshstore

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/thinback/thinback/catalog"
)

// OpenDelta opens a delta file of the server's store for reading at any
// offset. Reads go to the server in blocks of 1 MiB, each one round
// trip, and the last blocks read are kept: archive's readers ask for a
// record's header and then its payload, a few bytes apart.
func (cl *Client) OpenDelta(file string) (catalog.DeltaReader, error) {
	a, err := cl.call(&msg{Op: opOpen, File: file})
	if err != nil {
		return nil, err
	}
	if a.Size < 0 {
		return nil, cl.fail(fmt.Errorf("%w: a file of %d bytes", ErrProtocol, a.Size))
	}
	return &remoteFile{cl: cl, name: cl.name + ":" + file, h: a.Handle, size: a.Size}, nil
}

// OpenStream opens a delta file for reading from its start to its end:
// OpenDelta's reader, read in order.
func (cl *Client) OpenStream(file string) (io.ReadCloser, error) { return cl.OpenDelta(file) }

// cachedBlocks is how many blocks a remoteFile keeps.
const cachedBlocks = 4

// remoteFile is a delta file of the server's store.
type remoteFile struct {
	cl   *Client
	name string
	h    uint64
	size int64

	mu     sync.Mutex
	pos    int64
	blocks [cachedBlocks]block
	next   int // the block slot to reuse
	closed bool
}

type block struct {
	off  int64
	data []byte
	ok   bool
}

func (f *remoteFile) Name() string { return f.name }

func (f *remoteFile) ReadAt(p []byte, off int64) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.readAt(p, off)
}

func (f *remoteFile) readAt(p []byte, off int64) (int, error) {
	if f.closed {
		return 0, fmt.Errorf("%s: %w", f.name, ErrClosed)
	}
	if off < 0 {
		return 0, fmt.Errorf("%s: read at negative offset %d", f.name, off)
	}
	n := 0
	for n < len(p) {
		at := off + int64(n)
		if at >= f.size {
			return n, io.EOF
		}
		b, err := f.block(at - at%chunkSize)
		if err != nil {
			return n, err
		}
		k := copy(p[n:], b.data[at-b.off:])
		if k == 0 {
			// The server's file ends before the size it said.
			return n, fmt.Errorf("%s: %w at offset %d", f.name, io.ErrUnexpectedEOF, at)
		}
		n += k
	}
	return n, nil
}

// block returns the block at off, from the cache or the server.
func (f *remoteFile) block(off int64) (*block, error) {
	for i := range f.blocks {
		if f.blocks[i].ok && f.blocks[i].off == off {
			return &f.blocks[i], nil
		}
	}
	a, err := f.cl.call(&msg{Op: opReadAt, Handle: f.h, Off: off, Len: int(min(chunkSize, f.size-off))})
	if err != nil {
		return nil, fmt.Errorf("%s: reading at offset %d: %w", f.name, off, err)
	}
	b := &f.blocks[f.next]
	f.next = (f.next + 1) % cachedBlocks
	*b = block{off: off, data: a.Data, ok: true}
	return b, nil
}

func (f *remoteFile) Read(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(p) == 0 {
		return 0, nil
	}
	if f.pos >= f.size {
		return 0, io.EOF
	}
	n, err := f.readAt(p, f.pos)
	f.pos += int64(n)
	if errors.Is(err, io.EOF) && n > 0 {
		err = nil
	}
	return n, err
}

func (f *remoteFile) Seek(offset int64, whence int) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = f.pos + offset
	case io.SeekEnd:
		abs = f.size + offset
	default:
		return 0, fmt.Errorf("%s: seek: invalid whence %d", f.name, whence)
	}
	if abs < 0 {
		return 0, fmt.Errorf("%s: seek to negative offset %d", f.name, abs)
	}
	f.pos = abs
	return abs, nil
}

func (f *remoteFile) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	f.blocks = [cachedBlocks]block{}
	_, err := f.cl.call(&msg{Op: opCloseFile, Handle: f.h})
	return err
}
