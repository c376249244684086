package keys

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "store.key")
	kf, err := CreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Fatalf("mode %v", fi.Mode())
	}
	got, err := ReadKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.secret != kf.secret {
		t.Fatal("read another secret")
	}
	// Never over an existing file.
	if _, err := CreateKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("create over a key file: %v", err)
	}
	data, _ := os.ReadFile(path)
	if got, _ := ParseKeyFile(data); got == nil || got.secret != kf.secret {
		t.Fatal("create over a key file changed it")
	}
	// Never through a link, even one to nowhere.
	link := filepath.Join(dir, "link.key")
	if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateKeyFile(link); err == nil {
		t.Fatal("created through a link")
	}
	if _, err := os.Lstat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("the link's target was made")
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	// A key file reached through a link is refused, saying so.
	if err := os.Symlink(path, link); err != nil {
		t.Fatal(err)
	}
	_, err = ReadKeyFile(link)
	wantIs(t, err, ErrKeyFile)
	var ke *KeyFileError
	if !errors.As(err, &ke) || ke.Problem != "is a symbolic link" || ke.Path != link {
		t.Fatalf("error %v", err)
	}
	// So is one others may read or write.
	for _, mode := range []os.FileMode{0o640, 0o604, 0o620, 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err = ReadKeyFile(path)
		wantIs(t, err, ErrKeyFile)
		if !errors.As(err, &ke) || ke.Path != path || !bytes.Contains([]byte(err.Error()), []byte("group or others")) {
			t.Fatalf("mode %v: error %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKeyFile(path); err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	// A FIFO is refused without blocking in open.
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadKeyFile(fifo)
	wantIs(t, err, ErrKeyFile)
	// Other files are not key files.
	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("thinback key file v1\nnot hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ReadKeyFile(other)
	wantIs(t, err, ErrKeyFile)
}

func TestParseKeyFile(t *testing.T) {
	kf, _ := NewKeyFile()
	text := kf.Marshal()
	for _, ok := range [][]byte{text, bytes.TrimSuffix(text, []byte("\n"))} {
		got, err := ParseKeyFile(ok)
		if err != nil || got.secret != kf.secret {
			t.Fatalf("%q: %v", ok, err)
		}
	}
	for _, bad := range [][]byte{
		nil,
		text[:len(text)-2],
		append(bytes.Clone(text), '\n'),
		append(bytes.Clone(text), "more\n"...),
		bytes.ToUpper(text),
		bytes.Replace(text, []byte("v1"), []byte("v2"), 1),
		bytes.Replace(text, []byte("\n"), []byte("\r\n"), -1),
	} {
		_, err := ParseKeyFile(bad)
		wantIs(t, err, ErrKeyFile)
	}
}

// TestStreamKey: a key file's own master key is fixed by its secret, and
// is neither the secret nor a store's master key it opens.
func TestStreamKey(t *testing.T) {
	kf, err := NewKeyFile()
	if err != nil {
		t.Fatal(err)
	}
	a, err := kf.StreamKey()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseKeyFile(kf.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	b, err := parsed.StreamKey()
	if err != nil {
		t.Fatal(err)
	}
	if a.ID() != b.ID() || !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("one key file gave two stream keys")
	}
	if bytes.Equal(a.Bytes(), kf.secret[:]) {
		t.Error("the stream key is the key file's secret itself")
	}
	other, _ := NewKeyFile()
	c, _ := other.StreamKey()
	if c.ID() == a.ID() {
		t.Error("two key files gave one stream key")
	}
}
