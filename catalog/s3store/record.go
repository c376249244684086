package s3store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/thinback/thinback/catalog"
)

// The objects of a store, by name relative to its prefix. See the package
// documentation for what each is for.
const (
	storeObjectName = "thinback-store.json"
	recordsDir      = "records/"
	volumesDir      = "volumes/"
	locksDir        = "locks/"
)

// Bounds on what is read of the small objects: a damaged or hostile
// store cannot make thinback allocate more.
const (
	maxStoreObject  = 64 << 10
	maxRecordObject = 256 << 10
	maxJournal      = 1 << 20
)

// Format versions of the small objects. A reader refuses a newer one
// rather than half understand it.
const (
	storeFormat   = 1
	recordFormat  = 1
	volumeFormat  = 1
	journalFormat = 1
)

// storeObject is thinback-store.json: the store's identity, made once by
// the first writer.
type storeObject struct {
	Format int `json:"thinback_store"`
	// ID names the store's local caches: two addresses of one store
	// (another endpoint, a proxy) share a cache, two stores never do.
	ID string `json:"id"`
	// PieceSize is the largest object a delta file is stored in; larger
	// files continue in further objects (see pieceName).
	PieceSize int64     `json:"piece_size"`
	Created   time.Time `json:"created"`
}

func (o *storeObject) validate() error {
	switch {
	case o.Format == 0:
		return errors.New("it is not a thinback store object")
	case o.Format > storeFormat:
		return fmt.Errorf("it has format %d, this thinback reads up to %d: %w", o.Format, storeFormat, ErrFormat)
	}
	if err := catalog.ValidID(o.ID); err != nil {
		return fmt.Errorf("store id: %w", err)
	}
	if o.PieceSize < minPieceSize || o.PieceSize > maxPieceSize {
		return fmt.Errorf("piece size %d is outside %d to %d", o.PieceSize, int64(minPieceSize), int64(maxPieceSize))
	}
	return nil
}

// recordObject is records/<dir>/<seq>-<id>.json: one snapshot's record,
// the commit of its delta file. The volume's record as it was at the
// commit travels with it, so the records alone rebuild a cache even when
// volume.json is gone.
type recordObject struct {
	Format   int              `json:"thinback_record"`
	Volume   catalog.Volume   `json:"volume"`
	Snapshot catalog.Snapshot `json:"snapshot"`
}

// volumeObject is records/<dir>/volume.json: the volume's record, with
// its retention policy.
type volumeObject struct {
	Format int            `json:"thinback_volume"`
	Volume catalog.Volume `json:"volume"`
}

// journalObject is records/<dir>/journal-<time>-<random>.json: the files
// a write to the volume may leave behind, written before the write
// starts and removed when it is done. A writer killed in between leaves
// it, and the next holder of the volume's lock removes each file it
// names that no record references. Nothing else is ever removed as an
// orphan: a file no journal names is kept whatever happened to its
// record.
type journalObject struct {
	Format int       `json:"thinback_journal"`
	Op     string    `json:"op"`
	Files  []string  `json:"files"`
	Time   time.Time `json:"time"`
}

// encode writes a small object as indented JSON with a final newline:
// people read these objects in bucket browsers.
func encode(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func recordName(volume string, seq uint64, id string) string {
	return recordsDir + catalog.DirName(volume) + "/" + fmt.Sprintf("%08d-%s.json", seq, id)
}

func volumeObjectName(volume string) string {
	return recordsDir + catalog.DirName(volume) + "/volume.json"
}

func lockName(volume string) string { return locksDir + catalog.DirName(volume) + ".lock" }

func volumePrefix(volume string) string { return volumesDir + catalog.DirName(volume) + "/" }

func recordPrefix(volume string) string { return recordsDir + catalog.DirName(volume) + "/" }

var (
	recordBase  = regexp.MustCompile(`^([0-9]{8,20})-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json$`)
	journalBase = regexp.MustCompile(`^journal-[0-9]{1,20}-[0-9a-f]{16}\.json$`)
)

// recordKind says what an object under records/ is.
type recordKind int

const (
	kindUnknown recordKind = iota
	kindSnapshot
	kindVolume
	kindJournal
)

// parseRecordName reads an object name under records/: the volume it
// belongs to, what it is, and for a snapshot record its seq and id.
func parseRecordName(name string) (volume string, kind recordKind, seq uint64, id string) {
	rest, ok := strings.CutPrefix(name, recordsDir)
	if !ok {
		return "", kindUnknown, 0, ""
	}
	dir, base, ok := strings.Cut(rest, "/")
	if !ok || strings.Contains(base, "/") {
		return "", kindUnknown, 0, ""
	}
	volume, err := catalog.ParseDirName(dir)
	if err != nil {
		return "", kindUnknown, 0, ""
	}
	switch {
	case base == "volume.json":
		return volume, kindVolume, 0, ""
	case journalBase.MatchString(base):
		return volume, kindJournal, 0, ""
	}
	m := recordBase.FindStringSubmatch(base)
	if m == nil {
		return volume, kindUnknown, 0, ""
	}
	seq, err = strconv.ParseUint(m[1], 10, 64)
	if err != nil || seq == 0 || fmt.Sprintf("%08d", seq) != m[1] {
		return volume, kindUnknown, 0, ""
	}
	return volume, kindSnapshot, seq, m[2]
}

// decodeRecord reads a snapshot record object and checks it as the
// catalog checks what it stores, and against its name: a record can only
// describe the snapshot its name says, in the volume its directory says,
// with a file of that volume, seq and id.
func decodeRecord(name string, data []byte) (recordObject, error) {
	var r recordObject
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("it does not decode: %w", err)
	}
	switch {
	case r.Format == 0:
		return r, errors.New("it is not a thinback record")
	case r.Format > recordFormat:
		return r, fmt.Errorf("it has format %d, this thinback reads up to %d: %w", r.Format, recordFormat, ErrFormat)
	}
	if err := catalog.ValidateSnapshot(r.Snapshot); err != nil {
		return r, err
	}
	if err := catalog.ValidateVolume(r.Volume); err != nil {
		return r, err
	}
	volume, kind, seq, id := parseRecordName(name)
	sn := r.Snapshot
	if kind != kindSnapshot || sn.Volume != volume || sn.Seq != seq || sn.ID != id || r.Volume.Name != volume {
		return r, fmt.Errorf("it describes snapshot %s (#%d) of volume %q, not what its name says", sn.ID, sn.Seq, sn.Volume)
	}
	f, ok := catalog.ParseFile(sn.File)
	if !ok || f.Volume != volume || f.Seq != seq || f.ID != id {
		return r, fmt.Errorf("its file %q is not a file of snapshot %s (#%d) of volume %q", sn.File, id, seq, volume)
	}
	if sn.FileSize <= 0 {
		return r, fmt.Errorf("its file size %d is not positive", sn.FileSize)
	}
	return r, nil
}

// decodeVolume reads a volume.json object.
func decodeVolume(name string, data []byte) (catalog.Volume, error) {
	var o volumeObject
	if err := json.Unmarshal(data, &o); err != nil {
		return o.Volume, fmt.Errorf("it does not decode: %w", err)
	}
	switch {
	case o.Format == 0:
		return o.Volume, errors.New("it is not a thinback volume record")
	case o.Format > volumeFormat:
		return o.Volume, fmt.Errorf("it has format %d, this thinback reads up to %d: %w", o.Format, volumeFormat, ErrFormat)
	}
	if err := catalog.ValidateVolume(o.Volume); err != nil {
		return o.Volume, err
	}
	if volume, kind, _, _ := parseRecordName(name); kind != kindVolume || volume != o.Volume.Name {
		return o.Volume, fmt.Errorf("it describes volume %q, not what its name says", o.Volume.Name)
	}
	return o.Volume, nil
}

// decodeJournal reads a journal object. Only files of its own volume are
// taken from it: a damaged journal cannot name another volume's files.
func decodeJournal(name string, data []byte) (journalObject, error) {
	var j journalObject
	if err := json.Unmarshal(data, &j); err != nil {
		return j, fmt.Errorf("it does not decode: %w", err)
	}
	if j.Format == 0 || j.Format > journalFormat {
		return j, fmt.Errorf("it has format %d, this thinback reads %d", j.Format, journalFormat)
	}
	volume, kind, _, _ := parseRecordName(name)
	if kind != kindJournal {
		return j, errors.New("it is not a journal")
	}
	for _, f := range j.Files {
		df, ok := catalog.ParseFile(f)
		if !ok || df.Volume != volume {
			return j, fmt.Errorf("it names %q, which is not a delta file of volume %q", f, volume)
		}
	}
	return j, nil
}

// pieceName is the name of the n-th object (from 1) of a delta file: the
// file's own name for the first, <file>.<n> for the others. Most files
// fit in one piece and so have the local layout's name exactly.
func pieceName(file string, n int) string {
	if n == 1 {
		return file
	}
	return file + "." + strconv.Itoa(n)
}

// parsePiece reads an object name under volumes/ as a piece of a delta
// file: the file and the piece number.
func parsePiece(name string) (catalog.DeltaFile, int, bool) {
	if f, ok := catalog.ParseFile(name); ok {
		return f, 1, true
	}
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return catalog.DeltaFile{}, 0, false
	}
	n, err := strconv.Atoi(name[i+1:])
	if err != nil || n < 2 || strconv.Itoa(n) != name[i+1:] {
		return catalog.DeltaFile{}, 0, false
	}
	f, ok := catalog.ParseFile(name[:i])
	return f, n, ok
}

// pieces is how many objects a delta file of size bytes takes.
func pieces(size, pieceSize int64) int {
	if size <= 0 {
		return 1
	}
	return int((size + pieceSize - 1) / pieceSize)
}
