package archive

import (
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Sentinel errors. Errors from Reader, Writer and Decoder wrap one of them;
// test with errors.Is.
var (
	// ErrHeader means the file is not a delta file or a header or record is
	// malformed (bad magic, bad lengths, records out of order...).
	ErrHeader = errors.New("malformed delta file")
	// ErrChecksum means a digest did not match: the file is corrupt, or
	// records were reordered or spliced in from another file.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrTruncated means the file ended before its END record.
	ErrTruncated = errors.New("file is truncated")
	// ErrVersion means the file needs a newer thinback: an unknown format
	// version or required feature.
	ErrVersion = errors.New("unsupported format version or feature")
	// ErrTrailingData means bytes follow the END record (for example two
	// files concatenated).
	ErrTrailingData = errors.New("data after end of file")
	// ErrWriteOrder means a Writer was given records out of order,
	// overlapping, unaligned or outside the volume: a bug in the caller.
	ErrWriteOrder = errors.New("record out of order or outside the volume")

	// ErrKeyRequired means the file is encrypted and no key was given: the
	// error names the file's key id.
	ErrKeyRequired = errors.New("the file is encrypted and no key was given")
	// ErrWrongKey means the key given is not the file's: its id differs, or
	// the header does not authenticate under it.
	ErrWrongKey = errors.New("wrong key")
	// ErrAuth means a record of an encrypted file does not authenticate
	// under its key: the file was altered, or records were moved, dropped
	// or spliced in from another file.
	ErrAuth = errors.New("authentication failed")
	// ErrParentTag means that the file given before an encrypted
	// incremental is not of the snapshot it was made from: another
	// volume's, another snapshot's, or a snapback file.
	ErrParentTag = errors.New("parent tag does not match")
)

// A FormatError says what is wrong with a delta file and where.
type FormatError struct {
	// Offset is the byte offset in the file where the bad structure starts
	// (the record header, or 0 for the file header).
	Offset int64
	// Record is the 1-based number of the record, or 0 for the file header.
	Record int64
	// Err is one of the sentinel errors.
	Err error
	// Detail says what exactly was found.
	Detail string
}

func (e *FormatError) Error() string {
	where := "header"
	if e.Record > 0 {
		where = fmt.Sprintf("record %d at byte %d", e.Record, e.Offset)
	}
	if e.Detail == "" {
		return fmt.Sprintf("%s: %v", where, e.Err)
	}
	return fmt.Sprintf("%s: %v: %s", where, e.Err, e.Detail)
}

func (e *FormatError) Unwrap() error { return e.Err }

// A ReadError is data that could not be read: a bad sector, a failing or
// vanished device, under a source or a delta file. Offset is the byte
// offset (in the volume for a source, in the file for a delta file) of the
// first block of ReadErrorBlock bytes that failed, found by reading the
// failed range again a block at a time; Err is the reader's own error,
// which names the device or file.
type ReadError struct {
	What   string // what was being read: "the source", "the payload of record 4"
	Offset int64
	Err    error
}

// ReadErrorBlock is the granularity at which an unreadable range is
// located: the page size, and the sector size of most disks.
const ReadErrorBlock = 4096

func (e *ReadError) Error() string {
	if errors.Is(e.Err, syscall.EIO) {
		return fmt.Sprintf("reading %s at byte offset %d: %v (a bad sector or a failing disk? see the kernel log, dmesg)", e.What, e.Offset, e.Err)
	}
	return fmt.Sprintf("reading %s at byte offset %d: %v", e.What, e.Offset, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// locateReadError finds the first unreadable block of the n bytes at off
// whose read failed with err after got good bytes (a device fails a whole
// request for one bad sector): it reads the rest again into buf (n bytes
// or more) a ReadErrorBlock at a time, aligned on offsets of the reader,
// and returns a *ReadError at the first block that fails. If every block
// reads now, the failure is reported where the range starts. Only an I/O
// error (EIO) is located so: any other (a network store's, a cancelled
// context's) is reported where the read stopped, without reading again.
func locateReadError(ra io.ReaderAt, what string, buf []byte, off int64, n, got int, err error) error {
	if !errors.Is(err, syscall.EIO) {
		return &ReadError{What: what, Offset: off + int64(got), Err: err}
	}
	pos := off + int64(got)
	pos -= pos % ReadErrorBlock
	for end := off + int64(n); pos < end; pos = pos - pos%ReadErrorBlock + ReadErrorBlock {
		if pos < off {
			pos = off
		}
		blk := buf[pos-off : min(pos-pos%ReadErrorBlock+ReadErrorBlock, end)-off]
		m, berr := ra.ReadAt(blk, pos)
		if m != len(blk) {
			if berr == nil || berr == io.EOF {
				berr = io.ErrUnexpectedEOF
			}
			return &ReadError{What: what, Offset: pos, Err: berr}
		}
	}
	return &ReadError{What: what, Offset: off, Err: err}
}
