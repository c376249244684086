package main

// Every conversion between the packages' types lives here. The catalog
// imports nothing of ours, so it keeps snapshot ids as strings and its own
// Mark; archive's headers and restore's states are turned into catalog
// records, and back, only by these functions.

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// catalogID is how the catalog spells a snapshot id: "" for none.
func catalogID(id archive.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// archiveID reads a snapshot id from the catalog ("" is none). A bad one
// means a damaged record: the error says which.
func archiveID(s string) (archive.ID, error) {
	if s == "" {
		return archive.ID{}, nil
	}
	id, err := archive.ParseID(s)
	if err != nil {
		return id, fmt.Errorf("the catalog holds a snapshot id that does not parse (%q: %w): run thinback verify", s, catalog.ErrCorrupt)
	}
	return id, nil
}

// snapshotRecord describes a delta file for the catalog, from its header and
// trailer: what backup, receive and catalog rebuild record.
func snapshotRecord(h *archive.Header, t archive.Trailer) catalog.Snapshot {
	s := catalog.Snapshot{
		ID:         catalogID(h.Snapshot.ID),
		Volume:     h.VolumeName,
		Time:       h.Snapshot.Time,
		Name:       h.Snapshot.Name,
		LVName:     h.Attr(archive.AttrLVMLV),
		LVUUID:     h.Attr(archive.AttrLVMLVUUID),
		VolumeSize: h.VolumeSize,
		DataBytes:  t.DataBytes,
		ZeroBytes:  t.ZeroBytes,
		FileDigest: fmt.Sprintf("%x", t.Digest),
	}
	if !h.IsFull() {
		s.Parent, s.ParentSize = catalogID(h.Parent.ID), h.ParentSize
	}
	if id, err := strconv.ParseInt(h.Attr(archive.AttrLVMThinID), 10, 64); err == nil {
		s.ThinID = id
	}
	return s
}

// mergedRecord is kept's record after its file was replaced by the merge
// with header h and trailer t (prune).
func mergedRecord(kept catalog.Snapshot, h *archive.Header, t archive.Trailer) catalog.Snapshot {
	rec := kept
	rec.Parent, rec.ParentSize = "", 0
	if !h.IsFull() {
		rec.Parent, rec.ParentSize = catalogID(h.Parent.ID), h.ParentSize
	}
	rec.DataBytes, rec.ZeroBytes, rec.FileDigest = t.DataBytes, t.ZeroBytes, fmt.Sprintf("%x", t.Digest)
	return rec
}

// volumeRecord describes the volume of a delta file for the catalog.
func volumeRecord(h *archive.Header) catalog.Volume {
	v := catalog.Volume{Name: h.VolumeName, UUID: h.VolumeUUID, Kind: catalog.KindFile, BlockSize: h.BlockSize, Source: h.Attr(archive.AttrFilePath)}
	if h.Attr(archive.AttrLVMVG) != "" {
		v.Kind = catalog.KindLVMThin
		if h.Attr(archive.AttrLVMKind) == archive.LVMKindThick {
			v.Kind = catalog.KindLVMThick
		}
		v.Source = h.Attr(archive.AttrLVMVG) + "/" + h.Attr(archive.AttrLVMOrigin)
	}
	return v
}

// parentSnapshot is the parent identity a header names for an incremental
// from the recorded snapshot rec.
func parentSnapshot(rec catalog.Snapshot) (archive.Snapshot, error) {
	id, err := archiveID(rec.ID)
	if err != nil {
		return archive.Snapshot{}, fmt.Errorf("snapshot #%d of %s: %w", rec.Seq, rec.Volume, err)
	}
	return archive.Snapshot{ID: id, Name: rec.Name, Time: rec.Time}, nil
}

// targetRecord is the state file's record of a target in state st.
func targetRecord(id restore.Identity, path string, st restore.State) catalog.Target {
	t := catalog.Target{Key: id.Key, Path: path, Volume: st.VolumeName, VolumeUUID: st.VolumeUUID,
		Dev: id.Dev, Ino: id.Ino, Device: id.Device}
	if !st.Snapshot.ID.IsZero() {
		t.Snapshot, t.SnapshotName, t.SnapshotTime = catalogID(st.Snapshot.ID), st.Snapshot.Name, st.Snapshot.Time
	}
	if fp := st.Fingerprint; fp != nil {
		t.Fingerprint = &catalog.Fingerprint{Size: fp.Size, BlockSize: fp.BlockSize}
		for _, smp := range fp.Samples {
			t.Fingerprint.Samples = append(t.Fingerprint.Samples, catalog.Sample{Offset: smp.Offset, Digest: hex.EncodeToString(smp.Digest[:])})
		}
	}
	if fs := st.FileStat; fs != nil {
		t.FileStat = &catalog.FileStat{Size: fs.Size, MtimeNs: fs.Mtime, CtimeNs: fs.Ctime, Dev: fs.Dev, Ino: fs.Ino}
	}
	if m := st.InProgress; m != nil {
		t.InProgress = &catalog.Mark{Snapshot: catalogID(m.Snapshot), Parent: catalogID(m.Parent),
			UndoSnapshot: catalogID(m.Undo), Files: m.Files, Started: m.Started,
			WroteFrom: m.WroteFrom, WroteTo: m.WroteTo, Stopped: m.Stopped}
	}
	return t
}

// targetState is restore's view of a target's record.
func targetState(t catalog.Target) (restore.State, error) {
	st := restore.State{VolumeName: t.Volume, VolumeUUID: t.VolumeUUID}
	var err error
	if st.Snapshot.ID, err = archiveID(t.Snapshot); err != nil {
		return st, err
	}
	st.Snapshot.Name, st.Snapshot.Time = t.SnapshotName, t.SnapshotTime
	if fp := t.Fingerprint; fp != nil {
		st.Fingerprint = &restore.Fingerprint{Size: fp.Size, BlockSize: fp.BlockSize}
		for _, smp := range fp.Samples {
			var d archive.Digest
			if n, err := hex.Decode(d[:], []byte(smp.Digest)); err != nil || n != len(d) {
				return st, fmt.Errorf("the state file's fingerprint of %s holds a digest that does not parse (%q): %w", t.Key, smp.Digest, catalog.ErrCorrupt)
			}
			st.Fingerprint.Samples = append(st.Fingerprint.Samples, restore.Sample{Offset: smp.Offset, Digest: d})
		}
	}
	if fs := t.FileStat; fs != nil {
		st.FileStat = &restore.FileStat{Size: fs.Size, Mtime: fs.MtimeNs, Ctime: fs.CtimeNs, Dev: fs.Dev, Ino: fs.Ino}
	}
	if m := t.InProgress; m != nil {
		st.InProgress = &restore.Mark{Files: m.Files, Started: m.Started, WroteFrom: m.WroteFrom, WroteTo: m.WroteTo, Stopped: m.Stopped}
		for _, p := range []struct {
			dst *archive.ID
			s   string
		}{{&st.InProgress.Snapshot, m.Snapshot}, {&st.InProgress.Parent, m.Parent}, {&st.InProgress.Undo, m.UndoSnapshot}} {
			if *p.dst, err = archiveID(p.s); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}
