package catalog

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Volume kinds. Kind is stored as a string so that a catalog written by a
// newer thinback with more kinds still reads.
const (
	KindLVMThin = "lvm-thin"
	// KindLVMThick is an ordinary (thick) LVM volume, backed up from
	// classic copy-on-write snapshots.
	KindLVMThick = "lvm-thick"
	KindFile     = "file"
)

// maxDirName bounds DirName's length so that the lock and temp file names
// built from it stay under NAME_MAX (255) on every Linux filesystem.
const maxDirName = 200

// maxField bounds free-form strings in records, so a record stays small
// whatever a caller (or a damaged file) puts in it.
const maxField = 4096

// Volume is a backed-up source: an LVM thin or thick volume, or a
// file/block device.
type Volume struct {
	// Name is the user-facing name and the key, e.g. "vg0/vm1" or
	// "disk.img". See ValidVolumeName.
	Name string `json:"name"`
	// UUID is the source's own identity (the LVM LV UUID), if it has one.
	UUID string `json:"uuid,omitempty"`
	// Kind is KindLVMThin, KindLVMThick or KindFile.
	Kind string `json:"kind"`
	// Source is where the data is read: "vg0/vm1" or an absolute path.
	Source string `json:"source,omitempty"`
	// BlockSize is the delta granularity in bytes.
	BlockSize int64 `json:"block_size"`
	// Created is set by PutVolume when zero.
	Created time.Time `json:"created,omitzero"`
	// Retention is the volume's default prune policy.
	Retention Retention `json:"retention,omitzero"`
}

func (v *Volume) validate(key string) error {
	if v.Name != key {
		return fmt.Errorf("name %q does not match its key", v.Name)
	}
	if err := ValidVolumeName(v.Name); err != nil {
		return err
	}
	if v.Kind == "" {
		return errors.New("kind is empty")
	}
	if v.BlockSize <= 0 {
		return fmt.Errorf("block size %d is not positive", v.BlockSize)
	}
	if err := v.Retention.validate(); err != nil {
		return err
	}
	return checkFields(map[string]string{"uuid": v.UUID, "kind": v.Kind, "source": v.Source})
}

// checkFields bounds free-form strings.
func checkFields(fields map[string]string) error {
	for name, s := range fields {
		if len(s) > maxField {
			return fmt.Errorf("%s is %d bytes, longer than %d", name, len(s), maxField)
		}
	}
	return nil
}

// ValidVolumeName reports whether name can name a volume: not empty,
// valid UTF-8 without control characters (C0, DEL and C1, U+0080-U+009F),
// bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069) or
// line and paragraph separators, and short enough that its DirName fits in
// a file name. Volume names come from delta files anyone can write and
// are printed on terminals: a name must not be able to move the cursor,
// retitle the window or make itself read as another name.
func ValidVolumeName(name string) error {
	if name == "" {
		return errors.New("volume name is empty")
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("volume name %q is not valid UTF-8", name)
	}
	for _, r := range name {
		if unsafeRune(r) {
			return fmt.Errorf("volume name %+q contains a control or bidirectional formatting character (%U)", name, r)
		}
	}
	if n := len(DirName(name)); n > maxDirName {
		return fmt.Errorf("volume name %q is too long (%d bytes escaped, at most %d)", name, n, maxDirName)
	}
	return nil
}

// unsafeRune reports the runes ValidVolumeName refuses.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi embeddings, overrides, isolates
		return true
	case r == 0x200e, r == 0x200f, r == 0x061c: // bidi marks
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	}
	return false
}

// DirName returns the file-name-safe form of a volume name used for its
// directory and lock file in a store. Letters, digits, '-', '_' and '.'
// stay as they are, except a leading '.' (so the result is never ".",
// ".." or a hidden file); every other byte, '/' and '%' included, becomes
// %XX with upper-case hex. The mapping is one to one, and ParseDirName
// reverses it:
//
//	vg0/vm1   -> vg0%2Fvm1
//	disk.img  -> disk.img
//	..        -> %2E.
//
// Caveat: on a case-insensitive filesystem (vfat, exfat) two names that
// differ only in case share a directory.
func DirName(volume string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(volume) + 8)
	for i := 0; i < len(volume); i++ {
		c := volume[i]
		if dirSafe(c) && !(c == '.' && i == 0) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}

func dirSafe(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.'
}

// ParseDirName is the inverse of DirName. It accepts only DirName's exact
// output, so two directory names can never decode to the same volume.
func ParseDirName(dir string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(dir); i++ {
		c := dir[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(dir) {
			return "", fmt.Errorf("directory name %q: truncated escape", dir)
		}
		hi, ok1 := unhex(dir[i+1])
		lo, ok2 := unhex(dir[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("directory name %q: bad escape %q", dir, dir[i:i+3])
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	name := b.String()
	if DirName(name) != dir {
		return "", fmt.Errorf("directory name %q is not in canonical form", dir)
	}
	if err := ValidVolumeName(name); err != nil {
		return "", fmt.Errorf("directory name %q: %w", dir, err)
	}
	return name, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// Volume returns the volume called name, or an error wrapping ErrNotFound.
func (tx *Tx) Volume(name string) (Volume, error) {
	b := tx.bucket(bucketVolumes)
	if b == nil {
		return Volume{}, fmt.Errorf("catalog: volume %q: %w", name, ErrNotFound)
	}
	data := b.Get([]byte(name))
	if data == nil {
		return Volume{}, fmt.Errorf("catalog: volume %q: %w", name, ErrNotFound)
	}
	return decode[Volume](bucketVolumes, []byte(name), data)
}

// Volumes returns every volume, sorted by name.
func (tx *Tx) Volumes() ([]Volume, error) {
	b := tx.bucket(bucketVolumes)
	if b == nil {
		return nil, nil
	}
	var vols []Volume
	err := b.ForEach(func(k, data []byte) error {
		v, err := decode[Volume](bucketVolumes, k, data)
		if err != nil {
			return err
		}
		vols = append(vols, v)
		return nil
	})
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	return vols, err
}

// PutVolume creates or replaces a volume record. It sets v.Created to the
// current time when it is zero.
func (tx *Tx) PutVolume(v *Volume) error {
	b, err := tx.writeBucket(bucketVolumes)
	if err != nil {
		return err
	}
	rec := *v
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	if err := put(b, bucketVolumes, rec.Name, &rec); err != nil {
		return err
	}
	*v = rec
	return nil
}

// DeleteVolume removes a volume that has no snapshots left (ErrInUse
// otherwise).
func (tx *Tx) DeleteVolume(name string) error {
	b, err := tx.writeBucket(bucketVolumes)
	if err != nil {
		return err
	}
	if b.Get([]byte(name)) == nil {
		return fmt.Errorf("catalog: volume %q: %w", name, ErrNotFound)
	}
	if seqs := tx.bucket(bucketSeqs); seqs != nil {
		if sb := seqs.Bucket([]byte(name)); sb != nil {
			if k, _ := sb.Cursor().First(); k != nil {
				return fmt.Errorf("catalog: volume %q still has snapshots: %w", name, ErrInUse)
			}
			if err := seqs.DeleteBucket([]byte(name)); err != nil {
				return err
			}
		}
	}
	if ls := tx.bucket(bucketLastSeq); ls != nil {
		if err := ls.Delete([]byte(name)); err != nil {
			return err
		}
	}
	return b.Delete([]byte(name))
}
