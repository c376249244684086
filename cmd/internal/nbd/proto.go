package nbd

import "time"

// Protocol constants (doc/proto.md), exported for clients and tests. All
// integers are big-endian.
const (
	Magic        = 0x4e42444d41474943 // "NBDMAGIC"
	OptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	RepMagic     = 0x3e889045565a9
	RequestMagic = 0x25609513
	ReplyMagic   = 0x67446698 // of a simple reply

	FlagFixedNewstyle = 1 << 0 // handshake flags
	FlagNoZeroes      = 1 << 1
	FlagCFixed        = 1 << 0 // client flags
	FlagCNoZeroes     = 1 << 1

	FlagHasFlags  = 1 << 0 // transmission flags
	FlagReadOnly  = 1 << 1
	FlagSendFlush = 1 << 2
	FlagMultiConn = 1 << 8

	OptExportName = 1
	OptAbort      = 2
	OptList       = 3
	OptStartTLS   = 5
	OptInfo       = 6
	OptGo         = 7

	RepAck        = 1
	RepServer     = 2
	RepInfo       = 3
	RepErrUnsup   = 1<<31 + 1
	RepErrInvalid = 1<<31 + 3
	RepErrTLSReqd = 1<<31 + 5
	RepErrUnknown = 1<<31 + 6

	InfoExport    = 0
	InfoBlockSize = 3

	CmdRead        = 0
	CmdWrite       = 1
	CmdDisc        = 2
	CmdFlush       = 3
	CmdTrim        = 4
	CmdWriteZeroes = 6

	EPERM  = 1
	EIO    = 5
	EINVAL = 22
)

// The server's limits and defaults.
const (
	// maxOption bounds an option's data: a name and a few requests.
	maxOption = 64 << 10
	// MaxRead bounds one read request (and so the memory of one).
	MaxRead = 32 << 20
	// ReadSlot is the unit of the read budget: a read takes one per
	// started ReadSlot of its length, at least one, so that a read also
	// pays for the record (at most archive.MaxDataLen) it decodes.
	ReadSlot = 4 << 20
	// DefaultReadBudget is the read budget of the whole server, shared
	// by every connection: however many clients there are and whatever
	// they ask, the server holds at most this much of reads being served
	// (their buffers), and so at most DefaultReadBudget/ReadSlot reads
	// at once, each decoding one record at a time.
	DefaultReadBudget = 64 << 20
	// DefaultConns is how many connections are served at once unless
	// told otherwise (--max-connections); one more is closed at once.
	DefaultConns = 64
	// DefaultHandshakeTimeout is how long a client has to negotiate its
	// export (--handshake-timeout), so that connections that say nothing
	// do not hold their places.
	DefaultHandshakeTimeout = 30 * time.Second
	// DefaultReplyTimeout is how long a reply may wait for the client to
	// take it: a client that asks and never reads would otherwise hold
	// its share of the read budget forever.
	DefaultReplyTimeout = 60 * time.Second
)

// transmitFlags are the flags of every export: read-only, flush accepted
// (a no-op), several connections to one export see the same bytes.
const transmitFlags = FlagHasFlags | FlagReadOnly | FlagSendFlush | FlagMultiConn
