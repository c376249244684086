package archive

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// checkParentTags checks that each encrypted incremental of a chain read
// with a key carries the tag of the file before it (see OpenChain).
// Snapback files are exempt: their parent is the state a target was left
// in, not a file.
func checkParentTags(inputs []ChainInput, files []ChainFile, rds []*Reader) error {
	for i := 1; i < len(files); i++ {
		prev, cur := files[i-1], files[i]
		if rds[i].crypt == nil || cur.Header.IsSnapback() {
			continue
		}
		if rds[i-1].crypt == nil {
			return fmt.Errorf("%s is encrypted, the file before it, %s, is not: %w", cur.Name, prev.Name, ErrParentTag)
		}
		d, err := sealedEnd(inputs[i-1].File, rds[i-1].crypt)
		if err != nil {
			return fmt.Errorf("%s: %w", prev.Name, err)
		}
		if tag := rds[i].crypt.key.FileTag(d); tag != cur.Header.ParentTag {
			return fmt.Errorf("%s is an incremental from a file with tag %x…, but the file given before it, %s, has tag %x…: %w; it is another volume's, store's or key's file, or an older one put in place of the parent",
				cur.Name, cur.Header.ParentTag[:8], prev.Name, tag[:8], ErrParentTag)
		}
	}
	return nil
}

// sealedEnd reads and authenticates the END record of the encrypted file
// f, whose header was read with crypt, from the file's tail, and returns
// the file digest it ends the chain with. The records before it are not
// read: the link before END, which END's sealing covers, commits to them,
// and the readers check it when they reach END.
func sealedEnd(f ReadSeekerAt, crypt *fileCrypt) (Digest, error) {
	cur, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return Digest{}, err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return Digest{}, err
	}
	if _, err := f.Seek(cur, io.SeekStart); err != nil {
		return Digest{}, err
	}
	at := size - sealedEndLen
	bad := func(sentinel error, detail string) error {
		return fmt.Errorf("the END record at byte %d: %w: %s", max(at, 0), sentinel, detail)
	}
	if at < fixedHeaderLen {
		return Digest{}, bad(ErrTruncated, fmt.Sprintf("a file of %d bytes is too short to end in an END record", size))
	}
	var b [sealedEndLen]byte
	if n, err := f.ReadAt(b[:], at); n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			return Digest{}, bad(ErrTruncated, "the file shrank while being read")
		}
		return Digest{}, &ReadError{What: "the END record", Offset: at, Err: err}
	}
	rh, meta, tag := b[:rhdrLen], b[rhdrLen:sealedEndLen-DigestSize], Digest(b[sealedEndLen-DigestSize:])
	le := binary.LittleEndian
	if rh[0] != typeEnd || rh[1] != 0 || rh[2] != 0 || rh[3] != 0 || le.Uint32(rh[4:]) != uint32(len(meta)) || le.Uint32(rh[8:]) != 0 {
		return Digest{}, bad(ErrHeader, "the file does not end in an END record")
	}
	prev := Digest(meta[:DigestSize])
	if chainNext(blake3.New(), prev, rh, meta) != tag {
		return Digest{}, bad(ErrChecksum, "its digest does not match")
	}
	records := le.Uint64(meta[DigestSize:])
	if records >= MaxVolumeSize {
		return Digest{}, bad(ErrHeader, fmt.Sprintf("%d records", records))
	}
	var buf [endMetaLen]byte
	plain, err := crypt.openMeta(buf[:0], int64(records)+1, true, rh, prev, meta[endClearLen:])
	if err != nil || le.Uint64(plain) != records {
		return Digest{}, bad(ErrAuth, fmt.Sprintf("it does not authenticate under key %s", crypt.key.id))
	}
	return tag, nil
}
