package restore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/thinback/thinback/archive"
)

// testKey is a key made from a master key of seed's bytes.
func testKey(t testing.TB, seed byte) *archive.Key {
	t.Helper()
	k, err := archive.NewKey(bytes.Repeat([]byte{seed}, archive.MasterKeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// structureOf reads a file's structure without its key.
func structureOf(t testing.TB, path string) *archive.Structure {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s, err := archive.CheckStructure(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return s
}

// holdsClear reports whether file holds a 64-byte run of a non-zero
// block of data that differs from the same block of other (nil: any
// block): bytes of the volume in the clear.
func holdsClear(t testing.TB, file string, data, other []byte) bool {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+64 <= len(data); off += 4096 {
		s := data[off : off+64]
		if allZero(s) || (other != nil && off+64 <= len(other) && bytes.Equal(s, other[off:off+64])) {
			continue
		}
		if bytes.Contains(b, s) {
			return true
		}
	}
	return false
}

// TestEncryptedApply: a chain of encrypted files, applied with its key
// all together or one file at a time, gives the last state, and no file
// holds a byte of the volume in the clear.
func TestEncryptedApply(t *testing.T) {
	w := newWorld(t)
	k := testKey(t, 1)
	w.key = k
	imgs, files := w.randomChain(4)
	for i, f := range files {
		if s := structureOf(t, f); !s.Header.IsEncrypted() || s.Header.KeyID != k.ID() {
			t.Fatalf("%s is not encrypted under the test key", f)
		}
		if holdsClear(t, f, imgs[i].data, nil) {
			t.Fatalf("%s holds volume bytes in the clear", f)
		}
	}
	last := imgs[len(imgs)-1].data

	st := stateStore{}
	together := filepath.Join(w.dir, "together")
	if _, err := st.apply(t, together, files, Options{Key: k}); err != nil {
		t.Fatalf("applying the encrypted chain: %v", err)
	}
	mustEqual(t, together, last)

	oneByOne := filepath.Join(w.dir, "one-by-one")
	for i, f := range files {
		if _, err := st.apply(t, oneByOne, []string{f}, Options{Key: k}); err != nil {
			t.Fatalf("applying %s: %v", f, err)
		}
		mustEqual(t, oneByOne, imgs[i].data)
	}

	// A stream is read with the key as well.
	stm := filepath.Join(w.dir, "stream")
	for i, f := range files {
		tg, err := OpenTarget(stm, TargetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		in, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Apply(t.Context(), tg, []Input{{Name: f, R: stream{in}}}, Options{Key: k, Force: true})
		in.Close()
		tg.Close()
		if err != nil {
			t.Fatalf("applying %s as a stream: %v", f, err)
		}
		mustEqual(t, stm, imgs[i].data)
	}
}

// snapshotOf reads a target's bytes, or nil when it does not exist.
func snapshotOf(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return b
}

// TestEncryptedRefusedBeforeWriting: an encrypted file without its key,
// under another key, a plain file given with a key (put in place of an
// encrypted one), and an incremental after another volume's file of its
// parent snapshot are refused with archive's error before anything is
// written: the target's bytes and its state are as they were, and a new
// target is not left behind. The same snapshot's file sent again (another
// salt, another file tag) is the parent as well as the first.
func TestEncryptedRefusedBeforeWriting(t *testing.T) {
	w := newWorld(t)
	k := testKey(t, 1)
	w.key = k
	v1 := w.image(w.random(64 * 4096))
	v2 := w.image(w.mutate(v1.data, 20))
	// The same snapshot sent twice: files of other file tags, and once
	// more as another volume's. w.delta writes them all to one name.
	resent := w.delta(v1, nil) + ".resent"
	if err := os.Rename(w.delta(v1, nil), resent); err != nil {
		t.Fatal(err)
	}
	w.volume = "other"
	other := w.delta(v1, nil) + ".other"
	if err := os.Rename(w.delta(v1, nil), other); err != nil {
		t.Fatal(err)
	}
	w.volume = ""
	full := w.delta(v1, nil)
	incr := w.delta(v2, v1) // from full, the last file written of v1
	w.key = nil
	plain := w.delta(v2, v1) + ".plain"
	if err := os.Rename(incr, plain); err != nil { // w.delta wrote it to incr's name
		t.Fatal(err)
	}
	w.key = k
	incr = w.delta(v2, v1)

	st := stateStore{}
	target := filepath.Join(w.dir, "target")
	if _, err := st.apply(t, target, []string{full}, Options{Key: k}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v1.data)
	before := maps(st)

	for _, tc := range []struct {
		name   string
		files  []string
		opts   Options
		stream bool
		want   error
	}{
		{"no key", []string{incr}, Options{}, false, archive.ErrKeyRequired},
		{"no key, a stream", []string{incr}, Options{}, true, archive.ErrKeyRequired},
		{"no key, with a snapback file", []string{incr}, Options{Snapback: newSnapback(t, filepath.Join(w.dir, "undo1.tbk"))}, false, archive.ErrKeyRequired},
		{"another key", []string{incr}, Options{Key: testKey(t, 2)}, false, archive.ErrWrongKey},
		{"another key, a stream", []string{incr}, Options{Key: testKey(t, 2)}, true, archive.ErrWrongKey},
		{"a plain file with a key", []string{plain}, Options{Key: k}, false, archive.ErrAuth},
		{"a plain file with a key, a stream", []string{plain}, Options{Key: k}, true, archive.ErrAuth},
		{"another volume's file of the parent", []string{other, incr}, Options{Key: k, Force: true}, false, archive.ErrParentTag},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.stream {
				err = applyStream(t, st, target, tc.files[0], tc.opts)
			} else {
				_, err = st.apply(t, target, tc.files, tc.opts)
			}
			mustFail(t, err, tc.want, tc.files[len(tc.files)-1])
			mustEqual(t, target, v1.data)
			if !equalStates(maps(st), before) {
				t.Fatalf("the state changed: %+v, was %+v", st, before)
			}
			// Nor is a new target created.
			fresh := filepath.Join(w.dir, "fresh")
			tc.opts.Force = true // what a new target holds is not known
			if tc.stream {
				err = applyStream(t, stateStore{}, fresh, tc.files[0], tc.opts)
			} else {
				_, err = stateStore{}.apply(t, fresh, tc.files, tc.opts)
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("onto a new target: %v, want %v", err, tc.want)
			}
			if b := snapshotOf(t, fresh); b != nil {
				t.Fatalf("a refused apply left a new target of %d bytes", len(b))
			}
		})
	}
	// And with the key, in order, it applies.
	if _, err := st.apply(t, target, []string{incr}, Options{Key: k}); err != nil {
		t.Fatal(err)
	}
	mustEqual(t, target, v2.data)
	// After the parent's snapshot sent again, too: the same state.
	again := filepath.Join(w.dir, "again")
	if _, err := (stateStore{}).apply(t, again, []string{resent, incr}, Options{Key: k}); err != nil {
		t.Fatalf("the incremental after its parent sent again: %v", err)
	}
	mustEqual(t, again, v2.data)
}

// applyStream applies file to target as a stream (read once, front to
// back), with the state kept in st.
func applyStream(t testing.TB, st stateStore, target, file string, opts Options) error {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := stream{f}
	tg, err := OpenTarget(target, TargetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	id, err := tg.Identity()
	if err != nil {
		t.Fatal(err)
	}
	prior, had := st[id.Key]
	opts.State = prior
	opts.Begin = func(s State) error { st[id.Key] = s; return nil }
	opts.Finish = func(s State) error { st[id.Key] = s; return nil }
	opts.Stopped = func(s State) error { st[id.Key] = s; return nil }
	opts.Revert = func() error {
		if had {
			st[id.Key] = prior
		} else {
			delete(st, id.Key)
		}
		return nil
	}
	_, err = Apply(t.Context(), tg, []Input{{Name: filepath.Base(file), R: r}}, opts)
	return err
}

// maps copies st's states, marks included.
func maps(st stateStore) map[string]State {
	out := map[string]State{}
	for k, s := range st {
		if s.InProgress != nil {
			m := *s.InProgress
			s.InProgress = &m
		}
		out[k] = s
	}
	return out
}

func equalStates(a, b map[string]State) bool {
	if len(a) != len(b) {
		return false
	}
	for k, s := range a {
		o, ok := b[k]
		if !ok || s.Snapshot != o.Snapshot || s.VolumeSize != o.VolumeSize || s.Modified != o.Modified ||
			(s.InProgress == nil) != (o.InProgress == nil) {
			return false
		}
	}
	return true
}

// TestEncryptedSnapback: the snapback file of an apply with a key is
// encrypted under that key (an undo file in the clear would give away
// what the apply overwrote, as the plain one does), is read only with it,
// and undoes the apply.
func TestEncryptedSnapback(t *testing.T) {
	w := newWorld(t)
	k := testKey(t, 1)
	v1 := w.image(w.random(200 * 4096))
	v2 := w.image(w.mutate(v1.data, 60))
	for _, key := range []*archive.Key{nil, k} {
		w.key = key
		full := w.delta(v1, nil)
		incr := w.delta(v2, v1)
		st := stateStore{}
		target := filepath.Join(w.dir, "target")
		os.Remove(target)
		if _, err := st.apply(t, target, []string{full}, Options{Key: key}); err != nil {
			t.Fatal(err)
		}
		undo := filepath.Join(w.dir, "undo.tbk")
		os.Remove(undo)
		res, err := st.apply(t, target, []string{incr}, Options{Key: key, Snapback: newSnapback(t, undo)})
		if err != nil {
			t.Fatal(err)
		}
		mustEqual(t, target, v2.data)
		s := structureOf(t, undo)
		inClear := holdsClear(t, undo, v1.data, v2.data)
		if key == nil {
			// The check below sees what it looks for.
			if !inClear {
				t.Fatal("the plain snapback file holds none of the overwritten data: the test checks nothing")
			}
			continue
		}
		if inClear {
			t.Fatal("the snapback file of an encrypted apply holds overwritten data in the clear")
		}
		if !s.Header.IsEncrypted() || s.Header.KeyID != k.ID() || !s.Header.IsSnapback() {
			t.Fatalf("the snapback file's header %+v: want a snapback file encrypted under %s", s.Header, k.ID())
		}
		if res.Snapback == nil || res.Snapback.Tag != k.FileTag(s.Digest) {
			t.Fatalf("the apply's snapback trailer %+v does not carry the file's tag", res.Snapback)
		}
		if _, err := st.apply(t, target, []string{undo}, Options{}); !errors.Is(err, archive.ErrKeyRequired) {
			t.Fatalf("the snapback file without the key: %v, want ErrKeyRequired", err)
		}
		mustEqual(t, target, v2.data)
		if _, err := st.apply(t, target, []string{undo}, Options{Key: key}); err != nil {
			t.Fatalf("applying the encrypted snapback file: %v", err)
		}
		mustEqual(t, target, v1.data)
	}
}

// TestEncryptedSnapbackTornByCrash is TestSnapbackTornByCrash with
// encrypted files: a torn encrypted snapback file is recovered, undoes
// the interrupted apply and is continued by the same apply run again.
func TestEncryptedSnapbackTornByCrash(t *testing.T) { snapbackTornByCrash(t, testKey(t, 3)) }

// TestEncryptedCorruptPayload: a byte flipped in an encrypted payload, in
// a file too large to be verified before the first write, stops the apply
// before that record is written; the encrypted snapback file undoes what
// was written, and the apply run again with it and a good copy finishes.
func TestEncryptedCorruptPayload(t *testing.T) {
	verifyFirstLimit(t, 0)
	w := newWorld(t)
	k := testKey(t, 1)
	w.key = k
	st := stateStore{}
	v1 := w.image(w.random(300 * 4096))
	next := append([]byte(nil), v1.data...)
	w.r.Read(next) // every block changes
	v2 := w.image(next)
	target := filepath.Join(w.dir, "copy")
	if _, err := st.apply(t, target, []string{w.delta(v1, nil)}, Options{Key: k}); err != nil {
		t.Fatal(err)
	}
	good := w.delta(v2, v1)
	nums, recs := dataRecords(t, good, archive.WithKey(k))
	bad := corruptAt(t, good, nums[len(nums)/2], archive.WithKey(k))
	badRec := recs[len(nums)/2]
	undo := filepath.Join(w.dir, "undo.tbk")
	_, err := st.apply(t, target, []string{bad}, Options{Key: k, Snapback: newSnapback(t, undo), Workers: 1})
	mustFail(t, err, archive.ErrAuth, bad)
	got := snapshotOf(t, target)
	if !bytes.Equal(got[badRec.Offset:badRec.End()], v1.data[badRec.Offset:badRec.End()]) {
		t.Fatal("bytes of the corrupt record were written")
	}
	if !bytes.Equal(got[:recs[0].End()], v2.data[:recs[0].End()]) {
		t.Fatal("records before the corrupt one were not applied (the test expects an ordered apply)")
	}
	if holdsClear(t, undo, v1.data, nil) {
		t.Fatal("the snapback file holds overwritten data in the clear")
	}
	// Run again with a good copy, continuing the encrypted snapback file;
	// it then undoes both runs.
	if _, err := st.apply(t, target, []string{good}, Options{Key: k, Snapback: openRW(t, undo), ResumeSnapback: true}); err != nil {
		t.Fatalf("finishing with the good file: %v", err)
	}
	mustEqual(t, target, v2.data)
	if _, err := st.apply(t, target, []string{undo}, Options{Key: k}); err != nil {
		t.Fatalf("applying the continued snapback file: %v", err)
	}
	mustEqual(t, target, v1.data)
}

// TestEncryptedMerge: a run of encrypted files merges, with the key, into
// one file encrypted under it with a salt of its own (no payload of the
// inputs is in it as it was), whose parent tag is the first file's and
// whose trailer carries its digest and tag. Being a file of the run's
// last snapshot, it takes that snapshot's place in the chain: applied
// after the files before the run, and followed by the files after it,
// which were made from the run's last file, it gives each state, and it
// merges again with the file after it, as a second prune does.
func TestEncryptedMerge(t *testing.T) {
	w := newWorld(t)
	k := testKey(t, 1)
	w.key = k
	imgs, files := w.randomChain(5)
	for _, run := range [][2]int{{0, 5}, {1, 4}, {2, 5}, {3, 4}, {0, 2}} {
		i, j := run[0], run[1]
		out, h, tr, _, err := mergeFiles(t, w, files[i:j], MergeOptions{Key: k})
		if err != nil {
			t.Fatalf("merging files %d to %d: %v", i, j-1, err)
		}
		s := structureOf(t, out)
		first := structureOf(t, files[i]).Header
		if !s.Header.IsEncrypted() || s.Header.KeyID != k.ID() || s.Header.ParentTag != first.ParentTag || h.ParentTag != first.ParentTag {
			t.Fatalf("files %d to %d: merged header %+v, want encrypted under %s with parent tag %x", i, j-1, s.Header, k.ID(), first.ParentTag)
		}
		if i > 0 && s.Header.ParentTag != k.ParentTag(structureOf(t, files[i-1]).Header) {
			t.Fatalf("files %d to %d: parent tag %x, want that of the snapshot of file %d", i, j-1, s.Header.ParentTag, i-1)
		}
		if last := structureOf(t, files[j-1]).Header; k.ParentTag(s.Header) != k.ParentTag(last) {
			t.Fatalf("files %d to %d: the merged file does not stand for the snapshot of file %d", i, j-1, j-1)
		}
		if tr.Digest != s.Digest || tr.Tag != k.FileTag(s.Digest) {
			t.Fatalf("files %d to %d: trailer digest %x tag %x, the file's digest %x", i, j-1, tr.Digest, tr.Tag, s.Digest)
		}
		// A new salt: no sealed payload of an input is copied as it was.
		_, recs, _ := readAll(t, out, archive.WithKey(k))
		for n := i; n < j; n++ {
			_, in, _ := readAll(t, files[n], archive.WithKey(k))
			for _, a := range in {
				for _, b := range recs {
					if len(a.payload) >= 32 && bytes.Contains(b.payload, a.payload[:32]) {
						t.Fatalf("files %d to %d: the merged file holds a sealed payload of file %d as it was", i, j-1, n)
					}
				}
			}
		}
		if _, _, _, _, err := mergeFiles(t, w, files[i:j], MergeOptions{}); !errors.Is(err, archive.ErrKeyRequired) {
			t.Fatalf("merging without the key: %v, want ErrKeyRequired", err)
		}
		if _, _, _, _, err := mergeFiles(t, w, files[i:j], MergeOptions{Key: testKey(t, 2)}); !errors.Is(err, archive.ErrWrongKey) {
			t.Fatalf("merging under another key: %v, want ErrWrongKey", err)
		}

		// The chain with the merged file in place of the run: each file
		// after the run, applied with it, gives its state.
		chain := append(append([]string(nil), files[:i]...), out)
		target := filepath.Join(w.dir, "target")
		for n := j - 1; n < len(files); n++ {
			os.Remove(target)
			applied := append(append([]string(nil), chain...), files[j:n+1]...)
			if _, err := (stateStore{}).apply(t, target, applied, Options{Key: k}); err != nil {
				t.Fatalf("files %d to %d merged, then the files to %d: %v", i, j-1, n, err)
			}
			mustEqual(t, target, imgs[n].data)
		}
		// A second prune: the merged file with the file after it.
		if j < len(files) {
			again, _, _, _, err := mergeFiles(t, w, []string{out, files[j]}, MergeOptions{Key: k})
			if err != nil {
				t.Fatalf("merging the merged files %d to %d with file %d: %v", i, j-1, j, err)
			}
			os.Remove(target)
			applied := append(append(append([]string(nil), files[:i]...), again), files[j+1:]...)
			if _, err := (stateStore{}).apply(t, target, applied, Options{Key: k}); err != nil {
				t.Fatalf("files %d to %d merged twice, then the rest: %v", i, j, err)
			}
			mustEqual(t, target, imgs[len(imgs)-1].data)
		}
	}
}
