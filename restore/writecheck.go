package restore

import (
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"
)

// WriteError is a target that failed to store what an apply wrote to it
// (a bad sector, a failing or vanished device). Writes go through the page
// cache, and the kernel reports a failed write back only when it is waited
// for, without saying which page failed; From and To bound the bytes
// whose writing failed: those written since the last range known stored.
type WriteError struct {
	Target   string
	From, To int64
	Err      error
}

func (e *WriteError) Error() string {
	msg := fmt.Sprintf("target %s: storing the data written to bytes %d to %d failed: %v", e.Target, e.From, e.To, e.Err)
	if errors.Is(e.Err, syscall.EIO) {
		msg += " (a bad sector or a failing disk? see the kernel log, dmesg)"
	}
	return msg
}

func (e *WriteError) Unwrap() error { return e.Err }

// writeCheckWindow is how much an apply writes before it starts the write
// back of those bytes and waits for the window before them: a failure is
// then reported within about two windows of where it happened, not
// somewhere in everything written, and dirty pages do not pile up.
const writeCheckWindow = 8 << 20

// writeCheck follows the write back of an apply's ascending writes.
type writeCheck struct {
	init    bool
	off     bool  // sync_file_range is not supported here
	checked int64 // write back of the bytes written below it succeeded
	started int64 // write back of the bytes written below it has started
	written int64 // the end of the last write
}

// wrote notes a write ending at end; once a window is full it starts its
// write back and waits for the one before.
func (t *Target) wrote(off, end int64) error {
	c := &t.check
	if !c.init {
		c.init, c.checked, c.started = true, off, off
	}
	c.written = max(c.written, end)
	if c.off || c.written-c.started < writeCheckWindow {
		return nil
	}
	fd := int(t.f.Fd())
	prev := c.started
	if err := unix.SyncFileRange(fd, c.started, c.written-c.started, unix.SYNC_FILE_RANGE_WRITE); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ESPIPE) || errors.Is(err, unix.ENOSYS) {
			c.off = true // the final fsync checks everything
			return nil
		}
		return &WriteError{Target: t.Path, From: c.checked, To: c.written, Err: err}
	}
	c.started = c.written
	if prev == c.checked {
		return nil // the first window: nothing before it to wait for (a length of 0 would mean "to the end")
	}
	if err := unix.SyncFileRange(fd, c.checked, prev-c.checked, unix.SYNC_FILE_RANGE_WAIT_BEFORE); err != nil {
		// The error may be of the window just started: both are named.
		return &WriteError{Target: t.Path, From: c.checked, To: c.written, Err: err}
	}
	c.checked = prev
	return nil
}

// syncError is the error of a failed fsync of the target: a *WriteError
// naming the bytes not yet known stored when the apply wrote any.
func (t *Target) syncError(err error) error {
	if c := &t.check; c.init {
		return &WriteError{Target: t.Path, From: c.checked, To: c.written, Err: fmt.Errorf("fsync: %w", err)}
	}
	return fmt.Errorf("target %s: fsync: %w", t.Path, err)
}
