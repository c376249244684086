package dmioctl

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// kernelReply fills a buffer of size bytes as the kernel's
// retrieve_status (drivers/md/dm-ioctl.c) does for targets: each spec at
// an 8-byte boundary, its string after it, next the following spec's
// offset from data_start, DM_BUFFER_FULL_FLAG when one does not fit.
func kernelReply(t testing.TB, targets []Target, size int) []byte {
	t.Helper()
	buf, err := newRequest("vg0-pool-tpool", size, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := buf[headerSize:]
	out := 0
	used := 0
	for _, tg := range targets {
		if len(data)-out <= specSize {
			native.PutUint32(buf[offFlags:], native.Uint32(buf[offFlags:])|unix.DM_BUFFER_FULL_FLAG)
			break
		}
		spec := data[out:]
		native.PutUint64(spec[0:], tg.Start)
		native.PutUint64(spec[8:], tg.Length)
		copy(spec[24:specSize-1], tg.Type)
		out += specSize
		remaining := len(data) - out
		// The target writes at most remaining bytes, NUL included.
		s := tg.Params
		if len(s)+1 > remaining {
			s = s[:remaining-1]
		}
		copy(data[out:], s)
		data[out+len(s)] = 0
		if len(s)+1 == remaining {
			native.PutUint32(buf[offFlags:], native.Uint32(buf[offFlags:])|unix.DM_BUFFER_FULL_FLAG)
			break
		}
		out += len(s) + 1
		used = headerSize + out
		out = (out + 7) &^ 7
		native.PutUint32(spec[20:], uint32(out))
	}
	if used != 0 {
		native.PutUint32(buf[offSize:], uint32(used))
	}
	native.PutUint32(buf[offCount:], uint32(len(targets)))
	return buf
}

var poolStatus = Target{0, 2097152, "thin-pool", "1 171/1024 2/32768 - rw discard_passdown queue_if_no_space - 1024"}

func TestParseTargets(t *testing.T) {
	tests := []struct {
		name    string
		targets []Target
	}{
		{"none", nil},
		{"pool", []Target{poolStatus}},
		{"empty params", []Target{{0, 8, "zero", ""}}},
		{"three", []Target{
			{0, 1000, "linear", "7:0 2048"},
			{1000, 24, "error", ""},
			{1024, 1 << 40, "thin", "253:4 17 253:9"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, full, err := ParseTargets(kernelReply(t, tc.targets, initialBuffer))
			if err != nil || full {
				t.Fatalf("ParseTargets: %v, full %v", err, full)
			}
			if !reflect.DeepEqual(got, tc.targets) {
				t.Errorf("got %+v, want %+v", got, tc.targets)
			}
		})
	}
}

// TestParseTargetsFull: an answer that does not fit is never taken for a
// shorter one, whichever byte it runs out at.
func TestParseTargetsFull(t *testing.T) {
	targets := []Target{poolStatus, {2097152, 8, "linear", "7:1 0"}}
	// The bytes the answer needs: both specs, the first string padded
	// to 8 bytes, the second string.
	need := headerSize + specSize + (len(poolStatus.Params)+1+7)&^7 + specSize + len("7:1 0") + 1
	fits := 0
	for size := headerSize; size < need+16; size++ {
		buf := kernelReply(t, targets, size)
		got, full, err := ParseTargets(buf)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if full {
			if fits != 0 {
				t.Fatalf("size %d full after size %d fitted", size, fits)
			}
			continue
		}
		if fits == 0 {
			fits = len(buf)
		}
		if !reflect.DeepEqual(got, targets) {
			t.Fatalf("size %d: got %+v without DM_BUFFER_FULL_FLAG, want %+v", size, got, targets)
		}
	}
	if fits < need {
		t.Errorf("an answer of %d bytes fitted a buffer of %d", need, fits)
	}
}

func TestParseTargetsMalformed(t *testing.T) {
	good := func() []byte {
		return kernelReply(t, []Target{poolStatus, {1, 2, "linear", "7:1 0"}}, 1024)
	}
	tests := []struct {
		name   string
		mangle func(b []byte) []byte
		want   string
	}{
		{"short", func(b []byte) []byte { return b[:headerSize-1] }, "shorter than the header"},
		{"data_start inside header", func(b []byte) []byte { native.PutUint32(b[offStart:], 8); return b }, "data_start 8"},
		{"data_start past data", func(b []byte) []byte { native.PutUint32(b[offStart:], 1<<20); return b }, "data_start"},
		{"count too high", func(b []byte) []byte { native.PutUint32(b[offCount:], 3); return b }, "target 2 of 3"},
		{"next backwards", func(b []byte) []byte { native.PutUint32(b[headerSize+20:], 0); return b }, "does not move forward"},
		{"next past end", func(b []byte) []byte { native.PutUint32(b[headerSize+20:], 1<<30); return b }, "past the"},
		{"no NUL", func(b []byte) []byte {
			size := native.Uint32(b[offSize:])
			for i := headerSize + specSize; i < int(size); i++ {
				b[i] = 'x'
			}
			native.PutUint32(b[offCount:], 1)
			return b
		}, "without their NUL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ParseTargets(tc.mangle(good()))
			if !errors.Is(err, ErrBadReply) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want ErrBadReply saying %q", err, tc.want)
			}
		})
	}
}

func TestEncodeMessage(t *testing.T) {
	buf, err := EncodeMessage("vg0-pool-tpool", 0, "reserve_metadata_snap", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(buf)%8 != 0 || len(buf) < headerSize+8+len("reserve_metadata_snap")+1 {
		t.Fatalf("buffer of %d bytes", len(buf))
	}
	if v := [3]uint32{native.Uint32(buf[0:]), native.Uint32(buf[4:]), native.Uint32(buf[8:])}; v != ioctlVersion {
		t.Errorf("version %v", v)
	}
	if got := native.Uint32(buf[offSize:]); got != uint32(len(buf)) {
		t.Errorf("data_size %d, want the buffer's %d", got, len(buf))
	}
	if got := native.Uint32(buf[offStart:]); got != headerSize {
		t.Errorf("data_start %d", got)
	}
	if got := cString(buf[offName : offName+unix.DM_NAME_LEN]); got != "vg0-pool-tpool" {
		t.Errorf("name %q", got)
	}
	if got := native.Uint64(buf[headerSize:]); got != 0 {
		t.Errorf("sector %d", got)
	}
	if got := cString(buf[headerSize+8:]); got != "reserve_metadata_snap" {
		t.Errorf("message %q", got)
	}
	buf, _ = EncodeMessage("d", 12345, "m", 4096)
	if len(buf) != 4096 || native.Uint64(buf[headerSize:]) != 12345 {
		t.Errorf("sized message: %d bytes, sector %d", len(buf), native.Uint64(buf[headerSize:]))
	}
	for _, bad := range []struct{ name, msg string }{
		{"", "m"}, {strings.Repeat("n", 128), "m"}, {"a\x00b", "m"}, {"d", ""}, {"d", "a\x00"},
	} {
		if _, err := EncodeMessage(bad.name, 0, bad.msg, 0); err == nil {
			t.Errorf("EncodeMessage(%q, %q) accepted", bad.name, bad.msg)
		}
	}
	if _, err := EncodeMessage(strings.Repeat("n", 127), 0, "m", 0); err != nil {
		t.Errorf("a 127-byte name: %v", err)
	}
}

func TestParseMessageReply(t *testing.T) {
	buf, _ := EncodeMessage("d", 0, "@stats_list", 1024)
	if out, full, err := ParseMessageReply(buf); out != "" || full || err != nil {
		t.Errorf("no DM_DATA_OUT_FLAG: %q %v %v", out, full, err)
	}
	native.PutUint32(buf[offFlags:], unix.DM_DATA_OUT_FLAG)
	copy(buf[headerSize:], "0: 0+100 1 dm-stats\n\x00")
	if out, full, err := ParseMessageReply(buf); out != "0: 0+100 1 dm-stats\n" || full || err != nil {
		t.Errorf("answer: %q %v %v", out, full, err)
	}
	native.PutUint32(buf[offFlags:], unix.DM_DATA_OUT_FLAG|unix.DM_BUFFER_FULL_FLAG)
	if _, full, err := ParseMessageReply(buf); !full || err != nil {
		t.Errorf("full: %v %v", full, err)
	}
	native.PutUint32(buf[offFlags:], unix.DM_DATA_OUT_FLAG)
	for i := headerSize; i < len(buf); i++ {
		buf[i] = 'x'
	}
	if _, _, err := ParseMessageReply(buf); !errors.Is(err, ErrBadReply) {
		t.Errorf("answer without NUL: %v", err)
	}
}

func TestErrorNamesDevice(t *testing.T) {
	err := error(&Error{Op: "DM_TARGET_MSG", Device: "vg0-pool-tpool", What: "reserve_metadata_snap", Err: syscall.EBUSY})
	if !errors.Is(err, syscall.EBUSY) {
		t.Errorf("%v does not unwrap to EBUSY", err)
	}
	want := "device-mapper ioctl DM_TARGET_MSG (reserve_metadata_snap) on vg0-pool-tpool: device or resource busy"
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

// FuzzParseTargets: whatever the buffer holds, the parser neither panics
// nor returns a target whose strings run past a NUL, and a reply built as
// the kernel builds it reads back as it was written.
func FuzzParseTargets(f *testing.F) {
	f.Add(uint64(0), uint64(2097152), "thin-pool", poolStatus.Params, "linear", "7:0 2048", []byte(nil))
	f.Add(uint64(5), uint64(1), "snapshot", "Invalid", "", "", []byte{0, 1, 2})
	f.Add(uint64(0), uint64(8), "thin", "253:4 1", "error", "", bytes.Repeat([]byte{0xff}, 64))
	f.Fuzz(func(t *testing.T, start, length uint64, typ1, params1, typ2, params2 string, noise []byte) {
		clean := func(s string, max int) string {
			s = strings.ReplaceAll(s, "\x00", "")
			if len(s) > max {
				s = s[:max]
			}
			return s
		}
		targets := []Target{
			{start, length, clean(typ1, 15), clean(params1, 4096)},
			{start + length, length, clean(typ2, 15), clean(params2, 4096)},
		}
		buf := kernelReply(t, targets, initialBuffer)
		got, full, err := ParseTargets(buf)
		if err != nil || full || !reflect.DeepEqual(got, targets) {
			t.Fatalf("kernel-made reply: %+v, full %v, %v; want %+v", got, full, err, targets)
		}
		// Noise over the data area, and over the header's counts.
		copy(buf[headerSize:], noise)
		if len(noise) >= 8 {
			native.PutUint32(buf[offCount:], native.Uint32(noise)%64)
			native.PutUint32(buf[offStart:], native.Uint32(noise[4:])%(2*initialBuffer))
		}
		got, _, err = ParseTargets(buf)
		if err != nil {
			if !errors.Is(err, ErrBadReply) {
				t.Fatalf("error %v is not ErrBadReply", err)
			}
			return
		}
		for _, tg := range got {
			if strings.ContainsRune(tg.Params, 0) || strings.ContainsRune(tg.Type, 0) {
				t.Fatalf("target %+v holds a NUL", tg)
			}
		}
	})
}
