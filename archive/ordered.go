package archive

import (
	"context"
	"errors"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// MaxWorkers bounds the workers of an Ordered pipeline, and with them
// memory: each item in flight holds its buffers (a chunk of a volume and its
// compressed copy, a record's payload and data). Beyond this, disks are the
// limit.
const MaxWorkers = 12

// WorkerCount returns how many workers a pipeline runs when n are asked
// for: n, or one per CPU when n <= 0, and at most MaxWorkers.
func WorkerCount(n int) int {
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	return min(max(n, 1), MaxWorkers)
}

// Ordered is a pipeline of three stages over items of type T: Produce fills
// items one after another on one goroutine, Work processes them on several
// goroutines at once, and Consume takes them, on the goroutine that called
// Run, in the order in which they were produced. It is how Send, Scan,
// DigestSource, and restore's apply and merge keep every core busy while
// they read and write in order.
//
// Memory is bounded: at most InFlight items exist at once, made by New when
// first needed and handed back to Produce once consumed, so that an item's
// buffers are allocated once and reused.
//
// The result does not depend on scheduling. Run returns the error of the
// earliest item, in order, that failed, whichever stage failed it (an error
// of Produce counts as the item it was filling); Consume is never called for
// that item or any after it, and items after it are no longer produced or
// worked on. Cancelling ctx stops all three stages: Run then returns
// ctx.Err(), unless Consume had already failed.
//
// Run returns only after every goroutine it started has returned, so nothing
// uses an item, or anything the stages hold, afterwards. A stage blocked in
// a call that ignores cancellation (a read from a pipe) delays that return.
type Ordered[T any] struct {
	// Workers running Work at once; see WorkerCount.
	Workers int
	// InFlight bounds the items between Produce and the end of Consume;
	// 0 means 2×workers+2, which keeps every worker busy while Consume
	// waits for the earliest item.
	InFlight int
	// New makes an item; nil means the zero value of T.
	New func() T
	// Produce fills item, which may be one used before, with the next
	// piece of work, and returns io.EOF when there is none (the item is
	// then dropped). ctx is done when Run's ctx is or when Run has its
	// result: a Produce that waits for something should give up then.
	Produce func(ctx context.Context, item T) error
	// Work processes an item. It runs on up to Workers goroutines at once,
	// each with its own number in [0, workers), so that it can keep state
	// that is not safe for concurrent use (a compressor) in a slice
	// indexed by it. nil means no work.
	Work func(worker int, item T) error
	// Consume takes the items in order. The item is reused once Consume
	// returns: keep nothing of it.
	Consume func(item T) error
}

// errSkipped marks an item after one that failed: it is never consumed.
var errSkipped = errors.New("archive: item after a failed one")

type orderedSlot[T any] struct {
	item T
	made bool
	seq  int64
	err  error
	done chan struct{} // one send per use: Work is done
}

// Run runs the pipeline until Produce returns io.EOF and every item was
// consumed, or until the first error.
func (p Ordered[T]) Run(ctx context.Context) error {
	workers := WorkerCount(p.Workers)
	inflight := p.InFlight
	if inflight <= 0 {
		inflight = 2*workers + 2
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Channels have room for every slot, so that no send on them blocks.
	free := make(chan *orderedSlot[T], inflight)
	order := make(chan *orderedSlot[T], inflight)
	work := make(chan *orderedSlot[T], inflight)
	for range inflight {
		free <- &orderedSlot[T]{done: make(chan struct{}, 1)}
	}
	var failed atomic.Int64 // the earliest item whose Work failed
	failed.Store(math.MaxInt64)
	var prodErr error // set before order is closed
	var wg sync.WaitGroup

	wg.Add(1 + workers)
	go func() {
		defer wg.Done()
		prodErr = p.produce(ctx, free, order, work, &failed)
		close(work)
		close(order)
	}()
	for w := range workers {
		go func() {
			defer wg.Done()
			for s := range work {
				switch {
				case ctx.Err() != nil:
					s.err = ctx.Err()
				case s.seq > failed.Load():
					s.err = errSkipped
				case p.Work != nil:
					if s.err = p.Work(w, s.item); s.err != nil {
						for old := failed.Load(); s.seq < old && !failed.CompareAndSwap(old, s.seq); old = failed.Load() {
						}
					}
				}
				s.done <- struct{}{}
			}
		}()
	}

	err := func() error {
		for s := range order {
			select {
			case <-s.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			if s.err != nil {
				return s.err
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := p.Consume(s.item); err != nil {
				return err
			}
			free <- s
		}
		return nil
	}()
	cancel()
	wg.Wait()
	if err == nil {
		// Every item produced was consumed: the producer's own error, if
		// any, comes after them all.
		err = prodErr
	}
	return err
}

func (p Ordered[T]) produce(ctx context.Context, free <-chan *orderedSlot[T], order, work chan<- *orderedSlot[T], failed *atomic.Int64) error {
	for seq := int64(0); seq <= failed.Load(); seq++ {
		var s *orderedSlot[T]
		select {
		case s = <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !s.made {
			if p.New != nil {
				s.item = p.New()
			}
			s.made = true
		}
		if err := p.Produce(ctx, s.item); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		s.seq, s.err = seq, nil
		order <- s
		work <- s
	}
	return nil // an item failed: nothing after it is needed
}
