package lvmthin

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/thinback/thinback/archive"
)

// testRand returns a random source for a test and logs its seed; set
// THINBACK_SEED to replay a run.
func testRand(t testing.TB) *rand.Rand {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THINBACK_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with THINBACK_SEED=%d)", seed, seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// extentLister is what collectExtents reads.
type extentLister interface {
	Next() (archive.Extent, error)
}

func collectExtents(t testing.TB, x extentLister) []archive.Extent {
	t.Helper()
	var out []archive.Extent
	for {
		e, err := x.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		out = append(out, e)
	}
}

// ext builds an extent in 64 KiB blocks, the unit of the fixtures.
func ext(kind archive.Kind, begin, end int64) archive.Extent {
	const unit = 64 << 10
	return archive.Extent{Offset: begin * unit, Length: (end - begin) * unit, Kind: kind}
}

const (
	D = archive.KindData
	Z = archive.KindZero
)

// checkExtentInvariants checks what archive.Source promises and what
// Discover adds: ascending, non-overlapping, non-empty, merged, inside
// [0, size), and covering [cover, size) completely.
func checkExtentInvariants(exts []archive.Extent, size, cover int64) error {
	var prev archive.Extent
	pos := cover
	for i, e := range exts {
		switch {
		case e.Length <= 0:
			return fmt.Errorf("extent %d %+v is empty", i, e)
		case e.Kind != archive.KindData && e.Kind != archive.KindZero:
			return fmt.Errorf("extent %d %+v has kind %v", i, e, e.Kind)
		case e.Offset < 0 || e.End() > size || e.End() < e.Offset:
			return fmt.Errorf("extent %d %+v outside [0, %d)", i, e, size)
		case i > 0 && e.Offset < prev.End():
			return fmt.Errorf("extent %d %+v overlaps or precedes %+v", i, e, prev)
		case i > 0 && e.Offset == prev.End() && e.Kind == prev.Kind:
			return fmt.Errorf("extent %d %+v not merged with %+v", i, e, prev)
		}
		if e.End() > cover {
			if e.Offset > pos {
				return fmt.Errorf("gap [%d, %d) in the region that must be covered", pos, e.Offset)
			}
			pos = max(pos, e.End())
		}
		prev = e
	}
	if pos < size {
		return fmt.Errorf("region [%d, %d) not covered", pos, size)
	}
	return nil
}
