package nbd

import (
	"container/list"
	"sync"
	"time"
)

// How long, and how many, points in time no client has open stay open:
// NBD_OPT_INFO then NBD_OPT_GO, or a client that reconnects, finds its
// point in time ready (its index built).
const (
	idleExportTTL = time.Minute
	idleExports   = 8
)

// Points are the points in time a Shared offers: their names, and what
// each name stands for.
type Points interface {
	// List returns the export names.
	List() ([]string, error)
	// Find resolves an export name to the point in time it stands for:
	// key identifies it (every name of one point in time has the same
	// key, and other bytes another), open opens it. An empty key and no
	// error mean there is no such export.
	Find(name string) (key string, open func() (Export, error), err error)
}

// Shared are Exports whose points in time are each opened once, however
// many clients read them: the clients of one key share one Export (its
// ReadAt must allow concurrent calls). The last client to close it
// leaves it open, idle, for a minute among the eight most recent, so
// that NBD_OPT_INFO then NBD_OPT_GO, or a client reconnecting, does not
// open it again.
type Shared struct {
	points Points
	logf   func(string, ...any)
	ttl    time.Duration
	max    int

	mu    sync.Mutex
	open  map[string]*sharedExport // by key
	idle  list.List                // of *sharedExport no client has open, oldest first
	built int                      // points in time opened, ever
}

// sharedExport is a point in time open, shared by the clients that read
// it.
type sharedExport struct {
	key   string
	ready chan struct{} // closed once exp, or err, is set
	exp   Export
	err   error
	refs  int
	idle  *list.Element
	timer *time.Timer
}

// NewShared returns the Exports of points; logf, if not nil, is told
// why an export could not be opened (the client is not).
func NewShared(points Points, logf func(string, ...any)) *Shared {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	return &Shared{points: points, logf: logf, ttl: idleExportTTL, max: idleExports, open: make(map[string]*sharedExport)}
}

// List returns the export names.
func (x *Shared) List() ([]string, error) { return x.points.List() }

// Open opens the export name, or gives a client another handle on it.
func (x *Shared) Open(name string) (Export, error) {
	key, open, err := x.points.Find(name)
	if err != nil {
		x.logf("opening export %q: %v", name, err)
		return nil, err
	}
	if key == "" {
		return nil, nil
	}
	x.mu.Lock()
	e := x.open[key]
	if e == nil {
		e = &sharedExport{key: key, ready: make(chan struct{}), refs: 1}
		x.open[key] = e
		x.built++
		x.mu.Unlock()
		x.build(e, open)
	} else {
		e.refs++
		if e.idle != nil {
			x.idle.Remove(e.idle)
			e.idle = nil
			e.timer.Stop()
		}
		x.mu.Unlock()
		<-e.ready
	}
	if e.err != nil {
		x.release(e)
		x.logf("opening export %q: %v", name, e.err)
		return nil, e.err
	}
	return &sharedHandle{e: e, x: x}, nil
}

// build opens the point in time of e; on failure it takes e out of the
// exports open, so that the next client tries again.
func (x *Shared) build(e *sharedExport, open func() (Export, error)) {
	defer close(e.ready)
	exp, err := open()
	if err != nil {
		e.err = err
		x.mu.Lock()
		if x.open[e.key] == e {
			delete(x.open, e.key)
		}
		x.mu.Unlock()
		return
	}
	e.exp = exp
}

// release is a client's close of e: the last one leaves e open, idle,
// for x.ttl, among the x.max most recent.
func (x *Shared) release(e *sharedExport) {
	x.mu.Lock()
	defer x.mu.Unlock()
	e.refs--
	if e.refs > 0 {
		return
	}
	if e.err != nil || x.open[e.key] != e {
		e.close()
		return
	}
	e.idle = x.idle.PushBack(e)
	e.timer = time.AfterFunc(x.ttl, func() {
		x.mu.Lock()
		defer x.mu.Unlock()
		if e.idle != nil && e.refs == 0 {
			x.evict(e)
		}
	})
	for x.idle.Len() > x.max {
		x.evict(x.idle.Front().Value.(*sharedExport))
	}
}

// evict closes an idle export; x.mu is held.
func (x *Shared) evict(e *sharedExport) {
	x.idle.Remove(e.idle)
	e.idle = nil
	e.timer.Stop()
	delete(x.open, e.key)
	e.close()
}

func (e *sharedExport) close() {
	if e.exp != nil {
		e.exp.Close()
		e.exp = nil
	}
}

// Close closes the exports no client has open; call it once the server
// has stopped.
func (x *Shared) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	for x.idle.Len() > 0 {
		x.evict(x.idle.Front().Value.(*sharedExport))
	}
	return nil
}

// SharedStats is what the open exports hold: how many points in time
// were ever opened, how many are open, and the memory of their indexes
// (of the Exports that tell it with an IndexBytes method).
type SharedStats struct {
	Built, Open int
	IndexBytes  int64
}

// Stats returns what the open exports hold.
func (x *Shared) Stats() SharedStats {
	x.mu.Lock()
	defer x.mu.Unlock()
	st := SharedStats{Built: x.built, Open: len(x.open)}
	for _, e := range x.open {
		select {
		case <-e.ready:
			if ib, ok := e.exp.(interface{ IndexBytes() int64 }); ok {
				st.IndexBytes += ib.IndexBytes()
			}
		default:
		}
	}
	return st
}

// sharedHandle is a client's handle on a shared point in time.
type sharedHandle struct {
	e    *sharedExport
	x    *Shared
	once sync.Once
}

func (p *sharedHandle) ReadAt(b []byte, off int64) (int, error) { return p.e.exp.ReadAt(b, off) }

func (p *sharedHandle) Size() int64 { return p.e.exp.Size() }

func (p *sharedHandle) Close() error {
	p.once.Do(func() { p.x.release(p.e) })
	return nil
}
