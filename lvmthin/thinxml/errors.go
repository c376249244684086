package thinxml

import "errors"

var (
	// ErrMetadata: the tools' output does not make sense (ranges out of
	// order, wrong device, missing block size, bad XML). Its text is the
	// one package lvmthin has always given such output, whose ErrMetadata
	// it also matches once lvmthin returns it.
	ErrMetadata = errors.New("lvmthin: bad thin metadata output")
	// ErrNoDevice: the thin device asked for (Options.DumpDev) is not in
	// the dump. Its text is package lvmthin's ErrNotFound's, which it
	// matches once lvmthin returns it.
	ErrNoDevice = errors.New("lvmthin: not found")
)
