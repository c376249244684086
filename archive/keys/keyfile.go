package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A key file holds a random secret that opens a key-file slot, for
// commands run by cron. Its format (docs/FORMAT.md, "Key files") is two
// lines of text:
//
//	thinback key file v1
//	<64 lowercase hex digits: the 32-byte secret>
//
// Created with mode 0600; refused when it is a symbolic link, not a
// regular file, or readable or writable by group or others, as ssh
// refuses such a private key.
const (
	keyFileMagic   = "thinback key file v1"
	secretSize     = 32
	maxKeyFileSize = 4 << 10
)

// KeyFile is a key file's secret, in memory. Call Destroy when done.
type KeyFile struct {
	secret [secretSize]byte
}

// NewKeyFile returns a new random key file secret (see CreateKeyFile to
// write one).
func NewKeyFile() (*KeyFile, error) {
	kf := new(KeyFile)
	if _, err := rand.Read(kf.secret[:]); err != nil {
		return nil, err
	}
	return kf, nil
}

// Destroy overwrites the secret in memory.
func (kf *KeyFile) Destroy() { clear(kf.secret[:]) }

// Marshal returns the key file's text. The caller clears it when done.
func (kf *KeyFile) Marshal() []byte {
	b := make([]byte, 0, len(keyFileMagic)+2+2*secretSize)
	b = append(b, keyFileMagic+"\n"...)
	b = hex.AppendEncode(b, kf.secret[:])
	return append(b, '\n')
}

// ParseKeyFile reads a key file's text. Anything else than the two lines
// (a missing last newline aside) is refused with ErrKeyFile.
func ParseKeyFile(data []byte) (*KeyFile, error) {
	bad := &KeyFileError{Problem: "is not a thinback key file", Fix: "give the file thinback made for this store"}
	rest, ok := bytes.CutPrefix(data, []byte(keyFileMagic+"\n"))
	if !ok {
		return nil, bad
	}
	rest = bytes.TrimSuffix(rest, []byte("\n"))
	if !isLowerHex(string(rest), 2*secretSize) {
		return nil, bad
	}
	kf := new(KeyFile)
	if _, err := hex.Decode(kf.secret[:], rest); err != nil {
		return nil, bad
	}
	return kf, nil
}

// CreateKeyFile makes a new key file at path with a new random secret:
// mode 0600, never over an existing file or through a symbolic link
// (O_EXCL, O_NOFOLLOW), fsynced with its directory before it returns. On
// failure nothing is left at path.
func CreateKeyFile(path string) (*KeyFile, error) {
	kf, err := NewKeyFile()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create key file: %w", err)
	}
	text := kf.Marshal()
	defer clear(text)
	_, err = f.Write(text)
	if err == nil {
		// A umask cannot widen 0600, but an inherited default ACL could:
		// make the mode what the file promises.
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("create key file %s: %w", path, err)
	}
	return kf, nil
}

// ReadKeyFile reads the key file at path. It is refused (ErrKeyFile,
// saying why) when it is a symbolic link, not a regular file, readable or
// writable by group or others, or not a key file.
func ReadKeyFile(path string) (*KeyFile, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, &KeyFileError{Path: path, Problem: "is a symbolic link",
					Fix: "give the path of the key file itself (a link could be pointed elsewhere by whoever can change it)", Err: err}
			}
		}
		return nil, fmt.Errorf("key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, &KeyFileError{Path: path, Problem: "is not a regular file", Fix: "give the key file thinback made"}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, &KeyFileError{Path: path,
			Problem: fmt.Sprintf("is readable or writable by group or others (mode %04o)", perm),
			Fix:     "chmod 600 " + path + " (and if others could read it, make a new key file and remove this one's slot)"}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	defer clear(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	kf, err := ParseKeyFile(data)
	if err != nil {
		var ke *KeyFileError
		if errors.As(err, &ke) {
			ke.Path = path
		}
		return nil, err
	}
	return kf, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
