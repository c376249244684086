package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/lvmthin"
	"github.com/thinback/thinback/restore"
)

// Outgoing is a delta of existing snapshots, or of an image, ready for
// send to write to a file or a pipe: the sources a backup takes its
// snapshots of, without the store.
type Outgoing struct {
	Header *archive.Header
	Source archive.Source
	// Progress is the progress shown; CountWrites says whether the bytes
	// written are added to it (else the source reports what it reads).
	Progress    Progress
	CountWrites bool
	// Guards are what the delta is read from, which standard output must
	// not be or hold.
	Guards []restore.Guard
	// Close ends the discovery and closes the sources; it may be called
	// again.
	Close func() error
	// Read returns the bytes of the sources read for a file of trailer
	// t; Detail, when not nil, says how the extents were found, for the
	// summary line, once Close has returned.
	Read   func(t archive.Trailer) int64
	Detail func() string
}

// LVSendOptions are what send makes a delta of an LV from.
type LVSendOptions struct {
	// Snap names the thin or classic snapshot, Base the older snapshot
	// of the same volume ("" for a full), in any spelling.
	Snap, Base string
	LV         LVOptions
	// Progress makes the progress display of total bytes.
	Progress func(total int64) Progress
}

// OpenLVSend opens a delta of the thin or classic snapshot o.Snap: a
// full, or what changed since o.Base.
func OpenLVSend(ctx context.Context, so LVSendOptions) (*Outgoing, error) {
	o, newProgress := so.LV, so.Progress
	ctx, commands := lvmthin.CountCommands(ctx)
	snap, rep, err := LookupLV(ctx, so.Snap, nil)
	if err != nil {
		return nil, err
	}
	var base *lvmthin.LV
	if so.Base != "" {
		if base, _, err = LookupLV(ctx, so.Base, rep); err != nil {
			return nil, fmt.Errorf("base: %w", err)
		}
	}
	origin, err := OriginOf(rep, snap)
	if err != nil {
		return nil, err
	}
	read := func(t archive.Trailer) int64 { return t.DataBytes }
	if k := snap.Kind(); k == lvmthin.KindClassicSnapshot || k == lvmthin.KindThick {
		// A thick LV itself is refused there, with what to snapshot.
		d, err := lvmthin.OpenClassic(ctx, lvmthin.ClassicOptions{Snap: snap, Base: base})
		if err != nil {
			if errors.Is(err, lvmthin.ErrBaseInvalid) {
				err = fmt.Errorf("%w; its exception table no longer lists every changed chunk: send a full (no --base), or back up with thinback backup, which compares digests then", err)
			}
			return nil, err
		}
		h := ClassicHeader(d.Snap(), d.Base(), origin, d.Size())
		h.Tool = o.Tool
		return &Outgoing{
			Header: h, Source: d,
			Progress: newProgress(d.Stats().DataBytes), CountWrites: true,
			Guards: lvGuards(snap, base, origin), Close: d.Close, Read: read,
			Detail: func() string {
				ds := d.Stats()
				return fmt.Sprintf("%d ranges from %s, %d+%d exceptions", ds.Ranges, ds.Tool, ds.BaseExceptions, ds.SnapExceptions)
			},
		}, nil
	}
	d, err := lvmthin.OpenDelta(ctx, lvmthin.DeltaOptions{Snap: snap, Base: base, ReleaseStale: o.ReleaseStale, Discovery: o.Discovery, Waiting: o.Waiting})
	if err != nil {
		return nil, err
	}
	h := ThinHeader(snap, base, origin)
	h.Tool = o.Tool
	return &Outgoing{
		Header: h, Source: d,
		Progress: newProgress(d.Stats().DataBytes), CountWrites: true,
		Guards: lvGuards(snap, base, origin), Close: d.Close, Read: read,
		Detail: func() string { return discoverySummary(d.Stats()) + "; " + LVMCost(commands()) },
	}, nil
}

// discoverySummary says how a thin delta's extents were found.
func discoverySummary(ds lvmthin.DeltaStats) string {
	var how string
	if ds.Discovery == lvmthin.DiscoverTools {
		how = fmt.Sprintf("%d ranges from %s", ds.Ranges, ds.Tool)
	} else {
		how = fmt.Sprintf("%d ranges from %s of metadata read natively", ds.Ranges, BytesHuman(ds.MetadataBytes))
	}
	return fmt.Sprintf("%s, metadata snapshot held %s", how, ds.MetadataSnapHeld.Round(time.Millisecond))
}

// LVMCost says what a run spent in LVM commands and device-mapper
// questions (dmsetup commands or ioctls), for the summary lines.
func LVMCost(cs lvmthin.CommandStats) string {
	return fmt.Sprintf("%d LVM and %d dmsetup commands, %d dm ioctls in %s",
		cs.LVM, cs.DMSetup, cs.DMIoctls, cs.LVMTime.Round(time.Millisecond))
}

// lvGuards are the LVs a send reads, or whose data it reads (the
// origin of a snapshot), as what standard output must not be or hold;
// an LV that is not active has no device to write to.
func lvGuards(snap, base, origin *lvmthin.LV) []restore.Guard {
	var g []restore.Guard
	for _, s := range []struct {
		what string
		lv   *lvmthin.LV
	}{{"snapshot", snap}, {"base snapshot", base}, {"origin", origin}} {
		if s.lv != nil && s.lv.DMPath != "" {
			g = append(g, restore.Guard{What: s.what + " " + s.lv.FullName().String(), Path: s.lv.DMPath})
		}
	}
	return g
}

// FileSendOptions are what send makes a delta of an image from.
type FileSendOptions struct {
	// File is the image; BaseFile, when set, an older image of the same
	// volume, whose snapshot id BaseID gives when it cannot be derived
	// (a block device).
	File, BaseFile, BaseID string
	// Volume and VolumeUUID are recorded in the file (the volume's name
	// defaults to the image's file name).
	Volume, VolumeUUID string
	BlockSize          int64
	Tool               string
	// Progress makes the progress display of total bytes.
	Progress func(total int64) Progress
}

// fileSnapshot names the state of an image. A regular file's identity is
// derived from its inode and modification time, so an incremental sent
// later against the same, unchanged file names the snapshot its full
// called itself, on any host; a changed file is a new snapshot. A block
// device has no such stamp: it gets a random identity.
func fileSnapshot(f *os.File, size int64, block bool) (archive.Snapshot, error) {
	st, err := f.Stat()
	if err != nil {
		return archive.Snapshot{}, err
	}
	if block {
		return archive.Snapshot{ID: archive.NewID(), Name: f.Name(), Time: time.Now().UTC()}, nil
	}
	sys := st.Sys().(*syscall.Stat_t)
	key := fmt.Sprintf("%d:%d:%d:%d", sys.Dev, sys.Ino, size, st.ModTime().UnixNano())
	return archive.Snapshot{ID: archive.DeriveID("file", key), Name: filepath.Base(f.Name()), Time: st.ModTime().UTC()}, nil
}

// OpenFileSend opens a delta of an image: a full, or with o.BaseFile the
// blocks that differ from the older image. The images are only read.
func OpenFileSend(o FileSendOptions) (_ *Outgoing, err error) {
	var files []*os.File
	var prog Progress
	closeFiles := func() error {
		for _, f := range files {
			f.Close()
		}
		files = nil
		return nil
	}
	defer func() {
		if err != nil {
			if prog != nil {
				prog.Done()
			}
			closeFiles()
		}
	}()
	nf, err := archive.OpenFile(o.File)
	if err != nil {
		return nil, err
	}
	files = append(files, nf)
	size, block, err := archive.FileSize(nf)
	if err != nil {
		return nil, err
	}
	snap, err := fileSnapshot(nf, size, block)
	if err != nil {
		return nil, err
	}
	abs, _ := filepath.Abs(o.File)
	h := &archive.Header{
		BlockSize: o.BlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: o.Volume, VolumeUUID: o.VolumeUUID, VolumeSize: size,
		Snapshot: snap, Tool: o.Tool,
	}
	if h.VolumeName == "" {
		h.VolumeName = filepath.Base(o.File)
	}
	h.SetAttr(archive.AttrFilePath, abs)

	prog = o.Progress(size)
	out := &Outgoing{
		Header: h, Progress: prog, CountWrites: o.BaseFile == "",
		Source: archive.NewFileSource(nf, size, block),
		Guards: []restore.Guard{{What: "image", Path: o.File}},
		Close:  closeFiles,
		Read:   func(t archive.Trailer) int64 { return t.DataBytes },
	}
	if o.BaseFile == "" {
		if o.BaseID != "" {
			return nil, &UsageError{Msg: "--base-id goes with --base-file"}
		}
		return out, nil
	}
	bf, err := archive.OpenFile(o.BaseFile)
	if err != nil {
		return nil, fmt.Errorf("base: %w", err)
	}
	files = append(files, bf)
	baseSize, err := fileBase(h, bf, o)
	if err != nil {
		return nil, err
	}
	// The comparison reads NEW once; progress follows it.
	out.Source = archive.NewCompareSource(nf, size, bf, baseSize, o.BlockSize, prog.Add)
	out.Guards = append(out.Guards, restore.Guard{What: "base image", Path: o.BaseFile})
	// Both images are read in full.
	out.Read = func(archive.Trailer) int64 { return size + min(size, baseSize) }
	return out, nil
}

// fileBase makes h an incremental from the older image bf, and returns
// its size.
func fileBase(h *archive.Header, bf *os.File, o FileSendOptions) (int64, error) {
	baseSize, baseBlock, err := archive.FileSize(bf)
	if err != nil {
		return 0, fmt.Errorf("base: %w", err)
	}
	base, err := fileSnapshot(bf, baseSize, baseBlock)
	if err != nil {
		return 0, fmt.Errorf("base: %w", err)
	}
	if o.BaseID != "" {
		if base.ID, err = archive.ParseID(o.BaseID); err != nil {
			return 0, &UsageError{Msg: "--base-id: " + err.Error()}
		}
	} else if baseBlock {
		return 0, &UsageError{Msg: fmt.Sprintf("the base %s is a block device, whose snapshot id cannot be derived: give --base-id (thinback inspect shows the id of the full you made of it)", o.BaseFile)}
	}
	if base.ID == h.Snapshot.ID {
		return 0, fmt.Errorf("%s and %s are the same unchanged file: there is nothing to send", o.File, o.BaseFile)
	}
	h.Parent, h.ParentSize = base, baseSize
	babs, _ := filepath.Abs(o.BaseFile)
	h.SetAttr(archive.AttrFileBasePath, babs)
	return baseSize, nil
}
