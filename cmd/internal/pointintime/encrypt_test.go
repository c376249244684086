package pointintime

import (
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
)

// TestEncryptedImage: a point in time of an encrypted store reads back,
// through OpenImage, with its key; without it, or under another key,
// OpenImage fails with archive's key error, which is not called damage.
func TestEncryptedImage(t *testing.T) {
	k, err := archive.NewKey(bytes.Repeat([]byte{1}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	other, err := archive.NewKey(bytes.Repeat([]byte{2}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	w, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := writeChainKey(t, w, k)
	r, err := catalog.OpenReadOnly(w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Repository: r}
	for i, sn := range c.snaps {
		img, err := s.OpenImage(context.Background(), sn.ID, archive.SnapshotOptions{Key: k})
		if err != nil {
			t.Fatalf("#%d with the key: %v", i+1, err)
		}
		got := make([]byte, volSize)
		if _, err := img.ReadAt(got, 0); err != nil && err != io.EOF {
			t.Fatal(err)
		}
		img.Close()
		if !bytes.Equal(got, c.images[i]) {
			t.Errorf("#%d: the volume read differs from the one backed up", i+1)
		}
	}
	last := c.snaps[len(c.snaps)-1].ID
	for name, tc := range map[string]struct {
		key  *archive.Key
		want error
	}{"no key": {nil, archive.ErrKeyRequired}, "another key": {other, archive.ErrWrongKey}} {
		img, err := s.OpenImage(context.Background(), last, archive.SnapshotOptions{Key: tc.key})
		if err == nil {
			img.Close()
		}
		if !errors.Is(err, tc.want) {
			t.Fatalf("%s: %v, want %v", name, err, tc.want)
		}
		if strings.Contains(err.Error(), "damaged") {
			t.Errorf("%s: a key error is called damage: %v", name, err)
		}
	}
}

// TestEncryptedImageStoreKey: a Store given its Key opens images with it
// when the options name none, as mount and serve open them.
func TestEncryptedImageStoreKey(t *testing.T) {
	k, err := archive.NewKey(bytes.Repeat([]byte{3}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	w, err := catalog.OpenStoreOptions(filepath.Join(t.TempDir(), "store"), &catalog.Options{Timeout: -1})
	if err != nil {
		t.Fatal(err)
	}
	c := writeChainKey(t, w, k)
	r, err := catalog.OpenReadOnly(w.Dir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{Repository: r, Key: k}
	last := len(c.snaps) - 1
	img, err := s.OpenImage(context.Background(), c.snaps[last].ID, archive.SnapshotOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	got := make([]byte, volSize)
	if _, err := img.ReadAt(got, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(got, c.images[last]) {
		t.Error("the volume read differs from the one backed up")
	}
}
