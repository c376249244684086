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
	Done()
}

type noProgress struct{}

func (noProgress) Add(int64) {}
func (noProgress) Done()     {}

// newProgress returns a redrawing progress line on a terminal, else a
// no-op. total may be 0 when unknown.
func newProgress(w io.Writer, quiet bool, verb string, total int64) progress {
	f, ok := w.(*os.File)
	if quiet || !ok || !term.IsTerminal(int(f.Fd())) {
		return noProgress{}
	}
	p := &ttyProgress{w: w, verb: verb, total: total, start: time.Now(), stop: make(chan struct{})}
	p.wg.Add(1)
	go p.run()
	return p
}

type ttyProgress struct {
	w     io.Writer
	verb  string
	total int64
	done  atomic.Int64
	start time.Time
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
}

func (p *ttyProgress) Add(n int64) { p.done.Add(n) }

func (p *ttyProgress) run() {
	defer p.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
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
	done := p.done.Load()
	el := time.Since(p.start).Seconds()
	line := fmt.Sprintf("%s %s", p.verb, bytesHuman(done))
	if p.total > 0 {
		line += fmt.Sprintf(" of %s (%.0f%%)", bytesHuman(p.total), 100*float64(done)/float64(p.total))
	}
	if el > 0 {
		line += fmt.Sprintf(", %s/s", bytesHuman(int64(float64(done)/el)))
	}
	fmt.Fprintf(p.w, "\r\033[K%s", line)
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
