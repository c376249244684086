package main

import "fmt"

// worstExit is the exit status of several outcomes (volumes of a backup,
// jobs of a run): 0 if all are 0; otherwise 130 if any was interrupted;
// otherwise the highest code.
func worstExit(codes []int) int {
	worst := exitOK
	for _, c := range codes {
		if c == exitInterrupted {
			return exitInterrupted
		}
		worst = max(worst, c)
	}
	return worst
}

// multiError is the error of a command of several outcomes of which
// failed of total failed, each printed already where it happened: Main
// prints nothing more (it is a reportedError) and exits with code.
type multiError struct {
	code          int
	failed, total int
}

func (e multiError) Error() string {
	return fmt.Sprintf("%d of %d failed", e.failed, e.total)
}

// As makes a multiError a reportedError for errors.As.
func (e multiError) As(target any) bool {
	if r, ok := target.(*reportedError); ok {
		*r = reportedError{err: fmt.Errorf("%s", e.Error())}
		return true
	}
	return false
}
