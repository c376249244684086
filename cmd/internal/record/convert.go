// Package record is where thinback's packages' types meet the catalog's:
// a delta file's header and trailer become a catalog record and back, a
// restore state becomes a target record and back, and a delta file
// reached by way of the catalog is checked against its record before
// anything reads it. The catalog imports nothing of ours, so it keeps
// snapshot ids as strings and its own Mark; only these functions convert.
package record

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/restore"
)

// ID is how the catalog spells a snapshot id: "" for none.
func ID(id archive.ID) string {
	if id.IsZero() {
		return ""
	}
	return id.String()
}

// ParseID reads a snapshot id from the catalog ("" is none). A bad one
// means a damaged record: the error says which.
func ParseID(s string) (archive.ID, error) {
	if s == "" {
		return archive.ID{}, nil
	}
	id, err := archive.ParseID(s)
	if err != nil {
		return id, fmt.Errorf("the catalog holds a snapshot id that does not parse (%q: %w): run thinback verify", s, catalog.ErrCorrupt)
	}
	return id, nil
}

// OfFile describes a delta file for the catalog, from its header and
// trailer: what backup, receive and catalog rebuild record.
func OfFile(h *archive.Header, t archive.Trailer) catalog.Snapshot {
	s := catalog.Snapshot{
		ID:         ID(h.Snapshot.ID),
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
		s.Parent, s.ParentSize = ID(h.Parent.ID), h.ParentSize
	}
	if id, err := strconv.ParseInt(h.Attr(archive.AttrLVMThinID), 10, 64); err == nil {
		s.ThinID = id
	}
	return s
}

// Merged is kept's record after its file was replaced by the merge
// with header h and trailer t (prune).
func Merged(kept catalog.Snapshot, h *archive.Header, t archive.Trailer) catalog.Snapshot {
	rec := kept
	rec.Parent, rec.ParentSize = "", 0
	if !h.IsFull() {
		rec.Parent, rec.ParentSize = ID(h.Parent.ID), h.ParentSize
	}
	rec.DataBytes, rec.ZeroBytes, rec.FileDigest = t.DataBytes, t.ZeroBytes, fmt.Sprintf("%x", t.Digest)
	return rec
}

// VolumeOf describes the volume of a delta file for the catalog.
func VolumeOf(h *archive.Header) catalog.Volume {
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

// ParentOf is the parent identity a header names for an incremental
// from the recorded snapshot rec.
func ParentOf(rec catalog.Snapshot) (archive.Snapshot, error) {
	id, err := ParseID(rec.ID)
	if err != nil {
		return archive.Snapshot{}, fmt.Errorf("snapshot #%d of %s: %w", rec.Seq, rec.Volume, err)
	}
	return archive.Snapshot{ID: id, Name: rec.Name, Time: rec.Time}, nil
}

// OfTarget is the state file's record of a target in state st.
func OfTarget(id restore.Identity, path string, st restore.State) catalog.Target {
	t := catalog.Target{Key: id.Key, Path: path, Volume: st.VolumeName, VolumeUUID: st.VolumeUUID,
		Dev: id.Dev, Ino: id.Ino, Device: id.Device}
	if !st.Snapshot.ID.IsZero() {
		t.Snapshot, t.SnapshotName, t.SnapshotTime = ID(st.Snapshot.ID), st.Snapshot.Name, st.Snapshot.Time
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
		t.InProgress = &catalog.Mark{Snapshot: ID(m.Snapshot), Parent: ID(m.Parent),
			UndoSnapshot: ID(m.Undo), Files: m.Files, Started: m.Started,
			WroteFrom: m.WroteFrom, WroteTo: m.WroteTo, Stopped: m.Stopped,
			Done: m.Done, VolumeSize: m.Size}
	}
	return t
}

// TargetState is restore's view of a target's record.
func TargetState(t catalog.Target) (restore.State, error) {
	st := restore.State{VolumeName: t.Volume, VolumeUUID: t.VolumeUUID}
	var err error
	if st.Snapshot.ID, err = ParseID(t.Snapshot); err != nil {
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
		st.InProgress = &restore.Mark{Files: m.Files, Started: m.Started, WroteFrom: m.WroteFrom, WroteTo: m.WroteTo, Stopped: m.Stopped,
			Done: m.Done, Size: m.VolumeSize}
		for _, p := range []struct {
			dst *archive.ID
			s   string
		}{{&st.InProgress.Snapshot, m.Snapshot}, {&st.InProgress.Parent, m.Parent}, {&st.InProgress.Undo, m.UndoSnapshot}} {
			if *p.dst, err = ParseID(p.s); err != nil {
				return st, err
			}
		}
	}
	return st, nil
}
