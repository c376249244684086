// Package dmioctl asks the kernel's device-mapper directly, through the
// ioctls on /dev/mapper/control, what dmsetup would ask it: a device's
// status and table (DM_TABLE_STATUS), its info (DM_DEV_STATUS), and
// target messages (DM_TARGET_MSG). A backup asks a handful of such
// questions; a dmsetup process for each costs milliseconds, the ioctl
// microseconds.
//
// The buffer handed to the kernel is a struct dm_ioctl header followed by
// a data area (include/uapi/linux/dm-ioctl.h). data_size is the size of the
// whole buffer, data_start the offset of the data area. The kernel answers
// a status or table query with target specs in the data area, each a
// struct dm_target_spec followed by a NUL-terminated string, the spec's
// next field giving the following spec's offset from data_start; when the
// answer does not fit it sets DM_BUFFER_FULL_FLAG, and the query is asked
// again with a bigger buffer (libdevmapper does the same).
package dmioctl

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node.
const ControlPath = "/dev/mapper/control"

// The layout of struct dm_ioctl and struct dm_target_spec, as
// golang.org/x/sys/unix declares them (little- or native-endian: the
// kernel reads them in the machine's byte order).
const (
	headerSize = unix.SizeofDmIoctl      // 312, a multiple of 8
	specSize   = unix.SizeofDmTargetSpec // 40
	offVersion = 0
	offSize    = 12 // data_size
	offStart   = 16 // data_start
	offCount   = 20 // target_count
	offOpen    = 24 // open_count
	offFlags   = 28
	offEvent   = 32
	offDev     = 40
	offName    = 48
	offUUID    = offName + unix.DM_NAME_LEN
	nameMax    = unix.DM_NAME_LEN - 1 // room for the NUL
)

// ioctlVersion is the interface version we speak: major 4 (the kernel
// refuses any other major), minor 0 (a kernel accepts every minor up to its
// own), so that any kernel since 2.6 answers.
var ioctlVersion = [3]uint32{4, 0, 0}

// initialBuffer holds a thin pool's or snapshot's status many times over;
// maxBuffer bounds the retries, far above any table the kernel builds.
const (
	initialBuffer = 16 << 10
	maxBuffer     = 32 << 20
)

var native = binary.NativeEndian

// Target is one target of a device's table: the sectors it maps and, for a
// status query, its status words, or for a table query, its parameters
// (one line of `dmsetup status` or `dmsetup table`).
type Target struct {
	Start  uint64 // first sector
	Length uint64 // sectors
	Type   string // target type, e.g. "thin-pool"
	Params string
}

// String formats the target as dmsetup prints it.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Info is what DM_DEV_STATUS says of a device (`dmsetup info`).
type Info struct {
	Major, Minor uint32
	OpenCount    int32
	TargetCount  uint32
	EventNr      uint32
	Flags        uint32 // DM_*_FLAG bits: suspended, read-only, tables present
	UUID         string
}

// Suspended reports whether the device is suspended.
func (i Info) Suspended() bool { return i.Flags&unix.DM_SUSPEND_FLAG != 0 }

// Error is a failed device-mapper ioctl. It unwraps to the errno, so
// callers test errors.Is(err, syscall.EBUSY) and the like.
type Error struct {
	Op     string // DM_TABLE_STATUS, DM_TARGET_MSG, ...
	Device string // the device-mapper name
	What   string // the message sent, or "table"/"status"
	Err    error
}

func (e *Error) Error() string {
	what := ""
	if e.What != "" {
		what = " (" + e.What + ")"
	}
	return fmt.Sprintf("device-mapper ioctl %s%s on %s: %v", e.Op, what, e.Device, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrBadReply: the kernel's answer does not parse (a spec pointing outside
// the buffer, a string without its NUL). Never seen from a real kernel;
// it keeps a misread from becoming a wrong answer.
var ErrBadReply = errors.New("dmioctl: malformed reply from the kernel")

// Status returns the status lines of device name's targets
// (`dmsetup status NAME`).
func Status(name string) ([]Target, error) {
	return tableStatus(name, 0, "status")
}

// Table returns the table of device name's live targets
// (`dmsetup table NAME`).
func Table(name string) ([]Target, error) {
	return tableStatus(name, unix.DM_STATUS_TABLE_FLAG, "table")
}

func tableStatus(name string, flags uint32, what string) ([]Target, error) {
	for size := initialBuffer; ; size *= 2 {
		buf, err := newRequest(name, size, flags)
		if err != nil {
			return nil, &Error{Op: "DM_TABLE_STATUS", Device: name, What: what, Err: err}
		}
		if err := ioctl(unix.DM_TABLE_STATUS, buf); err != nil {
			return nil, &Error{Op: "DM_TABLE_STATUS", Device: name, What: what, Err: err}
		}
		targets, full, err := ParseTargets(buf)
		if err != nil {
			return nil, &Error{Op: "DM_TABLE_STATUS", Device: name, What: what, Err: err}
		}
		if !full {
			return targets, nil
		}
		if size*2 > maxBuffer {
			return nil, &Error{Op: "DM_TABLE_STATUS", Device: name, What: what,
				Err: fmt.Errorf("%w: answer larger than %d bytes", ErrBadReply, maxBuffer)}
		}
	}
}

// DevInfo returns what `dmsetup info NAME` shows of a device.
func DevInfo(name string) (Info, error) {
	buf, err := newRequest(name, headerSize, 0)
	if err == nil {
		err = ioctl(unix.DM_DEV_STATUS, buf)
	}
	if err != nil {
		return Info{}, &Error{Op: "DM_DEV_STATUS", Device: name, Err: err}
	}
	return parseInfo(buf), nil
}

func parseInfo(buf []byte) Info {
	dev := native.Uint64(buf[offDev:])
	return Info{
		Major:       unix.Major(dev),
		Minor:       unix.Minor(dev),
		OpenCount:   int32(native.Uint32(buf[offOpen:])),
		TargetCount: native.Uint32(buf[offCount:]),
		EventNr:     native.Uint32(buf[offEvent:]),
		Flags:       native.Uint32(buf[offFlags:]),
		UUID:        cString(buf[offUUID : offUUID+unix.DM_UUID_LEN]),
	}
}

// Message sends msg to the target of device name that maps sector
// (`dmsetup message NAME SECTOR MSG`) and returns what the target answers,
// if anything (most messages, such as a thin pool's, answer nothing).
func Message(name string, sector uint64, msg string) (string, error) {
	fail := func(err error) (string, error) {
		return "", &Error{Op: "DM_TARGET_MSG", Device: name, What: msg, Err: err}
	}
	buf, err := EncodeMessage(name, sector, msg, initialBuffer)
	if err != nil {
		return fail(err)
	}
	if err := ioctl(unix.DM_TARGET_MSG, buf); err != nil {
		return fail(err)
	}
	out, full, err := ParseMessageReply(buf)
	if err != nil {
		return fail(err)
	}
	if full {
		// The message was carried out; only its answer did not fit.
		// Sending it again could do it twice (dm-stats' @stats_create
		// answers), so say so instead. A thin pool's messages answer
		// nothing.
		return fail(fmt.Errorf("%w: the message was carried out, but its answer is larger than %d bytes", ErrBadReply, initialBuffer))
	}
	return out, nil
}

// newRequest returns a zeroed buffer of size bytes holding a dm_ioctl
// header that names the device.
func newRequest(name string, size int, flags uint32) ([]byte, error) {
	if name == "" || len(name) > nameMax || bytes.IndexByte([]byte(name), 0) >= 0 {
		return nil, fmt.Errorf("invalid device-mapper name %q (1 to %d bytes, no NUL)", name, nameMax)
	}
	if size < headerSize {
		size = headerSize
	}
	// 8-byte aligned, as the kernel's specs are.
	words := make([]uint64, (size+7)/8)
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	for i, v := range ioctlVersion {
		native.PutUint32(buf[offVersion+4*i:], v)
	}
	native.PutUint32(buf[offSize:], uint32(len(buf)))
	native.PutUint32(buf[offStart:], headerSize)
	native.PutUint32(buf[offFlags:], flags)
	copy(buf[offName:], name)
	return buf, nil
}

// EncodeMessage builds the DM_TARGET_MSG request: the header, then at
// data_start a struct dm_target_msg (the sector) followed by the message
// and its NUL, in a buffer of at least size bytes so that an answer fits.
func EncodeMessage(name string, sector uint64, msg string, size int) ([]byte, error) {
	if msg == "" || bytes.IndexByte([]byte(msg), 0) >= 0 {
		return nil, fmt.Errorf("invalid message %q (empty, or holds a NUL)", msg)
	}
	need := headerSize + 8 + len(msg) + 1
	if size < need {
		size = need
	}
	buf, err := newRequest(name, size, 0)
	if err != nil {
		return nil, err
	}
	native.PutUint64(buf[headerSize:], sector)
	copy(buf[headerSize+8:], msg)
	return buf, nil
}

// ParseMessageReply returns a message's answer from the buffer the kernel
// filled, and whether the answer did not fit (DM_BUFFER_FULL_FLAG).
func ParseMessageReply(buf []byte) (out string, full bool, err error) {
	if len(buf) < headerSize {
		return "", false, fmt.Errorf("%w: %d bytes, shorter than the header", ErrBadReply, len(buf))
	}
	flags := native.Uint32(buf[offFlags:])
	if flags&unix.DM_DATA_OUT_FLAG == 0 {
		return "", false, nil
	}
	if flags&unix.DM_BUFFER_FULL_FLAG != 0 {
		return "", true, nil
	}
	start := int(native.Uint32(buf[offStart:]))
	if start < headerSize || start > len(buf) {
		return "", false, fmt.Errorf("%w: data_start %d outside the %d-byte buffer", ErrBadReply, start, len(buf))
	}
	data := buf[start:]
	n := bytes.IndexByte(data, 0)
	if n < 0 {
		return "", false, fmt.Errorf("%w: answer without its NUL", ErrBadReply)
	}
	return string(data[:n]), false, nil
}

// ParseTargets decodes the answer to DM_TABLE_STATUS: target_count specs
// from data_start on. full reports DM_BUFFER_FULL_FLAG, in which case the
// answer is incomplete and targets is nil. Every offset and count is
// checked against the buffer: nothing read from it is trusted for an
// allocation or an index.
func ParseTargets(buf []byte) (targets []Target, full bool, err error) {
	if len(buf) < headerSize {
		return nil, false, fmt.Errorf("%w: %d bytes, shorter than the header", ErrBadReply, len(buf))
	}
	if native.Uint32(buf[offFlags:])&unix.DM_BUFFER_FULL_FLAG != 0 {
		return nil, true, nil
	}
	start := uint64(native.Uint32(buf[offStart:]))
	size := uint64(native.Uint32(buf[offSize:]))
	if size > uint64(len(buf)) {
		size = uint64(len(buf))
	}
	if start < headerSize || start > size {
		return nil, false, fmt.Errorf("%w: data_start %d outside the %d bytes of data", ErrBadReply, start, size)
	}
	count := native.Uint32(buf[offCount:])
	data := buf[start:size]
	var off uint64
	for i := uint32(0); i < count; i++ {
		if off > uint64(len(data)) || uint64(len(data))-off < specSize {
			return nil, false, fmt.Errorf("%w: target %d of %d: spec at offset %d past the %d bytes of data", ErrBadReply, i, count, off, len(data))
		}
		s := data[off:]
		t := Target{
			Start:  native.Uint64(s[0:]),
			Length: native.Uint64(s[8:]),
			Type:   cString(s[24:specSize]),
		}
		rest := s[specSize:]
		n := bytes.IndexByte(rest, 0)
		if n < 0 {
			return nil, false, fmt.Errorf("%w: target %d of %d: parameters without their NUL", ErrBadReply, i, count)
		}
		t.Params = string(rest[:n])
		targets = append(targets, t)
		next := uint64(native.Uint32(s[20:]))
		if i+1 < count && next <= off {
			// The kernel's specs follow one another; a next that
			// goes back would loop.
			return nil, false, fmt.Errorf("%w: target %d of %d: next offset %d does not move forward from %d", ErrBadReply, i, count, next, off)
		}
		off = next
	}
	return targets, false, nil
}

// cString is the NUL-terminated string at the start of b (all of b if it
// has no NUL).
func cString(b []byte) string {
	if n := bytes.IndexByte(b, 0); n >= 0 {
		b = b[:n]
	}
	return string(b)
}

// ioctl runs one device-mapper ioctl on a fresh descriptor of the control
// node. Opening it costs microseconds, and a descriptor kept open would
// have to outlive signals and forks for nothing.
func ioctl(req uint, buf []byte) error {
	fd, err := unix.Open(ControlPath, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if err == unix.ENOENT {
			return fmt.Errorf("open %s: %w (no device-mapper: load it with modprobe dm-mod)", ControlPath, err)
		}
		return fmt.Errorf("open %s: %w", ControlPath, err)
	}
	defer unix.Close(fd)
	// Not retried on EINTR: Go's signal handlers restart system calls,
	// and a message sent twice could reserve twice.
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(req), uintptr(unsafe.Pointer(&buf[0]))); errno != 0 {
		return errno
	}
	return nil
}

// KernelVersion returns the kernel's device-mapper interface version
// (DM_VERSION; `dmsetup version`'s "Driver version").
func KernelVersion() ([3]uint32, error) {
	buf := make([]byte, headerSize)
	for i, v := range ioctlVersion {
		native.PutUint32(buf[offVersion+4*i:], v)
	}
	native.PutUint32(buf[offSize:], headerSize)
	native.PutUint32(buf[offStart:], headerSize)
	if err := ioctl(unix.DM_VERSION, buf); err != nil {
		return [3]uint32{}, &Error{Op: "DM_VERSION", Device: ControlPath, Err: err}
	}
	var v [3]uint32
	for i := range v {
		v[i] = native.Uint32(buf[offVersion+4*i:])
	}
	return v, nil
}
