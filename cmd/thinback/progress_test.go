package main

import (
	"bytes"
	"testing"
	"time"
)

// TestProgressDoneTwice: ending a progress line twice (an error path and a
// deferred call) neither panics nor draws again.
func TestProgressDoneTwice(t *testing.T) {
	var buf bytes.Buffer
	p := &ttyProgress{w: &buf, verb: "sent", start: time.Now(), stop: make(chan struct{})}
	p.total.Store(100)
	p.wg.Add(1)
	go p.run()
	p.Add(50)
	p.Done()
	n := buf.Len()
	p.Done()
	if buf.Len() != n {
		t.Errorf("the second Done wrote %q", buf.Bytes()[n:])
	}
}
