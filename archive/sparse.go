package archive

import (
	"errors"
	"fmt"
	"math"
	"os"

	"golang.org/x/sys/unix"
)

// DataRegions finds where a regular file holds data and where it has holes,
// with SEEK_DATA and SEEK_HOLE, so that holes need not be read: sending a
// sparse image (FileSource), comparing one with its last backup
// (DigestSource) and saving a target's old contents before an apply
// overwrites them (restore's snapback files) all skip them.
//
// Where the filesystem has no SEEK_DATA (EINVAL, EOPNOTSUPP/ENOTSUP), every
// byte counts as data: reading a hole gives zeroes, so that is slower, never
// wrong. Any other failure is an error.
type DataRegions struct {
	f          *os.File
	none       bool  // no SEEK_DATA here: everything is data
	valid      bool  // start, end hold the answer for offsets in [asked, end)
	asked      int64 // the offset start and end were found for
	start, end int64
}

// NewDataRegions returns the data regions of f, which must stay open.
// Offsets are best asked in ascending order: a region found is remembered,
// and answers later offsets inside it without a system call. The file must
// therefore not change at or after the offsets still to be asked.
func NewDataRegions(f *os.File) *DataRegions { return &DataRegions{f: f} }

// At returns the data region [start, end) that holds off or, when off is in
// a hole, the first one after it: start > off then means that [off, start)
// is a hole. When the file holds no data at or after off, start and end are
// math.MaxInt64. Where SEEK_DATA is not supported, start is off and end is
// math.MaxInt64. end may lie past the file's size if the file grew.
func (d *DataRegions) At(off int64) (start, end int64, err error) {
	if d.none {
		return off, math.MaxInt64, nil
	}
	if d.valid && d.asked <= off && off < d.end {
		return d.start, d.end, nil
	}
	fd := int(d.f.Fd())
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO): // no data from off to the end of the file
		data, end = math.MaxInt64, math.MaxInt64
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP):
		d.none = true
		return off, math.MaxInt64, nil
	case err != nil:
		return 0, 0, fmt.Errorf("%s: looking for data at offset %d: %w", d.f.Name(), off, err)
	default:
		end, err = unix.Seek(fd, data, unix.SEEK_HOLE)
		switch {
		case errors.Is(err, unix.ENXIO): // the file shrank since: no data after off
			data, end = math.MaxInt64, math.MaxInt64
		case err != nil:
			return 0, 0, fmt.Errorf("%s: looking for a hole at offset %d: %w", d.f.Name(), data, err)
		}
	}
	d.valid, d.asked, d.start, d.end = true, off, data, end
	return data, end, nil
}
