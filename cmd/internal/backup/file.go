package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/thinback/thinback/archive"
	"github.com/thinback/thinback/catalog"
	"github.com/thinback/thinback/cmd/internal/record"
)

// FileSource is an image or a block device, read as it is (it has no
// snapshot): the blocks whose digests differ from the previous backup's,
// derived from the store's files, are stored. It is only read.
type FileSource struct {
	path, abs string
	f         *os.File
	size      int64
	block     bool
	blockSize int64 // of a new volume
	tool      string

	// Set by ChooseBase and Discover.
	s          catalog.Repository
	key        *archive.Key // of an encrypted store
	v          catalog.Volume
	latest     catalog.Snapshot
	prev       *archive.ChainDigests
	base       *Base
	closeChain func()
	ds         *archive.DigestSource
}

// OpenFile opens the image or block device at path for a backup; a new
// volume gets blocks of blockSize bytes, and its files name tool. It
// opens the file before any store or lock is touched: a path that is not
// an image (a FIFO's open would block forever) fails here, holding
// nothing.
func OpenFile(path string, blockSize int64, tool string) (*FileSource, error) {
	f, err := archive.OpenFile(path)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		f.Close()
		return nil, err
	}
	size, block, err := archive.FileSize(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &FileSource{path: path, abs: abs, f: f, size: size, block: block, blockSize: blockSize, tool: tool}, nil
}

// Close closes the image.
func (fs *FileSource) Close() error { return fs.f.Close() }

// Identify implements Source: a new volume's name is the image's.
func (fs *FileSource) Identify() catalog.Volume {
	return catalog.Volume{Name: filepath.Base(fs.path), UUID: archive.NewID().String(), Kind: catalog.KindFile, Source: fs.abs, BlockSize: fs.blockSize}
}

// CheckVolume implements Source: an image moved is noted.
func (fs *FileSource) CheckVolume(v catalog.Volume) ([]string, error) {
	if v.Source != fs.abs {
		return []string{fmt.Sprintf("volume %s was backed up from %s; now from %s", v.Name, v.Source, fs.abs)}, nil
	}
	return nil, nil
}

// ChooseBase implements Source: the base is the newest backup, whose
// chain's block digests are opened. A chain that cannot be read makes a
// full, but in an encrypted store one with a file its key did not write
// fails the run.
func (fs *FileSource) ChooseBase(_ context.Context, s catalog.Repository, key *archive.Key, v catalog.Volume) ([]string, error) {
	fs.s, fs.key, fs.v = s, key, v
	err := s.View(func(tx *catalog.Tx) error {
		var err error
		if fs.latest, err = tx.Latest(v.Name); errors.Is(err, catalog.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil || fs.latest.ID == "" {
		return nil, err
	}
	fs.prev, fs.base, fs.closeChain, err = chainDigests(s, key, fs.latest, v.BlockSize)
	if err != nil && key != nil && IsKeyError(err) {
		return nil, baseKeyError(s, fs.latest, err)
	}
	if err != nil {
		return []string{fmt.Sprintf("cannot read the chain of the newest backup (%v): making a full; run thinback verify", err)}, nil
	}
	return nil, nil
}

// NextSnapshot implements Source: an image has no snapshot.
func (fs *FileSource) NextSnapshot() string { return "" }

// Origin implements Source.
func (fs *FileSource) Origin() string { return fs.abs }

// Live implements Source: the image is read as it is.
func (fs *FileSource) Live() bool { return true }

// TakeSnapshot implements Source: nothing to take.
func (fs *FileSource) TakeSnapshot(context.Context) error { return nil }

// Discover implements Source: every block of the image, compared with the
// base's digests when there is one.
func (fs *FileSource) Discover(_ context.Context, res *Result, newProgress func(int64) Progress) (*Delta, error) {
	name := fs.v.Name
	now := time.Now().UTC()
	h := &archive.Header{
		BlockSize: fs.v.BlockSize, Codec: archive.CodecZstd, Hash: archive.HashBLAKE3,
		VolumeName: name, VolumeUUID: fs.v.UUID, VolumeSize: fs.size,
		Snapshot: archive.Snapshot{ID: archive.NewID(), Name: name + "@" + now.Format("20060102T150405Z"), Time: now},
		Tool:     fs.tool,
	}
	h.SetAttr(archive.AttrFilePath, fs.abs)
	prog := newProgress(fs.size)
	d := &Delta{Header: h, Progress: prog, CountWrites: true}
	if fs.prev == nil {
		d.Source = archive.NewFileSource(fs.f, fs.size, fs.block)
		d.Stored = func(rec catalog.Snapshot, res *Result) {
			res.BytesRead = rec.DataBytes // holes are not read; zero blocks are
		}
		return d, nil
	}
	var err error
	if h.Parent, err = record.ParentOf(fs.latest); err != nil {
		return nil, err
	}
	// The parent's size as its file says (OpenChain checked the record
	// against it).
	h.ParentSize = fs.prev.Header().VolumeSize
	if err := BindParent(fs.key, h, fs.base); err != nil {
		return nil, err
	}
	fs.ds, err = archive.NewDigestSource(fs.f, fs.size, fs.v.BlockSize, fs.prev, archive.DigestSourceOptions{Progress: prog.Add, Key: fs.key})
	if err != nil {
		return nil, err
	}
	res.Kind, res.Parent = "incremental", fmt.Sprintf("#%d", fs.latest.Seq)
	d.Source = fs.ds
	d.CountWrites = false // the digest source reports what it examines
	d.Stored = func(_ catalog.Snapshot, res *Result) { res.BytesRead = fs.ds.Stats().Read }
	return d, nil
}

// RemoveSnapshot implements Source: there is none.
func (fs *FileSource) RemoveSnapshot(_ context.Context, err error) error { return err }

// Rotate implements Source: there is nothing to rotate.
func (fs *FileSource) Rotate(context.Context) []string { return nil }

// Release implements Source: the base's files and the digest source.
func (fs *FileSource) Release() {
	if fs.ds != nil {
		fs.ds.Close()
	}
	if fs.closeChain != nil {
		fs.closeChain()
	}
}
