package s3store

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/catalog/s3"
	"github.com/thinback/thinback/catalog/s3/s3test"
)

// A chain written by one host is what another host, with a cache of its
// own, reads back: the records are the truth and a cold cache comes up to
// date from them. A file larger than a piece is stored in several objects
// and reads as one.
func TestChainAcrossHosts(t *testing.T) {
	r := newRand(t)
	srv := s3test.Start(t)
	a, b := newHost(t, srv), newHost(t, srv)

	st := a.open()
	unlock := lock(t, st, "vg0/vm1")
	full := randBytes(r, testPiece+123456) // two pieces
	incr := randBytes(r, 1+r.IntN(300000))
	s1 := write(t, st, "vg0/vm1", "", full, 0)
	s2 := write(t, st, "vg0/vm1", s1.ID, incr, 1)
	unlock()
	if s1.Seq != 1 || s2.Seq != 2 || s1.FileSize != int64(len(full)) || s2.FileSize != int64(len(incr)) {
		t.Fatalf("records: %+v %+v", s1, s2)
	}
	keys := objects(srv)
	for _, want := range []string{s1.File, s1.File + ".2", s2.File, recordName("vg0/vm1", 1, s1.ID),
		recordName("vg0/vm1", 2, s2.ID), volumeObjectName("vg0/vm1"), storeObjectName} {
		if !slices.Contains(keys, want) {
			t.Errorf("no object %s in %q", want, keys)
		}
	}
	if j := withPrefix(keys, "records/vg0+vm1/journal-"); len(j) > 0 {
		t.Errorf("journals left: %q", j)
	}
	if l := withPrefix(keys, locksDir); len(l) > 0 {
		t.Errorf("locks left: %q", l)
	}

	other := b.open(func(o *Options) { o.Create = false })
	if other.ID() != st.ID() {
		t.Fatalf("store ids %s and %s", other.ID(), st.ID())
	}
	if got := ids(snapshots(t, other, "vg0/vm1")); !slices.Equal(got, []string{s1.ID, s2.ID}) {
		t.Fatalf("other host sees %q", got)
	}
	readAll(t, other, s1.File, full)
	readAll(t, other, s2.File, incr)
	check(t, other)
	files, err := other.Files()
	if err != nil || len(files) != 2 || files[0].Size != int64(len(full)) || files[1].Path != s2.File {
		t.Fatalf("files: %+v, %v", files, err)
	}

	// A write from the second host goes on from what the first wrote.
	unlock = lock(t, other, "vg0/vm1")
	s3rec := write(t, other, "vg0/vm1", s2.ID, []byte("third"), 2)
	unlock()
	if s3rec.Seq != 3 {
		t.Fatalf("third snapshot has seq %d", s3rec.Seq)
	}
	// The first host's cache comes up to date when it opens the store again.
	st2 := a.open()
	if got := ids(snapshots(t, st2, "vg0/vm1")); !slices.Equal(got, []string{s1.ID, s2.ID, s3rec.ID}) {
		t.Fatalf("first host sees %q after a sync", got)
	}
}

func TestOpenWithoutStore(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	o := testOptions(h.cache)
	o.Create = false
	_, err := Open(testCtx(t), h.loc("nothing"), o)
	if !errors.Is(err, ErrNotStore) || !strings.Contains(err.Error(), "thinback init") {
		t.Fatalf("open of an empty prefix: %v", err)
	}
	loc := h.loc("x")
	loc.Bucket = "no-such-bucket"
	_, err = Open(testCtx(t), loc, testOptions(h.cache))
	if !errors.Is(err, s3.ErrNoBucket) {
		t.Fatalf("open of a missing bucket: %v", err)
	}
	o = testOptions(h.cache)
	o.S3.SecretKey = "wrong"
	_, err = Open(testCtx(t), h.loc("p"), o)
	if !errors.Is(err, s3.ErrCredentials) {
		t.Fatalf("open with a wrong secret: %v", err)
	}
}

// Writes without the volume's lock are refused.
func TestWriteNeedsLock(t *testing.T) {
	srv := s3test.Start(t)
	st := newHost(t, srv).open()
	_, err := st.WriteVolumeDelta(testVolume("v"), newTestID(), func(w io.Writer) (catalog.Snapshot, error) {
		t.Fatal("callback ran without the lock")
		return catalog.Snapshot{}, nil
	})
	if !errors.Is(err, ErrNotLocked) {
		t.Fatalf("write without lock: %v", err)
	}
	if got := withPrefix(objects(srv), volumesDir); len(got) > 0 {
		t.Fatalf("objects written: %q", got)
	}
}

// A failed write leaves nothing: no file, no record, no upload.
func TestFailedWriteLeavesNothing(t *testing.T) {
	r := newRand(t)
	srv := s3test.Start(t)
	st := newHost(t, srv).open()
	defer lock(t, st, "v")()
	boom := errors.New("boom")
	_, err := st.WriteVolumeDelta(testVolume("v"), newTestID(), func(w io.Writer) (catalog.Snapshot, error) {
		if _, err := w.Write(randBytes(r, testPiece+1000)); err != nil {
			return catalog.Snapshot{}, err
		}
		return catalog.Snapshot{}, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("write: %v", err)
	}
	if got := withPrefix(objects(srv), volumesDir); len(got) > 0 {
		t.Fatalf("objects left: %q", got)
	}
	if got := withPrefix(objects(srv), recordsDir); len(got) > 0 {
		t.Fatalf("records left: %q", got)
	}
	if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
		t.Fatalf("uploads left: %q", ups)
	}
	if snaps := snapshots(t, st, "v"); len(snaps) > 0 {
		t.Fatalf("snapshots: %+v", snaps)
	}
}

// Two stores of one host, or two hosts: one holds the lock, the other is
// told who. A lock left by a process of this host that was killed is
// broken by the next writer, with a warning, and its leftovers cleaned.
func TestLocks(t *testing.T) {
	srv := s3test.Start(t)
	a, b := newHost(t, srv), newHost(t, srv)
	sa, sb := a.open(), b.open()
	unlock := lock(t, sa, "v")
	_, err := sb.LockVolume("v")
	var le *LockedError
	if !errors.As(err, &le) || !errors.Is(err, catalog.ErrLocked) || errors.Is(err, s3.ErrStaleLock) {
		t.Fatalf("second lock: %v", err)
	}
	if le.Owner.PID != os.Getpid() || !strings.Contains(err.Error(), lockName("v")) {
		t.Fatalf("lock error does not name the owner and object: %v", err)
	}
	// Another volume is free.
	lock(t, sb, "w")()
	unlock()
	lock(t, sb, "v")()

	// A child takes the lock and dies holding it.
	runKilled(t, childSpec{Addr: srv.Addr, Cache: cacheDir(t), Op: "write", Point: "midstream", Volume: "v", ID: newTestID(), Data: make([]byte, 12<<20)})
	b.takeNotes()
	unlock = lock(t, sb, "v")
	notes := strings.Join(b.takeNotes(), "\n")
	if !strings.Contains(notes, "warning: broke the lock") || !strings.Contains(notes, "no longer runs") || !strings.Contains(notes, "removed") {
		t.Fatalf("notes do not report the broken lock and the cleanup:\n%s", notes)
	}
	unlock()
	check(t, sb)
}

// Each point of a write a process may be killed at leaves a store that
// checks clean once the volume's next writer has cleaned up, with the
// snapshot present exactly when its record was written.
func TestWriteKilled(t *testing.T) {
	r := newRand(t)
	for _, point := range []string{"write:journal", "midstream", "write:uploaded", "write:recorded"} {
		t.Run(strings.ReplaceAll(point, ":", "-"), func(t *testing.T) {
			srv := s3test.Start(t)
			h := newHost(t, srv)
			st := h.open()
			unlock := lock(t, st, "v")
			base := write(t, st, "v", "", randBytes(r, 1000+r.IntN(5000)), 0)
			unlock()
			id := newTestID()
			// Half of it (where midstream dies) is two pieces and 5.5 MiB
			// or a little more: two completed pieces and an unfinished
			// upload with a part (5 MiB) of the third are left.
			data := randBytes(r, 2*(2*testPiece+11<<19+r.IntN(256<<10)))
			runKilled(t, childSpec{Addr: srv.Addr, Cache: h.cache, Op: "write", Point: point, Volume: "v", ID: id, Parent: base.ID, Data: data, N: 1})

			leftUploads := len(srv.Uploads(srv.Bucket))
			leftFiles := len(withPrefix(objects(srv), volumesDir))
			h.takeNotes()
			st = h.open(func(o *Options) { o.BreakStaleLocks = true })
			unlock = lock(t, st, "v")
			// What the dead writer left is removed, and said.
			notes := strings.Join(h.takeNotes(), "\n")
			if point == "midstream" && (leftUploads == 0 || leftFiles < 2) {
				t.Errorf("a writer killed mid-stream left %d uploads and %d files: the test does not test the cleanup", leftUploads, leftFiles)
			}
			if leftUploads > 0 && !strings.Contains(notes, "(unfinished upload)") {
				t.Errorf("%d unfinished uploads, but the cleanup does not report them:\n%s", leftUploads, notes)
			}
			if point == "write:uploaded" && (leftFiles < 2 || !strings.Contains(notes, "removed volumes/v/")) {
				t.Errorf("the uploaded but unrecorded file is not reported removed (%d files):\n%s", leftFiles, notes)
			}
			got := ids(snapshots(t, st, "v"))
			want := []string{base.ID}
			if point == "write:recorded" {
				want = append(want, id)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("after a kill at %s: snapshots %q, want %q", point, got, want)
			}
			if point == "write:recorded" {
				snaps := snapshots(t, st, "v")
				readAll(t, st, snaps[1].File, data)
			}
			// The next write goes on, with a seq past the dead writer's.
			next := write(t, st, "v", got[len(got)-1], []byte("next"), 2)
			unlock()
			if next.Seq <= 2 && point != "write:journal" && point != "midstream" {
				t.Fatalf("next snapshot reuses seq %d", next.Seq)
			}
			check(t, st)
			if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
				t.Fatalf("uploads left: %q", ups)
			}
			if j := withPrefix(objects(srv), "records/v/journal-"); len(j) > 0 {
				t.Fatalf("journals left: %q", j)
			}
		})
	}
}

// A prune's merge killed at each step: the chain is valid at every step
// (the old one before the switch, the new one after), and the next writer
// finishes the cleanup.
func TestReplaceKilled(t *testing.T) {
	r := newRand(t)
	for _, point := range []string{"midstream", "replace:uploaded", "replace:switched", "replace:unrecorded", "replace:deleted"} {
		t.Run(strings.ReplaceAll(point, ":", "-"), func(t *testing.T) {
			srv := s3test.Start(t)
			h := newHost(t, srv)
			st := h.open()
			unlock := lock(t, st, "v")
			s1 := write(t, st, "v", "", randBytes(r, 2000), 0)
			s2 := write(t, st, "v", s1.ID, randBytes(r, 2000), 1)
			s3r := write(t, st, "v", s2.ID, randBytes(r, 2000), 2)
			unlock()
			// Merge s1 and s2 into s2 (kept), removing s1... a merge keeps
			// the newer snapshot: s2 becomes a full, s1 goes.
			merged := randBytes(r, 3000+r.IntN(testPiece))
			runKilled(t, childSpec{Addr: srv.Addr, Cache: h.cache, Op: "replace", Point: point, Volume: "v", ID: s2.ID,
				Data: merged, Remove: []string{s1.ID}, N: 1})

			st = h.open(func(o *Options) { o.BreakStaleLocks = true })
			unlock = lock(t, st, "v")
			snaps := snapshots(t, st, "v")
			got := ids(snaps)
			switched := point != "midstream" && point != "replace:uploaded"
			switch {
			case !switched && !slices.Equal(got, []string{s1.ID, s2.ID, s3r.ID}):
				t.Fatalf("before the switch: %q", got)
			case point == "replace:switched" && !slices.Equal(got, []string{s1.ID, s2.ID, s3r.ID}):
				t.Fatalf("after the switch: %q", got)
			case (point == "replace:unrecorded" || point == "replace:deleted") && !slices.Equal(got, []string{s2.ID, s3r.ID}):
				t.Fatalf("after the records were removed: %q", got)
			}
			for _, sn := range snaps {
				if sn.ID == s2.ID && switched {
					readAll(t, st, sn.File, merged)
					if sn.Parent != "" {
						t.Fatalf("merged snapshot keeps parent %s", sn.Parent)
					}
				}
			}
			unlock()
			check(t, st)
			if ups := srv.Uploads(srv.Bucket); len(ups) > 0 {
				t.Fatalf("uploads left: %q", ups)
			}
			if point == "replace:deleted" {
				if slices.Contains(objects(srv), s1.File) {
					t.Fatalf("the merged-away file %s is still there", s1.File)
				}
			}
		})
	}
}

// Remove and SetRetention reach other hosts through the records.
func TestRemoveAndRetention(t *testing.T) {
	srv := s3test.Start(t)
	a, b := newHost(t, srv), newHost(t, srv)
	st := a.open()
	unlock := lock(t, st, "v")
	s1 := write(t, st, "v", "", []byte("one"), 0)
	s2 := write(t, st, "v", s1.ID, []byte("two"), 1)
	if err := st.Remove("v", s1.ID); !errors.Is(err, catalog.ErrInUse) {
		t.Fatalf("remove of a parent: %v", err)
	}
	if err := st.Remove("v", s2.ID); err != nil {
		t.Fatal(err)
	}
	if err := st.SetRetention("v", catalog.Retention{KeepLast: 3}); err != nil {
		t.Fatal(err)
	}
	unlock()
	other := b.open()
	if got := ids(snapshots(t, other, "v")); !slices.Equal(got, []string{s1.ID}) {
		t.Fatalf("other host sees %q", got)
	}
	var v catalog.Volume
	if err := other.View(func(tx *catalog.Tx) (err error) { v, err = tx.Volume("v"); return err }); err != nil || v.Retention.KeepLast != 3 {
		t.Fatalf("retention: %+v, %v", v.Retention, err)
	}
	if slices.Contains(objects(srv), s2.File) {
		t.Fatalf("removed file %s still there", s2.File)
	}
	check(t, other)
}

// With the records gone, Files and Rebuild make them again; the files are
// never removed as orphans meanwhile.
func TestRebuild(t *testing.T) {
	r := newRand(t)
	srv := s3test.Start(t)
	a, b := newHost(t, srv), newHost(t, srv)
	st := a.open()
	unlock := lock(t, st, "v")
	s1 := write(t, st, "v", "", randBytes(r, testPiece+10), 0)
	s2 := write(t, st, "v", s1.ID, []byte("two"), 1)
	unlock()
	cl := srv.Client()
	for _, k := range withPrefix(objects(srv), recordsDir) {
		if err := cl.RemoveObject(context.Background(), srv.Bucket, "p/"+k, minio.RemoveObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	other := b.open()
	if snaps := snapshots(t, other, "v"); len(snaps) > 0 {
		t.Fatalf("records gone, yet %q", ids(snaps))
	}
	lock(t, other, "v")() // a writer's cleanup must not take the files
	check(t, other, catalog.ErrOrphan, catalog.ErrOrphan, catalog.ErrOrphan)
	files, err := other.Files()
	if err != nil || len(files) != 2 {
		t.Fatalf("files: %+v, %v", files, err)
	}
	// What a rebuild reads from the files' headers.
	var snaps []catalog.Snapshot
	for _, f := range files {
		sn := s1
		if f.ID == s2.ID {
			sn = s2
		}
		sn.Seq, sn.File, sn.FileSize = f.Seq, f.Path, f.Size
		snaps = append(snaps, sn)
	}
	if err := other.Rebuild([]catalog.Volume{testVolume("v")}, snaps); err != nil {
		t.Fatal(err)
	}
	if got := ids(snapshots(t, other, "v")); !slices.Equal(got, []string{s1.ID, s2.ID}) {
		t.Fatalf("after rebuild: %q", got)
	}
	check(t, other)
	// And the first host's stale cache agrees after its sync.
	if got := ids(snapshots(t, a.open(), "v")); !slices.Equal(got, []string{s1.ID, s2.ID}) {
		t.Fatalf("first host after rebuild: %q", got)
	}
}

// A damaged record is skipped and reported, never used.
func TestDamagedRecord(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	st := h.open()
	unlock := lock(t, st, "v")
	s1 := write(t, st, "v", "", []byte("one"), 0)
	unlock()
	bad := recordName("v", 7, newTestID())
	cl := srv.Client()
	if _, err := cl.PutObject(context.Background(), srv.Bucket, "p/"+bad, strings.NewReader(`{"thinback_record":1}`), -1, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	st = h.open()
	if got := ids(snapshots(t, st, "v")); !slices.Equal(got, []string{s1.ID}) {
		t.Fatalf("snapshots %q", got)
	}
	if notes := strings.Join(h.takeNotes(), "\n"); !strings.Contains(notes, bad) {
		t.Fatalf("damaged record not reported: %q", notes)
	}
	check(t, st, catalog.ErrCorrupt)
}

// A server that ignores If-None-Match is found out before anything is
// written, and the store refuses to be made there.
func TestNoConditionalWrites(t *testing.T) {
	srv := s3test.Start(t)
	// What such a server answers: success, where a conditional create
	// of an existing object should fail with 412.
	addr := s3test.HTTPProxy(t, srv.Addr, nil, func(resp *http.Response) error {
		if resp.StatusCode == http.StatusPreconditionFailed {
			resp.StatusCode, resp.Status = http.StatusOK, "200 OK"
			resp.Body = io.NopCloser(strings.NewReader(""))
			resp.ContentLength = 0
			resp.Header.Del("Content-Length")
			resp.Header.Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		}
		return nil
	})
	h := newHost(t, srv)
	o := testOptions(h.cache)
	loc := h.loc("p")
	loc.Host = addr
	_, err := Open(testCtx(t), loc, o)
	if !errors.Is(err, s3.ErrNoConditional) {
		t.Fatalf("open through a server without conditional writes: %v", err)
	}
	for _, k := range objects(srv) {
		if !strings.HasPrefix(k, "thinback-") || k == storeObjectName {
			t.Fatalf("object %s written", k)
		}
	}
}

// The cache lives under Options.Cache, by store id; removing it costs a
// sync, nothing else.
func TestCacheDir(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	st := h.open()
	unlock := lock(t, st, "v")
	s1 := write(t, st, "v", "", []byte("one"), 0)
	unlock()
	if st.CacheDir() != filepath.Join(h.cache, st.ID()) {
		t.Fatalf("cache dir %s", st.CacheDir())
	}
	if err := os.RemoveAll(st.CacheDir()); err != nil {
		t.Fatal(err)
	}
	if got := ids(snapshots(t, h.open(), "v")); !slices.Equal(got, []string{s1.ID}) {
		t.Fatalf("after removing the cache: %q", got)
	}
}

// A store object that does not decode, or does not check, is reported
// damaged, never used.
func TestDamagedStoreObject(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	cl := srv.Client()
	for _, body := range []string{"{", `{"thinback_store":1,"id":"not an id","piece_size":6291456}`, `{"thinback_store":99,"id":"x"}`} {
		if _, err := cl.PutObject(context.Background(), srv.Bucket, "p/"+storeObjectName, strings.NewReader(body), -1, minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err := Open(testCtx(t), h.loc("p"), testOptions(h.cache))
		var de *DamagedError
		if !errors.As(err, &de) || de.Object != storeObjectName {
			t.Fatalf("store object %q: %v", body, err)
		}
	}
}

// LocalFiles names the cache's catalog, which is on this machine, and
// none of a chain's delta files, which are in the bucket.
func TestLocalFiles(t *testing.T) {
	srv := s3test.Start(t)
	h := newHost(t, srv)
	st := h.open()
	unlock := lock(t, st, "v")
	s1 := write(t, st, "v", "", []byte("one"), 0)
	unlock()
	got := st.LocalFiles([]catalog.Snapshot{s1})
	want := []catalog.LocalFile{{What: "catalog cache", Path: filepath.Join(h.cache, st.ID(), "catalog.db")}}
	if !slices.Equal(got, want) {
		t.Fatalf("LocalFiles = %+v, want %+v", got, want)
	}
	if _, err := os.Stat(got[0].Path); err != nil {
		t.Errorf("the catalog cache: %v", err)
	}
}
