package nbd

import "sync"

// readBudget is a counting semaphore of read units shared by the
// connections of a server, taken whole (a read takes all of its units at
// once, never some while waiting for the rest, which could deadlock two
// connections) and first come, first served.
type readBudget struct {
	mu      sync.Mutex
	limit   int64
	used    int64
	peak    int64
	waiters []*budgetWaiter
	// onWait, if set, is called (without mu held) when a read must wait.
	onWait func()
}

type budgetWaiter struct {
	n     int64
	ready chan struct{}
}

func newReadBudget(limit int64, onWait func()) *readBudget {
	return &readBudget{limit: limit, onWait: onWait}
}

// acquire takes n units (at most the limit), waiting for them until done
// is closed; it reports whether it took them.
func (b *readBudget) acquire(n int64, done <-chan struct{}) bool {
	b.mu.Lock()
	if len(b.waiters) == 0 && b.used+n <= b.limit {
		b.take(n)
		b.mu.Unlock()
		return true
	}
	w := &budgetWaiter{n: n, ready: make(chan struct{})}
	b.waiters = append(b.waiters, w)
	b.mu.Unlock()
	if b.onWait != nil {
		b.onWait()
	}
	select {
	case <-w.ready:
		return true
	case <-done:
		b.mu.Lock()
		defer b.mu.Unlock()
		select {
		case <-w.ready: // granted meanwhile: give it back
			b.used -= n
			b.grant()
		default:
			for i, x := range b.waiters {
				if x == w {
					b.waiters = append(b.waiters[:i], b.waiters[i+1:]...)
					break
				}
			}
			b.grant() // the first waiter may fit now
		}
		return false
	}
}

func (b *readBudget) take(n int64) {
	b.used += n
	b.peak = max(b.peak, b.used)
}

// release gives back n units.
func (b *readBudget) release(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.used -= n
	b.grant()
}

// grant hands units to the waiters first in line, while they fit.
func (b *readBudget) grant() {
	for len(b.waiters) > 0 && b.used+b.waiters[0].n <= b.limit {
		w := b.waiters[0]
		b.waiters = b.waiters[1:]
		b.take(w.n)
		close(w.ready)
	}
}

// BudgetState is the read budget of a server at one moment, in units of
// ReadSlot.
type BudgetState struct {
	Used    int64 // units in use
	Peak    int64 // the most ever in use at once
	Limit   int64
	Waiting int // reads waiting for units
}

func (b *readBudget) state() BudgetState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return BudgetState{Used: b.used, Peak: b.peak, Limit: b.limit, Waiting: len(b.waiters)}
}
