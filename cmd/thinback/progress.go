package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thinback/thinback/cmd/internal/backup"
	"golang.org/x/term"
)

// progress reports how much of a job is done. The no-op one is used when
// stderr is not a terminal: cron jobs get one summary line, not a stream
// of carriage returns.
type progress interface {
	Add(n int64)
	// At sets how much is done, and the total when it is learnt late (0:
	// keep the one known), for work measured by position: an apply writes
	// a volume in order, so how far it is through it tells the time left.
	At(done, total int64)
	Done()
}

type noProgress struct{}

func (noProgress) Add(int64)       {}
func (noProgress) At(int64, int64) {}
func (noProgress) Done()           {}

// newProgress returns a redrawing progress line on a terminal, else a
// no-op. total may be 0 when unknown. quiet is true with --quiet and with
// --json: the line is for people watching a terminal, never for a log or
// a program reading the output.
func newProgress(w io.Writer, quiet bool, verb string, total int64) progress {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return noProgress{}
	}
	p := &ttyProgress{w: w, verb: verb, start: time.Now(), stop: make(chan struct{})}
	p.total.Store(total)
	p.wg.Add(1)
	go p.run()
	return p
}

// redrawEvery is how often the line is redrawn: often enough to look
// alive, rarely enough to cost nothing and to be readable.
const redrawEvery = 250 * time.Millisecond

type ttyProgress struct {
	w     io.Writer
	verb  string
	total atomic.Int64
	done  atomic.Int64
	// from is where the first At found the work (an apply resumed at a
	// checkpoint): the rate counts only what this run did.
	from    atomic.Int64
	fromSet atomic.Bool
	start   time.Time
	stop    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex // a draw, or a line printed above the progress line
}

func (p *ttyProgress) Add(n int64) { p.done.Add(n) }

func (p *ttyProgress) At(done, total int64) {
	if p.fromSet.CompareAndSwap(false, true) {
		p.from.Store(done)
	}
	if total > 0 {
		p.total.Store(total)
	}
	p.done.Store(done)
}

func (p *ttyProgress) run() {
	defer p.wg.Done()
	t := time.NewTicker(redrawEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.draw()
		case <-p.stop:
			return
		}
	}
}

func (p *ttyProgress) draw() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "\r\033[K%s", progressLine(p.verb, p.done.Load(), p.total.Load(), p.from.Load(), time.Since(p.start)))
}

// progressLine is what the line says: done of total, the rate so far (of
// what was done since from, in elapsed) and, with a total, the time left
// at that rate ("sent 1.5 GiB of 4.0 GiB (37%), 120 MiB/s, 21s left").
func progressLine(verb string, done, total, from int64, elapsed time.Duration) string {
	line := fmt.Sprintf("%s %s", verb, bytesHuman(done))
	if total > 0 {
		line += fmt.Sprintf(" of %s (%.0f%%)", bytesHuman(total), 100*float64(done)/float64(total))
	}
	el := elapsed.Seconds()
	if el <= 0 || done <= from {
		return line
	}
	rate := float64(done-from) / el
	line += fmt.Sprintf(", %s/s", bytesHuman(int64(rate)))
	if total > done {
		left := time.Duration(float64(total-done) / rate * float64(time.Second))
		line += ", " + left.Round(time.Second).String() + " left"
	}
	return line
}

// Done stops the redraws and clears the line. Calling it again does
// nothing: error paths and deferred calls may both end a progress line.
func (p *ttyProgress) Done() {
	p.once.Do(func() {
		close(p.stop)
		p.wg.Wait()
		fmt.Fprint(p.w, "\r\033[K")
	})
}

// bytesHuman formats n in binary units.
func bytesHuman(n int64) string { return backup.BytesHuman(n) }

// above runs print, which writes whole lines to the terminal the progress
// line is on (a verdict on standard output), with the progress line erased
// first: it is drawn again below them at the next redraw.
func above(p progress, print func()) {
	t, ok := p.(*ttyProgress)
	if !ok {
		print()
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprint(t.w, "\r\033[K")
	print()
}

// progressWriter adds what is written to it to a progress (the other end
// of an io.TeeReader).
type progressWriter struct{ p progress }

func (w progressWriter) Write(b []byte) (int, error) {
	w.p.Add(int64(len(b)))
	return len(b), nil
}
