package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/restore"
)

func noProgress(int64) Progress { return NoProgress{} }

// writeOutgoing writes out's delta file to path.
func writeOutgoing(t *testing.T, out *Outgoing, path string) archive.Trailer {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := archive.NewWriter(f)
	if err := w.WriteHeader(out.Header); err != nil {
		t.Fatal(err)
	}
	if err := archive.Send(context.Background(), w, out.Source, archive.SendOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return w.Trailer()
}

// A full of an image and an incremental against its older copy apply, one
// after the other, to the newer image; the incremental names the full's
// snapshot as its parent, and both images are guarded.
func TestFileSend(t *testing.T) {
	dir := t.TempDir()
	old, cur := filepath.Join(dir, "old.img"), filepath.Join(dir, "disk.img")
	state1 := bytes.Repeat([]byte("an image sent with send\n"), 1<<20/24+1)[:1<<20]
	state2 := slices.Clone(state1)
	copy(state2[700<<10:], bytes.Repeat([]byte("changed"), 100))
	if err := os.WriteFile(old, state1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cur, state2, 0o600); err != nil {
		t.Fatal(err)
	}
	full, err := OpenFileSend(FileSendOptions{File: old, Volume: "disk", BlockSize: 4096, Tool: "thinback test", Progress: noProgress})
	if err != nil {
		t.Fatal(err)
	}
	if !full.CountWrites || full.Header.VolumeName != "disk" || !full.Header.IsFull() || len(full.Guards) != 1 {
		t.Errorf("full: %+v", full)
	}
	writeOutgoing(t, full, filepath.Join(dir, "full.tbk"))

	incr, err := OpenFileSend(FileSendOptions{File: cur, BaseFile: old, Volume: "disk", BlockSize: 4096, Tool: "thinback test", Progress: noProgress})
	if err != nil {
		t.Fatal(err)
	}
	if incr.CountWrites || incr.Header.Parent.ID != full.Header.Snapshot.ID || len(incr.Guards) != 2 {
		t.Errorf("incremental: parent %s, full %s, guards %v", incr.Header.Parent.ID, full.Header.Snapshot.ID, incr.Guards)
	}
	tr := writeOutgoing(t, incr, filepath.Join(dir, "incr.tbk"))
	if tr.DataBytes != 4096 || incr.Read(tr) != 2<<20 {
		t.Errorf("incremental: %d bytes of data, %d read; want one block, both images read", tr.DataBytes, incr.Read(tr))
	}

	target := filepath.Join(dir, "restored.img")
	for _, name := range []string{"full.tbk", "incr.tbk"} {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		tg, err := restore.OpenTarget(target, restore.TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = restore.Apply(context.Background(), tg, []restore.Input{{Name: name, R: f}}, restore.Options{Force: true})
		tg.Close()
		f.Close()
		if err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
	}
	if got, err := os.ReadFile(target); err != nil || !bytes.Equal(got, state2) {
		t.Errorf("the full and the incremental do not give the newer image (%v)", err)
	}
}

// send's refusals: a base id without a base image or one that does not
// parse is a bad command line, an unchanged file has nothing to send.
func TestFileSendRefused(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 8192), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o     FileSendOptions
		usage bool
		has   string
	}{
		{FileSendOptions{File: img, BaseID: "x"}, true, "--base-id goes with --base-file"},
		{FileSendOptions{File: img, BaseFile: img, BaseID: "not-an-id"}, true, "--base-id: "},
		{FileSendOptions{File: img, BaseFile: img}, false, "are the same unchanged file: there is nothing to send"},
		{FileSendOptions{File: filepath.Join(dir, "missing.img")}, false, "missing.img"},
	} {
		c.o.BlockSize, c.o.Progress = 4096, noProgress
		out, err := OpenFileSend(c.o)
		var ue *UsageError
		if err == nil || errors.As(err, &ue) != c.usage || !strings.Contains(err.Error(), c.has) {
			t.Errorf("OpenFileSend(%+v) = %v, %v; want an error with %q (usage error: %v)", c.o, out, err, c.has, c.usage)
		}
	}
}
