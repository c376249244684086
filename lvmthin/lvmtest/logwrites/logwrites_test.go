package logwrites

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"math/rand"
	"os"
	"strconv"
	"testing"
	"time"
)

var seedFlag = flag.Int64("seed", 0, "random seed (0: a new one; also THINBACK_SEED)")

func testSeed(t *testing.T) int64 {
	t.Helper()
	seed := *seedFlag
	if v := os.Getenv("THINBACK_SEED"); seed == 0 && v != "" {
		var err error
		if seed, err = strconv.ParseInt(v, 10, 64); err != nil {
			t.Fatalf("THINBACK_SEED=%q: %v", v, err)
		}
	}
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("random seed %d (replay with -seed %d or THINBACK_SEED=%d)", seed, seed, seed)
	return seed
}

// kernelLog writes a log as dm-log-writes does (drivers/md/dm-log-writes.c):
// a super sector, then each entry's sector followed by its data. It keeps
// the device's contents after every entry, the model a replay must match.
type kernelLog struct {
	ss     int
	buf    []byte
	n      uint64
	dev    []byte   // the device now
	states [][]byte // the device after each entry
}

func newKernelLog(ss int, start []byte) *kernelLog {
	return &kernelLog{ss: ss, buf: make([]byte, ss), dev: bytes.Clone(start)}
}

func (k *kernelLog) entry(sector, count, flags uint64, mark string, data []byte) {
	e := make([]byte, k.ss)
	le := binary.LittleEndian
	le.PutUint64(e[0:], sector)
	le.PutUint64(e[8:], count)
	le.PutUint64(e[16:], flags)
	le.PutUint64(e[24:], uint64(len(mark)))
	copy(e[32:], mark)
	k.buf = append(append(k.buf, e...), data...)
	k.n++
	switch {
	case flags&FlagDiscard != 0:
		clear(k.dev[int(sector)*k.ss : int(sector+count)*k.ss])
	case len(data) > 0:
		copy(k.dev[int(sector)*k.ss:], data)
	}
	k.states = append(k.states, bytes.Clone(k.dev))
}

func (k *kernelLog) write(sector uint64, data []byte, flags uint64) {
	k.entry(sector, uint64(len(data)/k.ss), flags, "", data)
}
func (k *kernelLog) flush()                       { k.entry(0, 0, FlagFlush, "", nil) }
func (k *kernelLog) discard(sector, count uint64) { k.entry(sector, count, FlagDiscard, "", nil) }
func (k *kernelLog) mark(name string)             { k.entry(0, 0, FlagMark, name, nil) }

// bytes returns the log with its super saying it has n entries.
func (k *kernelLog) bytes(n uint64) []byte {
	b := bytes.Clone(k.buf)
	le := binary.LittleEndian
	le.PutUint64(b[0:], Magic)
	le.PutUint64(b[8:], Version)
	le.PutUint64(b[16:], n)
	le.PutUint32(b[24:], uint32(k.ss))
	return b
}

// memDev is a device image in memory that refuses writes past its end.
type memDev []byte

func (m memDev) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m)) {
		return 0, errors.New("write past the end of the device")
	}
	return copy(m[off:], p), nil
}

func TestEntriesPointsMarks(t *testing.T) {
	k := newKernelLog(512, make([]byte, 8192))
	k.write(2, bytes.Repeat([]byte{1}, 1024), 0)                // 0
	k.write(0, bytes.Repeat([]byte{2}, 512), FlagMetadata)      // 1
	k.flush()                                                   // 2
	k.mark("after-flush")                                       // 3
	k.write(8, bytes.Repeat([]byte{3}, 512), FlagFUA)           // 4
	k.discard(2, 1)                                             // 5
	k.write(4, bytes.Repeat([]byte{4}, 512), FlagFlush|FlagFUA) // 6: a flush with data
	k.mark(EndMark)                                             // 7
	b := k.bytes(k.n)
	l, err := Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Entries) != 8 || l.SectorSize != 512 {
		t.Fatalf("%d entries of sector size %d, want 8 of 512", len(l.Entries), l.SectorSize)
	}
	if got, want := l.Points(), []int{2, 4, 6}; !equalInts(got, want) {
		t.Errorf("points %v, want %v", got, want)
	}
	if i, ok := l.Mark("after-flush"); !ok || i != 3 {
		t.Errorf("mark after-flush at %d (%v), want 3", i, ok)
	}
	if i, ok := l.Mark(EndMark); !ok || i != 7 {
		t.Errorf("end mark at %d (%v), want 7", i, ok)
	}
	if _, ok := l.Mark("nowhere"); ok {
		t.Errorf("a mark that was never logged was found")
	}
	wantStr := []string{"#0 write sector 2 count 2", "#1 write+meta sector 0 count 1", "#2 flush sector 0 count 0",
		`#3 mark "after-flush"`, "#4 write+fua sector 8 count 1", "#5 discard sector 2 count 1",
		"#6 write+flush+fua sector 4 count 1", `#7 mark "dm-log-writes-end"`}
	for i, e := range l.Entries {
		if e.String() != wantStr[i] {
			t.Errorf("entry %d is %q, want %q", i, e.String(), wantStr[i])
		}
	}
	dev := make(memDev, 8192)
	p := NewReplayer(l, dev, int64(len(dev)))
	for i := range l.Entries {
		if err := p.ReplayTo(i); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dev, k.states[i]) {
			t.Fatalf("after entry %d the device differs from the model", i)
		}
	}
	if err := p.ReplayTo(2); err == nil {
		t.Errorf("replaying backwards was accepted")
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestReplayRandom replays random logs to every flush and FUA point, each
// point from a fresh replay and all points from one forward replay, and
// compares the device with the model at each.
func TestReplayRandom(t *testing.T) {
	r := rand.New(rand.NewSource(testSeed(t)))
	for round := 0; round < 40; round++ {
		ss := []int{512, 4096}[r.Intn(2)]
		sectors := 16 + r.Intn(64)
		start := make([]byte, ss*sectors)
		r.Read(start)
		k := newKernelLog(ss, start)
		for i := 0; i < 5+r.Intn(60); i++ {
			switch c := r.Intn(10); {
			case c < 6:
				n := 1 + r.Intn(min(8, sectors))
				data := make([]byte, n*ss)
				r.Read(data)
				flags := []uint64{0, 0, FlagMetadata, FlagFUA, FlagFlush | FlagFUA}[r.Intn(5)]
				k.write(uint64(r.Intn(sectors-n+1)), data, flags)
			case c < 8:
				k.flush()
			case c < 9:
				n := 1 + r.Intn(min(8, sectors))
				k.discard(uint64(r.Intn(sectors-n+1)), uint64(n))
			default:
				k.mark("m" + strconv.Itoa(i))
			}
		}
		b := k.bytes(k.n)
		l, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		fwd := memDev(bytes.Clone(start))
		p := NewReplayer(l, fwd, int64(len(fwd)))
		for _, i := range l.Points() {
			if !l.Entries[i].Flushed() {
				t.Fatalf("round %d: point %d is %s", round, i, l.Entries[i])
			}
			if err := p.ReplayTo(i); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if !bytes.Equal(fwd, k.states[i]) {
				t.Fatalf("round %d: forward replay to entry %d differs from the model", round, i)
			}
			fresh := memDev(bytes.Clone(start))
			if err := NewReplayer(l, fresh, int64(len(fresh))).ReplayTo(i); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			if !bytes.Equal(fresh, k.states[i]) {
				t.Fatalf("round %d: fresh replay to entry %d differs from the model", round, i)
			}
		}
	}
}

func TestReadErrors(t *testing.T) {
	good := func() *kernelLog {
		k := newKernelLog(512, make([]byte, 4096))
		k.write(1, make([]byte, 1024), 0)
		k.flush()
		return k
	}
	le := binary.LittleEndian
	for _, c := range []struct {
		name string
		log  func() []byte
		want error
	}{
		{"empty", func() []byte { return nil }, ErrTruncated},
		{"magic", func() []byte { b := good().bytes(2); b[0] ^= 1; return b }, ErrFormat},
		{"version", func() []byte { b := good().bytes(2); le.PutUint64(b[8:], 2); return b }, ErrFormat},
		{"sector size 0", func() []byte { b := good().bytes(2); le.PutUint32(b[24:], 0); return b }, ErrFormat},
		{"sector size 1000", func() []byte { b := good().bytes(2); le.PutUint32(b[24:], 1000); return b }, ErrFormat},
		{"sector size 1 MiB", func() []byte { b := good().bytes(2); le.PutUint32(b[24:], 1<<20); return b }, ErrFormat},
		{"more entries than fit", func() []byte { return good().bytes(1 << 62) }, ErrTruncated},
		{"one entry too many", func() []byte { return good().bytes(3) }, ErrTruncated},
		{"data cut", func() []byte { b := good().bytes(2); return b[:512+512+512] }, ErrTruncated},
		{"data larger than the log", func() []byte {
			b := good().bytes(2)
			le.PutUint64(b[512+8:], 1<<60)
			return b
		}, ErrTruncated},
		{"unknown flag", func() []byte { b := good().bytes(2); le.PutUint64(b[512+16:], 1<<9); return b }, ErrFormat},
		{"inline data", func() []byte { b := good().bytes(2); le.PutUint64(b[512+24:], 5); return b }, ErrFormat},
		{"mark too long", func() []byte {
			k := newKernelLog(512, nil)
			k.mark("x")
			b := k.bytes(1)
			le.PutUint64(b[512+24:], 512)
			return b
		}, ErrFormat},
		{"mark with data", func() []byte {
			k := newKernelLog(512, nil)
			k.mark("x")
			b := k.bytes(1)
			le.PutUint64(b[512+8:], 1)
			return b
		}, ErrFormat},
		{"flushing discard", func() []byte {
			k := newKernelLog(512, make([]byte, 4096))
			k.discard(0, 1)
			b := k.bytes(1)
			le.PutUint64(b[512+16:], FlagDiscard|FlagFlush)
			return b
		}, ErrFormat},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := c.log()
			_, err := Read(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

func TestReplayOutsideDevice(t *testing.T) {
	for _, c := range []struct {
		name  string
		build func(k *kernelLog)
	}{
		{"write past the end", func(k *kernelLog) { k.write(7, make([]byte, 1024), 0) }},
		{"write far past the end", func(k *kernelLog) { k.write(1<<60, make([]byte, 512), 0) }},
		{"discard past the end", func(k *kernelLog) { k.entry(4, 1<<62, FlagDiscard, "", nil) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := newKernelLog(512, make([]byte, 1<<20)) // the model's device is larger
			c.build(k)
			b := k.bytes(1)
			l, err := Read(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			dev := make(memDev, 4096)
			if err := NewReplayer(l, dev, int64(len(dev))).ReplayTo(0); !errors.Is(err, ErrRange) {
				t.Fatalf("got %v, want ErrRange", err)
			}
		})
	}
}

func FuzzRead(f *testing.F) {
	k := newKernelLog(512, make([]byte, 8192))
	k.write(2, bytes.Repeat([]byte{1}, 1024), 0)
	k.flush()
	k.mark("m")
	k.write(8, bytes.Repeat([]byte{3}, 512), FlagFUA)
	k.discard(2, 1)
	f.Add(k.bytes(k.n))
	k4 := newKernelLog(4096, make([]byte, 8192))
	k4.write(1, bytes.Repeat([]byte{5}, 4096), FlagFlush|FlagFUA)
	f.Add(k4.bytes(k4.n))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := Read(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			if !errors.Is(err, ErrFormat) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("an error of neither kind: %v", err)
			}
			return
		}
		for _, e := range l.Entries {
			if e.Flags&(FlagMark|FlagDiscard) == 0 && e.dataOff+int64(e.NrSectors)*l.SectorSize > int64(len(b)) {
				t.Fatalf("%s: its data ends past the log", e)
			}
		}
		dev := make(memDev, 64<<10)
		if len(l.Entries) > 0 {
			if err := NewReplayer(l, dev, int64(len(dev))).ReplayTo(len(l.Entries) - 1); err != nil && !errors.Is(err, ErrRange) {
				t.Fatalf("replay: %v", err)
			}
		}
	})
}
