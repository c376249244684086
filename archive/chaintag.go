package archive

import (
	"encoding/binary"
	"fmt"

	"github.com/zeebo/blake3"
)

// The parent tag binds an encrypted incremental to its parent's identity
// (docs/FORMAT.md "Chain binding"), not to the parent file's bytes: a
// merge or a resend writes another file of the same snapshot, with
// another salt and so another file tag, and the snapshot's children must
// still follow it.

// parentTag is the MAC of the identity of a state of a volume: what an
// incremental from that state carries as its ParentTag. snapback marks
// the identity of a SNAPBACK file's state, which no incremental is made
// from, so that such a file never stands for a snapshot's.
func (k *Key) parentTag(volumeName, volumeUUID string, id ID, size int64, snapback bool) Digest {
	h, _ := blake3.NewKeyed(k.mac[:])
	var b []byte
	b = append(b, macParentTag...)
	b = appendString(b, volumeName)
	b = appendString(b, volumeUUID)
	b = append(b, id[:]...)
	b = binary.LittleEndian.AppendUint64(b, uint64(size))
	kind := byte(0)
	if snapback {
		kind = 1
	}
	b = append(b, kind)
	_, _ = h.Write(b)
	var t Digest
	h.Sum(t[:0])
	return t
}

// ParentTag returns the tag an encrypted incremental made from the
// snapshot parent (a file's header read with the key) carries: a MAC
// under the key of the parent's volume name and UUID, snapshot id and
// volume size. Every file of that snapshot, the one first written, a
// merged one or one sent again, gives the same tag. A Writer computes an
// incremental's tag itself; this is for checking one.
func (k *Key) ParentTag(parent *Header) Digest {
	return k.parentTag(parent.VolumeName, parent.VolumeUUID, parent.Snapshot.ID, parent.VolumeSize, parent.IsSnapback())
}

// ownParentTag is the parent tag of the incremental h, from its own
// header: its volume and its parent's id and size.
func (k *Key) ownParentTag(h *Header) Digest {
	return k.parentTag(h.VolumeName, h.VolumeUUID, h.Parent.ID, h.ParentSize, false)
}

// CheckParentTags checks, for files of a chain oldest first whose headers
// were read with k (so authenticated), that each encrypted incremental
// but a snapback file carries the parent tag of the file before it
// (Key.ParentTag): that file is of the same volume (name and UUID), is of
// the snapshot the incremental was made from, with its size, and is not a
// snapback file. It reads no record, so a chain that fails is refused
// before a byte of data is returned (ErrParentTag). With a nil k it
// checks nothing: no encrypted file is read without the key.
//
// A file of another key fails earlier, when its header is read
// (ErrWrongKey); a file of the right snapshot written at another time (a
// merge, a resend, an older copy) passes, being the same state.
func CheckParentTags(files []ChainFile, k *Key) error {
	if k == nil {
		return nil
	}
	for i := 1; i < len(files); i++ {
		prev, cur := files[i-1], files[i]
		if !cur.Header.IsEncrypted() || cur.Header.IsSnapback() {
			continue
		}
		ph := prev.Header
		if !ph.IsEncrypted() {
			return fmt.Errorf("%s is encrypted, the file before it, %s, is not: %w", cur.Name, prev.Name, ErrParentTag)
		}
		if k.ParentTag(ph) == cur.Header.ParentTag {
			continue
		}
		why := fmt.Sprintf("it is of volume %q (uuid %q), snapshot %s of %d bytes", ph.VolumeName, ph.VolumeUUID, ph.Snapshot.ID, ph.VolumeSize)
		switch {
		case ph.IsSnapback():
			why = "it is a snapback file, which stands for no snapshot"
		case ph.VolumeName == cur.Header.VolumeName && ph.VolumeUUID == cur.Header.VolumeUUID &&
			ph.Snapshot.ID == cur.Header.Parent.ID && ph.VolumeSize == cur.Header.ParentSize:
			why = "it is, but the incremental's parent tag is not the one the key gives that snapshot (was it written by another version of thinback?)"
		}
		return fmt.Errorf("%s is an incremental of volume %q (uuid %q) from snapshot %s of %d bytes, but the file given before it, %s, is not that snapshot: %s: %w",
			cur.Name, cur.Header.VolumeName, cur.Header.VolumeUUID, cur.Header.Parent.ID, cur.Header.ParentSize, prev.Name, why, ErrParentTag)
	}
	return nil
}
