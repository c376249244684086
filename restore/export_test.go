package restore

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"github.com/thinback/thinback/archive"
)

// mergeStats lets tests see how many records a merge held at once.
type mergeStats struct {
	maxLive atomic.Int64
	slots   int64
	once    sync.Once
}

func (s *mergeStats) observe(n, slots int64) {
	s.once.Do(func() { s.slots = slots })
	for old := s.maxLive.Load(); n > old && !s.maxLive.CompareAndSwap(old, n); old = s.maxLive.Load() {
	}
}

// merge is Merge, telling stats what it holds.
func merge(ctx context.Context, out io.Writer, inputs []Input, opts MergeOptions, stats *mergeStats) (*archive.Header, archive.Trailer, error) {
	if stats != nil {
		opts.held = stats.observe
	}
	return Merge(ctx, out, inputs, opts)
}
