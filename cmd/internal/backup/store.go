package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// StoreOptions are what StoreDelta writes and records.
type StoreOptions struct {
	Header   *archive.Header
	Source   archive.Source
	Level    archive.Level
	Progress Progress // told of the bytes written; nil for none
	// Record holds the LVM fields of the snapshot's record.
	Record catalog.Snapshot
	// NewVolume, when not nil, is recorded with the snapshot (the
	// volume's first: it is recorded with it or not at all).
	NewVolume *catalog.Volume
	// Key, the key of an encrypted store, encrypts the file; nil writes
	// it in the clear.
	Key *archive.Key
}

// StoreDelta writes a delta file of o.Source into the store and records
// it.
func StoreDelta(ctx context.Context, s catalog.Repository, o StoreOptions) (catalog.Snapshot, error) {
	h := o.Header
	var prog func(int64)
	if o.Progress != nil {
		prog = o.Progress.Add
	}
	write := func(out io.Writer) (catalog.Snapshot, error) {
		w := archive.NewWriter(out, archive.WithKey(o.Key))
		if err := w.WriteHeader(h); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := archive.Send(ctx, w, o.Source, archive.SendOptions{Level: o.Level, Progress: prog}); err != nil {
			return catalog.Snapshot{}, err
		}
		if err := w.Close(); err != nil {
			return catalog.Snapshot{}, err
		}
		full := record.OfFile(h, w.Trailer())
		full.LVName, full.LVUUID, full.ThinID = o.Record.LVName, o.Record.LVUUID, o.Record.ThinID
		return full, nil
	}
	var full catalog.Snapshot
	var err error
	if o.NewVolume != nil {
		full, err = s.WriteVolumeDelta(*o.NewVolume, record.ID(h.Snapshot.ID), write)
	} else {
		full, err = s.WriteDelta(h.VolumeName, record.ID(h.Snapshot.ID), write)
	}
	return full, StoreWriteError(s.String(), err)
}

// StoreWriteError says what to do about a store that cannot take a file.
func StoreWriteError(dir string, err error) error {
	switch {
	case errors.Is(err, catalog.ErrNoSpace), errors.Is(err, syscall.ENOSPC):
		return fmt.Errorf("writing into store %s: %w; nothing was kept: free space (thinback prune) and run again", dir, err)
	case errors.Is(err, catalog.ErrTooLarge):
		return fmt.Errorf("writing into store %s: %w; nothing was kept", dir, err)
	}
	return err
}

// chainDigests opens the per-block digests of snapshot rec's chain, from
// the store's files (each checked against its record: OpenChain), for a
// backup that compares a volume's blocks with them. The returned function
// closes the files.
//
// With the key of an encrypted store, every file must be encrypted
// under it: headers and the links between the files are authenticated
// here, the records as they are read. The returned Base is what an
// incremental from rec must follow (BindParent).
func chainDigests(s catalog.Repository, key *archive.Key, rec catalog.Snapshot, blockSize int64) (*archive.ChainDigests, *Base, func(), error) {
	var chain []catalog.Snapshot
	var vol catalog.Volume
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if vol, err = tx.Volume(rec.Volume); err != nil {
			return err
		}
		chain, err = tx.Chain(rec.ID)
		return err
	})
	if err != nil {
		return nil, nil, nil, err
	}
	files, err := record.OpenChain(s.OpenDelta, s.String(), vol, chain)
	if err != nil {
		return nil, nil, nil, err
	}
	closeAll := func() { record.CloseAll(files) }
	var inputs []archive.ChainInput
	for _, f := range files {
		inputs = append(inputs, archive.ChainInput{Name: f.Name(), File: f})
	}
	prev, err := archive.OpenChainDigests(inputs, archive.WithKey(key))
	if err == nil && prev.BlockSize() != blockSize {
		err = fmt.Errorf("its block size is %d, the volume's %d", prev.BlockSize(), blockSize)
	}
	if err != nil {
		closeAll()
		return nil, nil, nil, err
	}
	return prev, &Base{Header: prev.Header()}, closeAll, nil
}

// baseFile opens the delta file of rec, the base of an incremental,
// through OpenChain, which checks that rec describes it, and with the key
// of an encrypted store authenticates its header (checkBase).
func baseFile(s catalog.Repository, key *archive.Key, rec catalog.Snapshot) (*Base, error) {
	var vol catalog.Volume
	if err := s.View(func(tx *catalog.Tx) error {
		var err error
		vol, err = tx.Volume(rec.Volume)
		return err
	}); err != nil {
		return nil, err
	}
	files, err := record.OpenChain(s.OpenDelta, s.String(), vol, []catalog.Snapshot{rec})
	if err != nil {
		return nil, err
	}
	base, err := checkBase(files[0], key)
	if cerr := record.CloseAll(files); err == nil {
		err = cerr
	}
	return base, err
}
