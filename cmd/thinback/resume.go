package main

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/restore"
)

// A resume token names an interrupted transfer that a receiver can take
// the rest of (ZFS's receive_resume_token): the snapshot and parent being
// applied, the volume's size, and the offset below which the target holds
// the snapshot durably. It holds no secret: send checks it against what
// it would write, and receive against what the target's state says.
//
// Encoding: base64url without padding of
//
//	version u8 (1) || snapshot[16] || parent[16] || resume_from u64 || volume_size u64 || crc32c u32
//
// little-endian, the CRC-32C over everything before it, so that a token
// cut or mistyped when copied is refused as such.
type resumeToken struct {
	Snapshot, Parent archive.ID
	From             int64 // resume_from: a multiple of the stream's block size
	VolumeSize       int64
}

const (
	resumeTokenVersion = 1
	resumeTokenLen     = 1 + 16 + 16 + 8 + 8 + 4
)

// errResumeToken: a --resume token that does not parse, or that names
// another transfer than the one send would write.
var errResumeToken = errors.New("the resume token does not name this transfer")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func (t resumeToken) String() string {
	b := make([]byte, 0, resumeTokenLen)
	b = append(b, resumeTokenVersion)
	b = append(b, t.Snapshot[:]...)
	b = append(b, t.Parent[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(t.From))
	b = binary.LittleEndian.AppendUint64(b, uint64(t.VolumeSize))
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return base64.RawURLEncoding.EncodeToString(b)
}

func parseResumeToken(s string) (resumeToken, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	bad := func(why string) (resumeToken, error) {
		return resumeToken{}, usageError{msg: fmt.Sprintf("--resume %q is not a resume token (%s): copy the whole token that receive printed, or get it again with thinback receive --to TARGET --resume-token", s, why)}
	}
	switch {
	case err != nil:
		return bad("not base64url")
	case len(b) == 0 || b[0] != resumeTokenVersion:
		return bad("unknown version; a newer thinback may have made it")
	case len(b) != resumeTokenLen:
		return bad(fmt.Sprintf("%d bytes, not %d", len(b), resumeTokenLen))
	case crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]):
		return bad("its checksum does not match: cut or mistyped")
	}
	var t resumeToken
	copy(t.Snapshot[:], b[1:17])
	copy(t.Parent[:], b[17:33])
	from, size := binary.LittleEndian.Uint64(b[33:]), binary.LittleEndian.Uint64(b[41:])
	if size > archive.MaxVolumeSize || from == 0 || from > size || t.Snapshot.IsZero() {
		return bad(fmt.Sprintf("offset %d of a %d-byte volume", from, size))
	}
	t.From, t.VolumeSize = int64(from), int64(size)
	return t, nil
}

// tokenOf returns the token of the interrupted transfer st records, and
// whether there is one to resume: an apply whose progress was recorded.
func tokenOf(st restore.State) (resumeToken, bool) {
	m := st.InProgress
	if m == nil || m.Done <= 0 || m.Size <= 0 {
		return resumeToken{}, false
	}
	return resumeToken{Snapshot: m.Snapshot, Parent: m.Parent, From: m.Done, VolumeSize: m.Size}, true
}

// resumeHeader makes h, the header of the file send would write, the
// header of the rest of the transfer tok names, from its offset; it
// refuses a token of another snapshot, parent or volume size.
func resumeHeader(h *archive.Header, tok resumeToken) error {
	parent := "no parent (a full)"
	if !h.IsFull() {
		parent = "parent " + h.Parent.Describe()
	}
	tparent := "no parent (a full)"
	if !tok.Parent.IsZero() {
		tparent = "parent " + tok.Parent.String()
	}
	switch {
	case tok.Snapshot != h.Snapshot.ID || tok.Parent != h.Parent.ID:
		return fmt.Errorf("the token is of a transfer of snapshot %s with %s, but this send writes snapshot %s with %s: %w; give the snapshot and --base the interrupted send was given",
			tok.Snapshot, tparent, h.Snapshot.Describe(), parent, errResumeToken)
	case tok.VolumeSize != h.VolumeSize:
		return fmt.Errorf("the token is of a transfer of a %d-byte volume, but snapshot %s is %d bytes: %w", tok.VolumeSize, h.Snapshot.Describe(), h.VolumeSize, errResumeToken)
	case tok.From%h.BlockSize != 0:
		return fmt.Errorf("the token resumes at byte %d, which is not a multiple of this send's block size %d: %w; give the --block-size the interrupted send had", tok.From, h.BlockSize, errResumeToken)
	}
	h.ResumeFrom = tok.From
	return nil
}
