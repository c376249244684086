package thinxml

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Bounds of what Scan accepts. The thin tools' longest tag is a
// <superblock> of about 130 bytes, and their elements nest four deep
// (superblock, diff, group, range); the bounds leave ample room for later
// versions while keeping memory independent of the input.
const (
	MaxTag   = 4 << 10 // bytes from '<' to '>'
	MaxDepth = 32      // open elements
)

// ErrUnsupported marks well-formed XML that the thin tools never write
// and that xmlReader refuses rather than interprets (see Scan).
var ErrUnsupported = errors.New("XML the thin tools do not write")

func unsupportedf(format string, args ...any) error {
	return fmt.Errorf("%w: %w: "+format, append([]any{ErrMetadata, ErrUnsupported}, args...)...)
}

// xmlError is unusable thin tool output and where in it the problem is.
type xmlError struct {
	off  int64 // byte offset from the start of the output
	line int   // line number, from 1
	err  error
}

func (e *xmlError) Error() string {
	return fmt.Sprintf("line %d, byte %d of the output: %v", e.line, e.off, e.err)
}

func (e *xmlError) Unwrap() error { return e.err }

// xmlElem names the elements the scanner gives a meaning to.
type xmlElem uint8

const (
	elemUnknown xmlElem = iota
	elemSuperblock
	elemDiff
	elemSame
	elemDifferent
	elemLeftOnly
	elemRightOnly
	elemRange
	elemDevice
	elemDef
	elemRef
	elemRangeMapping
	elemSingleMapping
)

var elemNames = [...]string{
	elemUnknown: "unknown", elemSuperblock: "superblock", elemDiff: "diff", elemSame: "same",
	elemDifferent: "different", elemLeftOnly: "left_only", elemRightOnly: "right_only",
	elemRange: "range", elemDevice: "device", elemDef: "def", elemRef: "ref",
	elemRangeMapping: "range_mapping", elemSingleMapping: "single_mapping",
}

func (e xmlElem) String() string { return elemNames[e] }

// RangeKind is the kind of range a thin_delta element names, or 0.
func (e xmlElem) rangeKind() RangeKind {
	switch e {
	case elemSame:
		return RangeSame
	case elemDifferent:
		return RangeDifferent
	case elemLeftOnly:
		return RangeLeftOnly
	case elemRightOnly:
		return RangeRightOnly
	}
	return 0
}

// elemByName maps a local name to its element; a switch on string(b) does
// not allocate.
func elemByName(b []byte) xmlElem {
	switch string(b) {
	case "same":
		return elemSame
	case "different":
		return elemDifferent
	case "left_only":
		return elemLeftOnly
	case "right_only":
		return elemRightOnly
	case "range":
		return elemRange
	case "range_mapping":
		return elemRangeMapping
	case "single_mapping":
		return elemSingleMapping
	case "diff":
		return elemDiff
	case "device":
		return elemDevice
	case "def":
		return elemDef
	case "ref":
		return elemRef
	case "superblock":
		return elemSuperblock
	}
	return elemUnknown
}

// xmlAttr names the attributes the scanner reads, of any element.
type xmlAttr uint8

const (
	attrUnknown xmlAttr = iota
	attrBegin
	attrLength
	attrLeft
	attrRight
	attrDataBlockSize
	attrDevID
	attrMappedBlocks
	attrTransaction
	attrCreationTime
	attrSnapTime
	attrName
	attrOriginBegin
	attrOriginBlock
	numAttrs
)

var attrNames = [numAttrs]string{
	attrUnknown: "unknown", attrBegin: "begin", attrLength: "length", attrLeft: "left", attrRight: "right",
	attrDataBlockSize: "data_block_size", attrDevID: "dev_id", attrMappedBlocks: "mapped_blocks",
	attrTransaction: "transaction", attrCreationTime: "creation_time", attrSnapTime: "snap_time",
	attrName: "name", attrOriginBegin: "origin_begin", attrOriginBlock: "origin_block",
}

func (a xmlAttr) String() string { return attrNames[a] }

func attrByName(b []byte) xmlAttr {
	switch string(b) {
	case "begin":
		return attrBegin
	case "length":
		return attrLength
	case "origin_begin":
		return attrOriginBegin
	case "origin_block":
		return attrOriginBlock
	case "left":
		return attrLeft
	case "right":
		return attrRight
	case "data_block_size":
		return attrDataBlockSize
	case "dev_id":
		return attrDevID
	case "mapped_blocks":
		return attrMappedBlocks
	case "transaction":
		return attrTransaction
	case "creation_time":
		return attrCreationTime
	case "snap_time":
		return attrSnapTime
	case "name":
		return attrName
	}
	return attrUnknown
}

// Byte classes, as tables: a lookup per byte is what keeps the scanner
// fast. Names are XML names restricted to ASCII.
const (
	nameByte  = 1 << iota // may be in a name
	nameStart             // may start a name
	nameColon             // ':', which ends a namespace prefix
)

var (
	nameClass = func() (t [256]uint8) {
		for c := range 256 {
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
				t[c] = nameByte | nameStart
			case c == ':':
				t[c] = nameByte | nameStart | nameColon
			case c >= '0' && c <= '9', c == '.', c == '-':
				t[c] = nameByte
			}
		}
		return t
	}()
	// isPlainValue: attribute value bytes that need no further look:
	// printable ASCII and white space, except the quotes, '<' and '&'.
	isPlainValue = func() (t [256]bool) {
		for c := 0x20; c < 0x80; c++ {
			t[c] = !strings.ContainsRune(`"'<&`, rune(c))
		}
		t['\t'], t['\n'], t['\r'] = true, true, true
		return t
	}()
)

func isSpace(c byte) bool { return c == ' ' || c == '\n' || c == '\t' || c == '\r' }

// inCharRange reports whether r may appear in an XML document (the Char
// production of XML 1.0).
func inCharRange(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D || r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

type xmlToken uint8

const (
	tokEOF xmlToken = iota
	tokStart
	tokEnd
)

// span is a part of the current tag, as indexes into it.
type span struct{ start, end int }

// xmlReader splits the thin tools' XML into start and end tags. It reads
// from a bufio.Reader and parses in place in its buffer (a window of the
// stream), so tags are neither copied nor allocated; a tag that runs past
// the window is parsed again once the window has moved to its start and
// been filled.
type xmlReader struct {
	br   *bufio.Reader
	win  []byte // the bytes buffered in br; win[0] is at offset base
	pos  int    // the next byte to look at in win
	base int64
	line int   // line number of win[0]
	rerr error // what ended the input, once seen

	// The current tag, valid until the next call of next.
	tag       []byte // from '<' to '>'
	tagAt     int    // tag's index in win
	elem      xmlElem
	local     []byte // the element's name without namespace prefix
	selfClose bool
	seen      uint32 // the known attributes present, 1<<xmlAttr
	vals      [numAttrs]span
	scratch   []byte // for attribute text that needs rewriting
}

// errNeedMore says that a tag runs past the window.
var errNeedMore = errors.New("need more input")

var newline = []byte{'\n'}

// next returns the next start or end tag, skipping white space, comments
// and processing instructions, or tokEOF at the end of the input.
func (x *xmlReader) next() (xmlToken, error) {
	for {
		i := x.pos
		for i < len(x.win) && isSpace(x.win[i]) {
			i++
		}
		x.pos = i
		if i == len(x.win) {
			if !x.more(i) {
				if x.rerr == io.EOF {
					return tokEOF, nil
				}
				return 0, x.readErr()
			}
			continue
		}
		if x.win[i] != '<' {
			end := min(len(x.win), i+16)
			return 0, x.errAt(i, unsupportedf("character data %q between elements", x.win[i:end]))
		}
		if !x.need(2) {
			return 0, x.truncated()
		}
		switch x.win[x.pos+1] {
		case '!':
			if err := x.skipBang(); err != nil {
				return 0, err
			}
			continue
		case '?':
			if err := x.skipPI(); err != nil {
				return 0, err
			}
			continue
		case '/':
			return tokEnd, x.parse((*xmlReader).parseEnd)
		default:
			return tokStart, x.parse((*xmlReader).parseStart)
		}
	}
}

// parse runs a tag parser on the window from pos, which is at '<', moving
// the window on and parsing again while the tag runs past it.
func (x *xmlReader) parse(p func(*xmlReader, []byte) (int, error)) error {
	for {
		w := x.win[x.pos:]
		if len(w) > MaxTag {
			w = w[:MaxTag]
		}
		n, err := p(x, w)
		if err == nil {
			x.tag, x.tagAt = w[:n], x.pos
			x.pos += n
			return nil
		}
		if err != errNeedMore {
			return err
		}
		if len(w) == MaxTag {
			return x.errAt(x.pos, unsupportedf("tag longer than %d bytes", MaxTag))
		}
		if !x.more(x.pos) {
			return x.truncated()
		}
	}
}

// parseStart parses the start tag at the beginning of w.
func (x *xmlReader) parseStart(w []byte) (int, error) {
	i, local, err := x.name(w, 1, "element name after <", true)
	if err != nil {
		return 0, err
	}
	x.elem, x.local, x.seen = elemByName(local), local, 0
	for {
		for i < len(w) && isSpace(w[i]) {
			i++
		}
		if i == len(w) {
			return 0, errNeedMore
		}
		switch w[i] {
		case '>':
			x.selfClose = false
			return i + 1, nil
		case '/':
			if i+1 == len(w) {
				return 0, errNeedMore
			}
			if w[i+1] != '>' {
				return 0, x.errAt(x.pos+i, badf("expected /> in element"))
			}
			x.selfClose = true
			return i + 2, nil
		}
		at := i
		if i, local, err = x.name(w, i, "attribute name in element", true); err != nil {
			return 0, err
		}
		a := attrByName(local)
		var q byte
		if i+1 < len(w) && w[i] == '=' && w[i+1] == '"' {
			q, i = '"', i+2 // as the tools write it
		} else if q, i, err = x.equalsQuote(w, i, at); err != nil {
			return 0, err
		}
		start := i
		for i < len(w) && isPlainValue[w[i]] {
			i++
		}
		if i == len(w) || w[i] != q {
			if i, err = x.value(w, i, q); err != nil {
				return 0, err
			}
		}
		if a != attrUnknown {
			if x.seen&(1<<a) != 0 {
				return 0, x.errAt(x.pos+at, unsupportedf("attribute %s twice in <%s>", a, x.local))
			}
			x.seen |= 1 << a
			x.vals[a] = span{start, i}
		}
		i++ // the closing quote
	}
}

// equalsQuote scans from the end of the attribute name at w[at] to the
// opening quote of its value, returning the quote and the index after it.
func (x *xmlReader) equalsQuote(w []byte, i, at int) (byte, int, error) {
	for i < len(w) && isSpace(w[i]) {
		i++
	}
	if i == len(w) {
		return 0, 0, errNeedMore
	}
	if w[i] != '=' {
		return 0, 0, x.errAt(x.pos+i, badf("attribute %s without = in element", w[at:i]))
	}
	for i++; i < len(w) && isSpace(w[i]); i++ {
	}
	if i == len(w) {
		return 0, 0, errNeedMore
	}
	if q := w[i]; q == '"' || q == '\'' {
		return q, i + 1, nil
	}
	return 0, 0, x.errAt(x.pos+i, badf("unquoted or missing attribute value in element"))
}

// value scans an attribute value from w[i] to its closing quote q, checking
// that it is text an XML decoder would accept without references; it
// returns the index of the quote.
func (x *xmlReader) value(w []byte, i int, q byte) (int, error) {
	for {
		for i < len(w) && isPlainValue[w[i]] {
			i++
		}
		if i == len(w) {
			return 0, errNeedMore
		}
		switch c := w[i]; {
		case c == q:
			return i, nil
		case c == '"' || c == '\'':
			i++
		case c == '<':
			return 0, x.errAt(x.pos+i, badf("unescaped < in attribute value"))
		case c == '&':
			return 0, x.errAt(x.pos+i, unsupportedf("entity or character reference in attribute value"))
		case c < utf8.RuneSelf:
			return 0, x.errAt(x.pos+i, badf("illegal character code %U in attribute value", rune(c)))
		default:
			if !utf8.FullRune(w[i:]) {
				return 0, errNeedMore
			}
			r, size := utf8.DecodeRune(w[i:])
			if r == utf8.RuneError && size == 1 {
				return 0, x.errAt(x.pos+i, badf("invalid UTF-8 in attribute value"))
			}
			if !inCharRange(r) {
				return 0, x.errAt(x.pos+i, badf("illegal character code %U in attribute value", r))
			}
			i += size
		}
	}
}

// parseEnd parses the end tag at the beginning of w.
func (x *xmlReader) parseEnd(w []byte) (int, error) {
	i, local, err := x.name(w, 2, "element name after </", true)
	if err != nil {
		return 0, err
	}
	x.elem, x.local = elemByName(local), local
	for i < len(w) && isSpace(w[i]) {
		i++
	}
	if i == len(w) {
		return 0, errNeedMore
	}
	if w[i] != '>' {
		return 0, x.errAt(x.pos+i, badf("invalid characters between </%s and >", local))
	}
	return i + 1, nil
}

// name scans the name at w[i] and returns the index after it and the name,
// without its namespace prefix if ns is set; what says what is expected
// there.
func (x *xmlReader) name(w []byte, i int, what string, ns bool) (int, []byte, error) {
	start := i
	var class uint8
	for i < len(w) && nameClass[w[i]] != 0 {
		class |= nameClass[w[i]]
		i++
	}
	if i == len(w) {
		return 0, nil, errNeedMore
	}
	if i == start || nameClass[w[start]]&nameStart == 0 || w[i] >= utf8.RuneSelf || ns && class&nameColon != 0 {
		return x.oddName(w, start, i, what)
	}
	return i, w[start:i], nil
}

// oddName is name's slow path, for a name that is missing, not ASCII or
// has a namespace prefix.
func (x *xmlReader) oddName(w []byte, start, end int, what string) (int, []byte, error) {
	switch {
	case start == end && w[end] >= utf8.RuneSelf:
		return 0, nil, x.errAt(x.pos+end, unsupportedf("name that is not ASCII"))
	case start == end || nameClass[w[start]]&nameStart == 0:
		return 0, nil, x.errAt(x.pos+start, badf("expected %s", what))
	case w[end] >= utf8.RuneSelf:
		return 0, nil, x.errAt(x.pos+end, unsupportedf("name that is not ASCII"))
	}
	// A prefix is split off as encoding/xml does it: the tools write
	// none, and the parser before this one matched local names only.
	name := w[start:end]
	i := bytes.IndexByte(name, ':')
	if bytes.IndexByte(name[i+1:], ':') >= 0 {
		return 0, nil, x.errAt(x.pos+start, badf("name %q has two colons", name))
	}
	if i == 0 || i == len(name)-1 {
		return end, name, nil
	}
	return end, name[i+1:], nil
}

// skipBang skips a comment at pos ("<!"); other declarations are refused.
func (x *xmlReader) skipBang() error {
	if !x.need(4) {
		return x.truncated()
	}
	switch w := x.win[x.pos:]; {
	case w[2] == '[':
		return x.errAt(x.pos, unsupportedf("CDATA section"))
	case w[2] != '-':
		return x.errAt(x.pos, unsupportedf("DOCTYPE or other declaration"))
	case w[3] != '-':
		return x.errAt(x.pos, badf("<!- not part of <!--"))
	}
	x.pos += 4
	// The comment ends at the first "--", which must be followed by '>'.
	if err := x.skipTo("--"); err != nil {
		return err
	}
	if !x.need(1) {
		return x.truncated()
	}
	if x.win[x.pos] != '>' {
		return x.errAt(x.pos, badf(`"--" in a comment`))
	}
	x.pos++
	return nil
}

// skipPI skips a processing instruction at pos ("<?"); an XML declaration
// must declare version 1.0 and UTF-8, if anything.
func (x *xmlReader) skipPI() error {
	if err := x.parse((*xmlReader).parsePITarget); err != nil {
		return err
	}
	if string(x.tag[2:]) != "xml" {
		return x.skipTo("?>")
	}
	// The declaration is read whole, within a tag's length.
	x.pos = x.tagAt
	return x.parse((*xmlReader).parseXMLDecl)
}

// parsePITarget parses "<?" and the target name at the beginning of w.
func (x *xmlReader) parsePITarget(w []byte) (int, error) {
	i, _, err := x.name(w, 2, "target name after <?", false)
	return i, err
}

// parseXMLDecl parses the XML declaration at the beginning of w.
func (x *xmlReader) parseXMLDecl(w []byte) (int, error) {
	const start = len("<?xml")
	end := bytes.Index(w[start:], []byte("?>"))
	if end < 0 {
		return 0, errNeedMore
	}
	if err := checkXMLDecl(w[start : start+end]); err != nil {
		return 0, x.errAt(x.pos, err)
	}
	return start + end + len("?>"), nil
}

// checkXMLDecl checks the pseudo-attributes of an XML declaration. It is
// stricter than XML: the tools write no declaration, and one that says
// anything unusual needs a look before its output is trusted.
func checkXMLDecl(b []byte) error {
	var seen [3]bool
	for i := 0; ; {
		for i < len(b) && isSpace(b[i]) {
			i++
		}
		if i == len(b) {
			return nil
		}
		j := i
		for j < len(b) && b[j] >= 'a' && b[j] <= 'z' {
			j++
		}
		name := string(b[i:j])
		for j < len(b) && isSpace(b[j]) {
			j++
		}
		if j == len(b) || b[j] != '=' {
			return unsupportedf("XML declaration %q", b)
		}
		for j++; j < len(b) && isSpace(b[j]); j++ {
		}
		if j == len(b) || (b[j] != '"' && b[j] != '\'') {
			return unsupportedf("XML declaration %q", b)
		}
		q, v := b[j], j+1
		for v < len(b) && nameClass[b[v]]&(nameByte|nameColon) == nameByte {
			v++
		}
		if v == len(b) || b[v] != q {
			return unsupportedf("XML declaration %q", b)
		}
		val := string(b[j+1 : v])
		var n int
		var ok bool
		switch name {
		case "version":
			n, ok = 0, val == "1.0"
		case "encoding":
			n, ok = 1, strings.EqualFold(val, "utf-8")
		case "standalone":
			n, ok = 2, val == "yes" || val == "no"
		}
		if !ok || seen[n] {
			return unsupportedf("XML declaration %q", b)
		}
		seen[n] = true
		i = v + 1
	}
}

// skipTo moves pos past the next occurrence of the two-byte delim, reading
// as far as needed without keeping what it skips.
func (x *xmlReader) skipTo(delim string) error {
	for {
		if j := bytes.Index(x.win[x.pos:], []byte(delim)); j >= 0 {
			x.pos += j + len(delim)
			return nil
		}
		// The delimiter may straddle the window's end.
		keep := len(x.win)
		if keep > x.pos && x.win[keep-1] == delim[0] {
			keep--
		}
		x.pos = keep
		if !x.more(keep) {
			if x.rerr != io.EOF {
				return x.readErr()
			}
			return x.errAt(len(x.win), badf("output ends before %q (truncated)", delim))
		}
	}
}

// more drops the window's bytes before keep and reads at least one byte
// more; it returns false at the end of the input (x.rerr says why).
func (x *xmlReader) more(keep int) bool {
	if x.rerr != nil {
		return false
	}
	x.line += bytes.Count(x.win[:keep], newline)
	x.base += int64(keep)
	x.pos -= keep
	// Cannot fail: keep is at most what is buffered.
	_, _ = x.br.Discard(keep)
	have := len(x.win) - keep
	// Peek waits for the bytes it is asked for, so ask for one more than
	// is left, then take all that arrived.
	_, err := x.br.Peek(have + 1)
	x.win, _ = x.br.Peek(x.br.Buffered())
	if len(x.win) > have {
		return true
	}
	if err == nil || err == bufio.ErrBufferFull {
		// Not reached: the window keeps at most one tag, and the
		// buffer is larger than that.
		err = io.ErrNoProgress
	}
	x.rerr = err
	return false
}

// need makes sure that n bytes from pos are in the window; false at the
// end of the input.
func (x *xmlReader) need(n int) bool {
	for len(x.win)-x.pos < n {
		if !x.more(x.pos) {
			return false
		}
	}
	return true
}

// truncated is the error for input that ends inside markup.
func (x *xmlReader) truncated() error {
	if x.rerr != io.EOF {
		return x.readErr()
	}
	return x.errAt(x.pos, badf("output ends inside a tag (truncated)"))
}

// readErr is the error for input that could not be read; the scan cannot
// go on, and what was read does not make a whole output.
func (x *xmlReader) readErr() error {
	return x.errAt(len(x.win), fmt.Errorf("%w: reading: %w", ErrMetadata, x.rerr))
}

// errAt adds the position of win[i] to err.
func (x *xmlReader) errAt(i int, err error) error {
	return &xmlError{off: x.base + int64(i), line: x.line + bytes.Count(x.win[:i], newline), err: err}
}

// tagErr adds the position of the current tag to err.
func (x *xmlReader) tagErr(err error) error { return x.errAt(x.tagAt, err) }

// has reports whether the current tag has the attribute.
func (x *xmlReader) has(a xmlAttr) bool { return x.seen&(1<<a) != 0 }

// raw returns an attribute's value as written.
func (x *xmlReader) raw(a xmlAttr) ([]byte, bool) {
	if !x.has(a) {
		return nil, false
	}
	v := x.vals[a]
	return x.tag[v.start:v.end], true
}

// text returns an attribute's value as an XML decoder would: line ends
// normalized to '\n'. (References are refused, so there are none to
// replace.)
func (x *xmlReader) text(a xmlAttr) ([]byte, bool) {
	v, ok := x.raw(a)
	if !ok || bytes.IndexByte(v, '\r') < 0 {
		return v, ok
	}
	t := x.scratch[:0]
	for i := 0; i < len(v); i++ {
		if v[i] != '\r' {
			t = append(t, v[i])
			continue
		}
		t = append(t, '\n')
		if i+1 < len(v) && v[i+1] == '\n' {
			i++
		}
	}
	x.scratch = t
	return t, true
}

// uintAttr parses a required decimal attribute of at most bits bits.
func (x *xmlReader) uintAttr(a xmlAttr, bits int) (uint64, error) {
	v, ok := x.raw(a)
	if !ok {
		return 0, badf("missing attribute %s", a)
	}
	n, ok := parseUint(v, bits)
	if !ok {
		return 0, badf("attribute %s=%q: not a %d-bit number", a, v, bits)
	}
	return n, nil
}

// parseUint is strconv.ParseUint(string(b), 10, bits) without the string:
// decimal digits only, leading zeros allowed, no sign.
func parseUint(b []byte, bits int) (uint64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	limit := ^uint64(0) >> (64 - bits)
	var n uint64
	if len(b) <= 19 { // 10^19-1 fits in 64 bits: no overflow on the way
		for _, c := range b {
			d := c - '0'
			if d > 9 {
				return 0, false
			}
			n = n*10 + uint64(d)
		}
		return n, n <= limit
	}
	for _, c := range b {
		d := c - '0'
		if d > 9 || n > (limit-uint64(d))/10 {
			return 0, false
		}
		n = n*10 + uint64(d)
	}
	return n, true
}
