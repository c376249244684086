package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// testItem is an item of the pipelines under test.
type testItem struct {
	seq  int
	out  int
	buf  []byte // stands for an item's reusable buffers
	uses int
}

// checkNoLeak fails t if goroutines started during fn are still running
// after it. Goroutines that passed their last statement may take a few
// scheduler turns to disappear, so the count is read until it falls back;
// one that is blocked never does.
func checkNoLeak(t *testing.T, fn func()) {
	t.Helper()
	before := runtime.NumGoroutine()
	fn()
	n := 0
	for i := 0; i < 100000; i++ {
		if n = runtime.NumGoroutine(); n <= before {
			return
		}
		runtime.Gosched()
	}
	buf := make([]byte, 1<<20)
	t.Fatalf("%d goroutines before, %d after:\n%s", before, n, buf[:runtime.Stack(buf, true)])
}

// counting returns an Ordered over n items whose Work returns out = 2*seq
// after a random delay, and records what happens to the items.
type counting struct {
	t        *testing.T
	n        int
	made     atomic.Int32
	live     atomic.Int32 // items between Produce and the end of Consume
	maxLive  atomic.Int32
	busy     [MaxWorkers]atomic.Int32
	returned atomic.Bool // Run has returned: no stage may run
	next     int
	consumed []int
}

func (c *counting) pipeline(workers int, delay func(seq int) time.Duration) Ordered[*testItem] {
	return Ordered[*testItem]{
		Workers: workers,
		New: func() *testItem {
			c.made.Add(1)
			return &testItem{buf: make([]byte, 16)}
		},
		Produce: func(ctx context.Context, it *testItem) error {
			c.stageCheck("Produce")
			if c.next == c.n {
				return io.EOF
			}
			it.seq, it.out = c.next, -1
			it.uses++
			c.next++
			if n := c.live.Add(1); n > c.maxLive.Load() {
				c.maxLive.Store(n) // only this goroutine raises it
			}
			return nil
		},
		Work: func(w int, it *testItem) error {
			c.stageCheck("Work")
			if w < 0 || w >= WorkerCount(workers) {
				c.t.Errorf("worker number %d of %d", w, WorkerCount(workers))
			}
			if c.busy[w].Add(1) != 1 {
				c.t.Errorf("worker number %d used by two goroutines at once", w)
			}
			defer c.busy[w].Add(-1)
			if delay != nil {
				time.Sleep(delay(it.seq))
			}
			it.out = 2 * it.seq
			return nil
		},
		Consume: func(it *testItem) error {
			c.stageCheck("Consume")
			if it.out != 2*it.seq {
				c.t.Errorf("item %d consumed before its work was done (out %d)", it.seq, it.out)
			}
			c.consumed = append(c.consumed, it.seq)
			c.live.Add(-1)
			return nil
		},
	}
}

func (c *counting) stageCheck(stage string) {
	if c.returned.Load() {
		c.t.Errorf("%s ran after Run returned", stage)
	}
}

func (c *counting) run(ctx context.Context, p Ordered[*testItem]) error {
	err := p.Run(ctx)
	c.returned.Store(true)
	return err
}

func (c *counting) checkPrefix(k int) {
	c.t.Helper()
	if len(c.consumed) != k {
		c.t.Fatalf("%d items consumed, want %d", len(c.consumed), k)
	}
	for i, seq := range c.consumed {
		if seq != i {
			c.t.Fatalf("item %d consumed in place %d: %v", seq, i, c.consumed)
		}
	}
}

// TestOrderedOrder: whatever the workers' delays, items are consumed in
// the order produced, each once, with at most InFlight items alive and
// made, each worker number used by one goroutine at a time.
func TestOrderedOrder(t *testing.T) {
	r := testRand(t)
	for round := 0; round < 20; round++ {
		workers := 1 + r.Intn(MaxWorkers)
		n := r.Intn(300)
		delays := make([]time.Duration, n)
		for i := range delays {
			if r.Intn(3) == 0 {
				delays[i] = time.Duration(r.Intn(200)) * time.Microsecond
			}
		}
		checkNoLeak(t, func() {
			c := &counting{t: t, n: n}
			p := c.pipeline(workers, func(seq int) time.Duration { return delays[seq] })
			if round%2 == 1 {
				p.InFlight = 1 + r.Intn(3*workers)
			}
			if err := c.run(context.Background(), p); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			c.checkPrefix(n)
			inflight := p.InFlight
			if inflight == 0 {
				inflight = 2*WorkerCount(workers) + 2
			}
			if c.made.Load() > int32(inflight) || c.maxLive.Load() > int32(inflight) {
				t.Fatalf("round %d: %d items made, %d alive at once, in flight at most %d", round, c.made.Load(), c.maxLive.Load(), inflight)
			}
		})
	}
}

// TestOrderedErrorPrecedence: the earliest item's error wins, even when a
// later item fails first, and whichever stage fails it.
func TestOrderedErrorPrecedence(t *testing.T) {
	errEarly, errLate := errors.New("early item"), errors.New("late item")
	const early, late = 5, 9
	for _, tc := range []struct {
		name string
		// where each item fails: "work", "consume", "produce" or ""
		early, late string
		want        error
		consumed    int
	}{
		{"work, a later work failed first", "work", "work", errEarly, early},
		{"consume, a later work failed first", "consume", "work", errEarly, early},
		{"work, then a producer error", "work", "produce", errEarly, early},
		{"producer error after consumed items", "", "produce", errLate, late},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeak(t, func() {
				c := &counting{t: t, n: 1000}
				p := c.pipeline(4, nil)
				lateFailed := make(chan struct{})
				produce, work, consume := p.Produce, p.Work, p.Consume
				p.Produce = func(ctx context.Context, it *testItem) error {
					if tc.late == "produce" && c.next == late {
						return errLate
					}
					return produce(ctx, it)
				}
				p.Work = func(w int, it *testItem) error {
					switch {
					case it.seq == late && tc.late == "work":
						close(lateFailed)
						return errLate
					case it.seq == early && tc.late == "work":
						<-lateFailed // fail after the later item did
					}
					if it.seq == early && tc.early == "work" {
						return errEarly
					}
					return work(w, it)
				}
				p.Consume = func(it *testItem) error {
					if it.seq == early && tc.early == "consume" {
						if tc.late == "work" {
							<-lateFailed
						}
						return errEarly
					}
					return consume(it)
				}
				err := c.run(context.Background(), p)
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				c.checkPrefix(tc.consumed)
				if c.next > early+40 && tc.want == errEarly {
					t.Fatalf("%d items produced after item %d failed", c.next, early)
				}
			})
		})
	}
}

// TestOrderedCancel: cancelling the context stops every stage, wherever
// they are: a producer that never ends, workers, a producer waiting.
func TestOrderedCancel(t *testing.T) {
	t.Run("from Consume", func(t *testing.T) {
		checkNoLeak(t, func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := &counting{t: t, n: -1} // never ends
			p := c.pipeline(3, nil)
			consume := p.Consume
			p.Consume = func(it *testItem) error {
				if it.seq == 50 {
					cancel()
				}
				return consume(it)
			}
			if err := c.run(ctx, p); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v", err)
			}
			c.checkPrefix(51)
		})
	})
	t.Run("producer waiting", func(t *testing.T) {
		checkNoLeak(t, func() {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			c := &counting{t: t, n: -1}
			p := c.pipeline(2, nil)
			produce, consume := p.Produce, p.Consume
			p.Produce = func(pctx context.Context, it *testItem) error {
				if c.next == 10 {
					<-pctx.Done() // waits for input that never comes
					return pctx.Err()
				}
				return produce(pctx, it)
			}
			p.Consume = func(it *testItem) error {
				if it.seq == 9 {
					cancel()
				}
				return consume(it)
			}
			if err := c.run(ctx, p); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v", err)
			}
			c.checkPrefix(10)
		})
	})
	t.Run("workers busy", func(t *testing.T) {
		checkNoLeak(t, func() {
			ctx, cancel := context.WithCancel(context.Background())
			c := &counting{t: t, n: 1000}
			p := c.pipeline(4, nil)
			work := p.Work
			p.Work = func(w int, it *testItem) error {
				if it.seq == 20 {
					cancel()
				}
				return work(w, it)
			}
			if err := c.run(ctx, p); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v", err)
			}
			if len(c.consumed) > 20 {
				t.Fatalf("%d items consumed after the context was cancelled at item 20", len(c.consumed))
			}
		})
	})
	t.Run("before Run", func(t *testing.T) {
		checkNoLeak(t, func() {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			c := &counting{t: t, n: 10}
			if err := c.run(ctx, c.pipeline(2, nil)); !errors.Is(err, context.Canceled) {
				t.Fatalf("got %v", err)
			}
		})
	})
}

// TestOrderedReuse: items are made at most InFlight times and reused, so
// their buffers are too.
func TestOrderedReuse(t *testing.T) {
	c := &counting{t: t, n: 500}
	p := c.pipeline(2, nil)
	p.InFlight = 3
	var seen [][]byte
	consume := p.Consume
	p.Consume = func(it *testItem) error {
		seen = append(seen, it.buf)
		return consume(it)
	}
	if err := c.run(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if c.made.Load() > 3 {
		t.Fatalf("%d items made for 3 in flight", c.made.Load())
	}
	distinct := map[*byte]bool{}
	for _, b := range seen {
		distinct[&b[0]] = true
	}
	if len(distinct) > 3 {
		t.Fatalf("%d buffers used", len(distinct))
	}
}

func TestWorkerCount(t *testing.T) {
	for _, tc := range []struct{ n, want int }{{1, 1}, {5, 5}, {MaxWorkers, MaxWorkers}, {100, MaxWorkers}} {
		if got := WorkerCount(tc.n); got != tc.want {
			t.Errorf("WorkerCount(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
	if got := WorkerCount(0); got != min(runtime.GOMAXPROCS(0), MaxWorkers) {
		t.Errorf("WorkerCount(0) = %d with GOMAXPROCS %d", got, runtime.GOMAXPROCS(0))
	}
}

func ExampleOrdered() {
	// Square numbers on several cores; print them in order.
	next := 0
	err := Ordered[*[2]int]{
		New: func() *[2]int { return new([2]int) },
		Produce: func(_ context.Context, it *[2]int) error {
			if next == 5 {
				return io.EOF
			}
			it[0], next = next, next+1
			return nil
		},
		Work:    func(_ int, it *[2]int) error { it[1] = it[0] * it[0]; return nil },
		Consume: func(it *[2]int) error { fmt.Println(it[0], it[1]); return nil },
	}.Run(context.Background())
	fmt.Println(err)
	// Output:
	// 0 0
	// 1 1
	// 2 4
	// 3 9
	// 4 16
	// <nil>
}
