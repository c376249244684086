package archive

import (
	"container/list"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/zeebo/blake3"
)

// DefaultSnapshotCache is how many bytes of decoded records a
// SnapshotReader keeps, unless told otherwise: sixteen records of the
// largest size, or 64 of the 1 MiB records Send writes by default, so
// that the small reads of a filesystem (4 KiB to 1 MiB) decode each
// record once and a read-ahead has room.
const DefaultSnapshotCache = 64 << 20

// DefaultReadAhead is how far ahead of a sequential reader records are
// decoded: a few records of the largest size, or eight of Send's default.
const DefaultReadAhead = 8 << 20

// SnapshotOptions tune OpenSnapshot. The zero value is good.
type SnapshotOptions struct {
	// CacheSize bounds the bytes of decoded records kept for later reads;
	// 0 means DefaultSnapshotCache. The record a read needs is decoded
	// even when it alone is larger.
	CacheSize int64
	// Cache, if set, is a cache shared with other readers, and CacheSize
	// is not used: the reader keeps its decoded records there, decodes
	// ahead with its background slots and reuses its decoders.
	Cache *SnapshotCache
	// ReadAhead is how many bytes past a read that follows the one before
	// are decoded in the background, by one goroutine per CPU, so that a
	// sequential reader (dd, cp, a loop device) keeps every core busy; 0
	// means DefaultReadAhead, a negative value none. It is bounded by
	// half the cache.
	ReadAhead int64
	// Log, if set, is called once for each damaged record a read meets,
	// with a line naming the file, the record and the ranges affected.
	// It may be called from several goroutines at once.
	Log func(msg string)
	// Key reads a chain encrypted under it (see OpenChain's WithKey).
	Key *Key
}

// A SnapshotReader reads any byte range of the snapshot a chain of delta
// files leads to (full → … → snapshot) without restoring it: an
// io.ReaderAt over the volume at that point in time. It is how a
// snapshot is mounted (thinback mount) and browsed.
//
// OpenSnapshot merges the chain's records once (a Merger over the files'
// metadata, seeking over payloads) into an index of which record of which
// file holds the newest version of each range. The index holds no digests
// and no data: its memory grows with the number of records, never with
// the volume (IndexBytes says how much; about 70 bytes per record).
//
// ReadAt reads only the records a range needs, re-reads each record's
// metadata with its payload, checks it against what the index was built
// from, decodes the payload and verifies every block against its digest
// before returning a byte of it. Decoded records are kept in a small
// cache (SnapshotOptions.CacheSize), and a read that follows the one
// before starts decoding the next records in the background. ZERO ranges
// read as zeroes. A damaged record fails the reads of its range only,
// with an error naming the file and record (and wrapping ErrChecksum,
// ErrTruncated or ErrHeader); every other range still reads. Nothing
// unverified is ever returned.
//
// The files must stay open, and unchanged, while the reader is used: the
// reader holds no names, only the open files, so a file whose name is
// removed or replaced meanwhile (a store's prune writes a new generation
// and removes the old name) is still read as it was. ReadAt may be called
// from many goroutines at once.
type SnapshotReader struct {
	hdr   *Header
	bs    int64
	size  int64
	names []string
	ras   []io.ReaderAt
	// crypts holds the keys of each file of an encrypted chain.
	crypts []*fileCrypt

	// The index. Segment i covers [segOff[i], segOff[i+1]) (the last one
	// up to size) and reads from record segRec[i] of recs, or as zeroes
	// when segRec[i] < 0.
	segOff chunks[int64]
	segRec chunks[int32]
	recs   chunks[indexRecord]

	cache     *SnapshotCache
	ownCache  bool         // made for this reader alone, closed with it
	readAhead int64        // bytes
	aheadSeg  atomic.Int64 // the last segment handed to the read-ahead
	wg        sync.WaitGroup
	next      atomic.Int64 // where the last read ended
	log       func(string)
	logged    sync.Map // record index -> true once logged
	closed    atomic.Bool
}

// indexRecord is what the index keeps of a DATA record: where it is and
// a digest of its block digests, against which its metadata is checked
// when it is read again. The layout is packed by hand: a record costs
// 56 bytes here, and a 1 TiB volume in 1 MiB records has a million.
type indexRecord struct {
	offset     int64 // in the volume
	payloadPos int64 // in its file
	num        int64 // 1-based record number, for messages
	sum        [16]byte
	length     uint32
	payloadLen uint32
	input      uint32
	compressed bool
}

// indexSum is the first 16 bytes of BLAKE3 over a record's block
// digests: enough to tell that metadata read again is the metadata the
// file's digest chain covered when the index was built (128 bits, far
// beyond any accidental or contrived collision), at half the memory of a
// full digest.
func indexSum(h *blake3.Hasher, digests []byte) [16]byte {
	h.Reset()
	_, _ = h.Write(digests)
	var full [32]byte
	h.Sum(full[:0])
	var s [16]byte
	copy(s[:], full[:])
	return s
}

// digestBytes returns the digests as one byte slice, without a copy.
func digestBytes(d []Digest) []byte {
	if len(d) == 0 {
		return nil
	}
	return unsafe.Slice(&d[0][0], len(d)*DigestSize)
}

// OpenSnapshot reads the headers and every record's metadata of inputs,
// the chain of a snapshot from its full, oldest first (see OpenChain for
// the rules between the files), to every file's verified END record, and
// returns a reader of that snapshot. The first file must be a full. The
// files must stay open while the reader is used; Close the reader before
// them. Cancelling ctx stops the indexing.
func OpenSnapshot(ctx context.Context, inputs []ChainInput, opts SnapshotOptions) (*SnapshotReader, error) {
	c, err := OpenChain(inputs, WithKey(opts.Key))
	if err != nil {
		return nil, err
	}
	if first := c.Files()[0]; !first.Header.IsFull() {
		return nil, fmt.Errorf("%s is an incremental from %s: %w; a snapshot is read from its chain from the full", first.Name, first.Header.Parent.Describe(), ErrNotChain)
	}
	if len(inputs) > math.MaxUint32 {
		return nil, fmt.Errorf("a chain of %d files is too long to read: %w", len(inputs), ErrNotChain)
	}
	s := &SnapshotReader{hdr: c.Header(), bs: c.BlockSize(), size: c.Header().VolumeSize, log: opts.Log}
	for i, in := range inputs {
		s.names = append(s.names, in.Name)
		s.ras = append(s.ras, in.File)
		s.crypts = append(s.crypts, c.rds[i].crypt)
	}
	if err := s.index(ctx, c); err != nil {
		return nil, err
	}
	s.cache = opts.Cache
	if s.cache == nil {
		s.cache, s.ownCache = NewSnapshotCache(opts.CacheSize), true
	}
	s.readAhead = opts.ReadAhead
	if s.readAhead == 0 {
		s.readAhead = DefaultReadAhead
	}
	s.readAhead = min(max(s.readAhead, 0), s.cache.limit/2)
	s.next.Store(-1)
	return s, nil
}

// index merges the chain's records into the segments of the snapshot.
func (s *SnapshotReader) index(ctx context.Context, c *Chain) error {
	h := blake3.New()
	last := make([]*Record, len(s.ras)) // the record of each file indexed last
	lastIdx := make([]int32, len(s.ras))
	pos := int64(0)
	for n := 0; ; n++ {
		if n%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		seg, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if seg.Offset != pos {
			// The reader enforces a full's coverage; say so rather than
			// read a gap as anything.
			return fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", pos, seg.Offset, ErrNotChain)
		}
		pos = seg.End()
		ref := int32(-1)
		if seg.Kind == KindData {
			if last[seg.Input] != seg.Record {
				if s.recs.len() == math.MaxInt32 {
					return fmt.Errorf("the snapshot has more than %d records: too many to index", math.MaxInt32)
				}
				r := seg.Record
				s.recs.add(indexRecord{offset: r.Offset, payloadPos: r.PayloadPos, num: r.Num,
					sum: indexSum(h, digestBytes(r.Digests)), length: uint32(r.Length), payloadLen: uint32(r.PayloadLen),
					input: uint32(seg.Input), compressed: r.Compressed})
				last[seg.Input], lastIdx[seg.Input] = r, int32(s.recs.len()-1)
			}
			ref = lastIdx[seg.Input]
		}
		if n := s.segRec.len(); n > 0 && s.segRec.at(n-1) == ref {
			continue // the same record (or zeroes) goes on
		}
		s.segOff.add(seg.Offset)
		s.segRec.add(ref)
	}
	if pos != s.size {
		return fmt.Errorf("bytes [%d, %d) of the volume are defined by no file of the chain: %w", pos, s.size, ErrNotChain)
	}
	return nil
}

// Header returns the header of the chain's last file: the snapshot read,
// its volume and size.
func (s *SnapshotReader) Header() *Header { return s.hdr }

// Size returns the volume's size in the snapshot.
func (s *SnapshotReader) Size() int64 { return s.size }

// Records returns the number of DATA records the index refers to.
func (s *SnapshotReader) Records() int { return s.recs.len() }

// Segments returns the number of ranges of the index.
func (s *SnapshotReader) Segments() int { return s.segOff.len() }

// IndexBytes returns the memory the index holds.
func (s *SnapshotReader) IndexBytes() int64 {
	return s.segOff.bytes() + s.segRec.bytes() + s.recs.bytes()
}

// Close stops the background decoding and drops the records the reader
// keeps in its cache. It does not close the files. Reads after Close
// fail.
func (s *SnapshotReader) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.wg.Wait()
	s.cache.drop(s)
	if s.ownCache {
		s.cache.Close()
	}
	return nil
}

// SeekData returns the first offset at or after off that a DATA record
// defines, as lseek(SEEK_DATA) does, and false when none does (the rest
// reads as zeroes) or off is past the end. Ranges ZERO records define
// are holes: a copy of the snapshot need not write them.
func (s *SnapshotReader) SeekData(off int64) (int64, bool) {
	return s.seek(off, true)
}

// SeekHole returns the first offset at or after off where a hole starts
// (a ZERO range, or the end of the volume), as lseek(SEEK_HOLE) does,
// and false when off is past the end.
func (s *SnapshotReader) SeekHole(off int64) (int64, bool) {
	if off >= 0 && off < s.size {
		if h, ok := s.seek(off, false); ok {
			return h, true
		}
		return s.size, true
	}
	return 0, false
}

func (s *SnapshotReader) seek(off int64, data bool) (int64, bool) {
	if off < 0 || off >= s.size {
		return 0, false
	}
	for i := s.segment(off); i < s.segOff.len(); i++ {
		if (s.segRec.at(i) >= 0) == data {
			return max(off, s.segOff.at(i)), true
		}
	}
	return 0, false
}

// errReaderClosed is what reads of a closed SnapshotReader return.
var errReaderClosed = errors.New("archive: read of a closed SnapshotReader")

// segment returns the index of the segment holding off, which must be in
// [0, size).
func (s *SnapshotReader) segment(off int64) int {
	return sort.Search(s.segOff.len(), func(i int) bool { return s.segOff.at(i) > off }) - 1
}

func (s *SnapshotReader) segEnd(i int) int64 {
	if i+1 < s.segOff.len() {
		return s.segOff.at(i + 1)
	}
	return s.size
}

// ReadAt reads len(p) bytes of the snapshot at off. It returns io.EOF
// with the bytes up to the end of the volume when the range goes past it.
// A record that fails its checks fails the read with the bytes before its
// range (a short count) and an error naming the file and the record.
func (s *SnapshotReader) ReadAt(p []byte, off int64) (int, error) {
	if s.closed.Load() {
		return 0, errReaderClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("archive: read at negative offset %d", off)
	}
	if off >= s.size {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), s.size-off)]
	sequential := s.readAhead > 0 && s.isSequential(off)
	s.next.Store(off + int64(len(want)))
	n := 0
	i := s.segment(off)
	for n < len(want) {
		pos := off + int64(n)
		end := min(s.segEnd(i), off+int64(len(want)))
		dst := want[n : n+int(end-pos)]
		if ref := s.segRec.at(i); ref < 0 {
			clear(dst)
		} else {
			data, err := s.record(ref)
			if err != nil {
				return n, err
			}
			r := s.recs.ptr(int(ref))
			copy(dst, data[pos-r.offset:])
		}
		n += len(dst)
		if n < len(want) {
			i++
		}
	}
	if sequential {
		s.readAheadFrom(i, off+int64(n))
	}
	if len(want) < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// isSequential reports whether a read at off follows the last one: within
// a few records of where it ended, since a filesystem's readers and the
// kernel's read-ahead send their requests concurrently, slightly out of
// order.
func (s *SnapshotReader) isSequential(off int64) bool {
	last := s.next.Load()
	if last < 0 {
		return false
	}
	d := off - last
	return d > -2*MaxDataLen && d < 2*MaxDataLen
}

// readAheadFrom starts decoding, in the background, the records that
// are not cached in the ReadAhead bytes after a read that ended in segment
// i at end, as long as background slots are free. Segments handed out
// before are not walked again, so that a sequential reader of small
// records pays for each once.
func (s *SnapshotReader) readAheadFrom(i int, end int64) {
	if s.closed.Load() {
		return
	}
	limit := end + s.readAhead
	j := i + 1
	if a := int(s.aheadSeg.Load()); a > i && a < s.segOff.len() && s.segOff.at(a) <= limit {
		j = a + 1
	}
	for ; j < s.segRec.len() && s.segOff.at(j) < limit; j++ {
		ref := s.segRec.at(j)
		if ref >= 0 {
			select {
			case s.cache.ahead <- struct{}{}:
			default:
				return // every slot busy: the reader is ahead enough
			}
			e, fresh := s.cache.claim(s, ref)
			if !fresh {
				<-s.cache.ahead
			} else {
				e.background = true
				s.wg.Add(1)
				go func() {
					defer s.wg.Done()
					defer func() { <-s.cache.ahead }()
					s.load(ref, e)
				}()
			}
		}
		s.aheadSeg.Store(int64(j))
	}
}

// record returns the verified data of record ref, from the cache or read
// and decoded now (once, however many readers want it at the same time).
func (s *SnapshotReader) record(ref int32) ([]byte, error) {
	for {
		e, fresh := s.cache.claim(s, ref)
		if fresh {
			s.load(ref, e)
		} else {
			<-e.ready
		}
		if e.err == nil || fresh || !e.background {
			return e.data, e.err
		}
		// A background decode failed; read it again in the foreground,
		// so that the error is this read's own (and a transient one, of
		// the disk, gets its second chance).
	}
}

// load reads, checks and decodes record ref into e, publishes it in the
// cache (or drops it on error) and wakes the readers waiting for it.
func (s *SnapshotReader) load(ref int32, e *cacheEntry) {
	e.data, e.err = s.decode(ref)
	if e.err != nil {
		s.report(ref, e.err)
	}
	s.cache.done(s, ref, e)
}

// decode reads record ref (header, metadata and payload at once), checks
// its metadata against the index and returns its verified data.
func (s *SnapshotReader) decode(ref int32) ([]byte, error) {
	r := s.recs.ptr(int(ref))
	name, ra := s.names[r.input], s.ras[r.input]
	n := blocks(int64(r.length), s.bs)
	metaLen := dataMetaFixed + DigestSize*n
	crypt := s.crypts[r.input]
	stored := metaLen
	if crypt != nil {
		stored += aeadOverhead
	}
	pos := r.payloadPos - DigestSize - stored - rhdrLen
	buf := make([]byte, r.payloadPos+int64(r.payloadLen)-pos)
	rec := &Record{Kind: KindData, Offset: r.offset, Length: int64(r.length), Compressed: r.compressed,
		Num: r.num, Pos: pos, PayloadPos: r.payloadPos, PayloadLen: int64(r.payloadLen), blockSize: s.bs, crypt: crypt}
	got, err := ra.ReadAt(buf, pos)
	if got < len(buf) {
		if err == nil || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s: %w", name, recordError(rec, ErrTruncated, fmt.Sprintf("the file ends at byte %d, inside the record (did it shrink while being read?)", pos+int64(got))))
		}
		return nil, fmt.Errorf("%s: reading record %d at byte %d: %w", name, r.num, pos, err)
	}
	enc := byte(encRaw)
	if r.compressed {
		enc = encZstd
	}
	meta := buf[rhdrLen : rhdrLen+stored]
	if crypt != nil {
		var err error
		if meta, err = crypt.openMeta(nil, r.num, false, buf[:rhdrLen], Digest{}, meta); err != nil {
			return nil, fmt.Errorf("%s: %w", name, recordError(rec, ErrAuth, fmt.Sprintf("the record's metadata does not authenticate under key %s: the file changed or is damaged", crypt.key.id)))
		}
	}
	if buf[0] != typeData || buf[1] != enc || binary.LittleEndian.Uint32(buf[4:]) != uint32(stored) ||
		binary.LittleEndian.Uint32(buf[8:]) != r.payloadLen ||
		binary.LittleEndian.Uint64(meta[0:]) != uint64(r.offset) || binary.LittleEndian.Uint32(meta[8:]) != r.length {
		return nil, fmt.Errorf("%s: %w", name, recordError(rec, ErrHeader, "the record's header is not what the file held when it was indexed: the file changed or is damaged"))
	}
	digests := meta[dataMetaFixed:]
	if indexSum(blake3.New(), digests) != r.sum {
		return nil, fmt.Errorf("%s: %w", name, recordError(rec, ErrChecksum, "the record's block digests are not those the file's digest chain covered when it was indexed: the file changed or is damaged"))
	}
	rec.Digests = make([]Digest, n)
	copy(digestBytes(rec.Digests), digests)
	payload := buf[len(buf)-int(r.payloadLen):]

	var dec *Decoder
	select {
	case dec = <-s.cache.decoders:
	default:
		dec = NewDecoder()
	}
	data, err := dec.Decode(nil, rec, payload)
	select {
	case s.cache.decoders <- dec:
	default:
		dec.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return data, nil
}

// report logs a damaged record once.
func (s *SnapshotReader) report(ref int32, err error) {
	if s.log == nil {
		return
	}
	if _, seen := s.logged.LoadOrStore(ref, true); seen {
		return
	}
	r := s.recs.ptr(int(ref))
	s.log(fmt.Sprintf("%v; reads of volume bytes [%d, %d) of snapshot %s fail (an I/O error), every other range still reads",
		err, r.offset, r.offset+int64(r.length), s.hdr.Snapshot.Describe()))
}

// A SnapshotCache is what the SnapshotReaders opened with it share: the
// decoded data of recently read records, least recently used first out
// whichever reader read them, within one byte limit; the background
// decodes of their read-ahead (one per CPU in all); and a pool of
// decoders. A server that opens many snapshots for many clients then
// holds the memory of one cache, not of one per snapshot. An entry being
// loaded is in the map (so that its readers wait for it) but not yet in
// the LRU list nor counted.
type SnapshotCache struct {
	mu           sync.Mutex
	m            map[cacheKey]*cacheEntry
	lru          list.List // of cacheKey, most recent at the front
	bytes, limit int64
	ahead        chan struct{} // one token per background decode
	decoders     chan *Decoder
}

// cacheKey is a record of a reader.
type cacheKey struct {
	s   *SnapshotReader
	ref int32
}

// NewSnapshotCache returns a cache that keeps up to limit bytes of
// decoded records; 0 means DefaultSnapshotCache.
func NewSnapshotCache(limit int64) *SnapshotCache {
	if limit <= 0 {
		limit = DefaultSnapshotCache
	}
	return &SnapshotCache{m: make(map[cacheKey]*cacheEntry), limit: limit,
		ahead: make(chan struct{}, WorkerCount(0)), decoders: make(chan *Decoder, 2*WorkerCount(0))}
}

// Bytes returns the bytes of decoded records the cache holds now.
func (c *SnapshotCache) Bytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Limit returns the bytes of decoded records the cache keeps at most
// (and for a moment one record more, when that record alone is larger).
func (c *SnapshotCache) Limit() int64 { return c.limit }

// Close frees the pooled decoders. Close the readers first.
func (c *SnapshotCache) Close() error {
	for {
		select {
		case d := <-c.decoders:
			d.Close()
		default:
			return nil
		}
	}
}

// drop forgets the records of a closed reader.
func (c *SnapshotCache) drop(s *SnapshotReader) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, e := range c.m {
		if k.s != s {
			continue
		}
		if e.elem != nil {
			c.lru.Remove(e.elem)
			c.bytes -= int64(cap(e.data))
		}
		delete(c.m, k)
	}
}

type cacheEntry struct {
	data       []byte
	err        error
	ready      chan struct{} // closed once data or err is set
	elem       *list.Element // in lru once loaded
	background bool          // loaded by a read-ahead
}

// claim returns the entry of record ref of s: the cached or loading one,
// or a new one that the caller must load (fresh), which it registers.
func (c *SnapshotCache) claim(s *SnapshotReader, ref int32) (e *cacheEntry, fresh bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cacheKey{s, ref}
	if e, ok := c.m[k]; ok {
		if e.elem != nil {
			c.lru.MoveToFront(e.elem)
		}
		return e, false
	}
	e = &cacheEntry{ready: make(chan struct{})}
	// Once s is closed (checked under the lock that drop takes), load
	// but keep nothing.
	if !s.closed.Load() {
		c.m[k] = e
	}
	return e, true
}

// done publishes a loaded entry, or forgets a failed one (a later read
// tries again), and evicts what no longer fits.
func (c *SnapshotCache) done(s *SnapshotReader, ref int32, e *cacheEntry) {
	c.mu.Lock()
	k := cacheKey{s, ref}
	if c.m[k] == e {
		if e.err != nil {
			delete(c.m, k)
		} else {
			e.elem = c.lru.PushFront(k)
			c.bytes += int64(cap(e.data))
			for c.bytes > c.limit && c.lru.Len() > 1 {
				old := c.lru.Remove(c.lru.Back()).(cacheKey)
				c.bytes -= int64(cap(c.m[old].data))
				c.m[old].elem = nil
				delete(c.m, old)
			}
		}
	}
	c.mu.Unlock()
	close(e.ready)
}

// chunks is an append-only list kept in chunks of chunkLen elements, so
// that growing it never copies what it holds: an index of a million
// records then needs its own size, not twice that while it grows.
type chunks[T any] struct {
	c [][]T
	n int
}

const chunkBits = 12
const chunkLen = 1 << chunkBits

func (c *chunks[T]) add(v T) {
	if c.n%chunkLen == 0 {
		// A chunk starts small, so that the index of a small snapshot
		// stays small, and grows by append up to chunkLen.
		c.c = append(c.c, make([]T, 0, 16))
	}
	last := &c.c[len(c.c)-1]
	if len(*last) == cap(*last) {
		// Grow to at most chunkLen exactly: append's own growth would
		// overshoot it.
		grown := make([]T, len(*last), min(2*cap(*last), chunkLen))
		copy(grown, *last)
		*last = grown
	}
	*last = append(*last, v)
	c.n++
}

func (c *chunks[T]) len() int     { return c.n }
func (c *chunks[T]) at(i int) T   { return c.c[i>>chunkBits][i&(chunkLen-1)] }
func (c *chunks[T]) ptr(i int) *T { return &c.c[i>>chunkBits][i&(chunkLen-1)] }

// bytes returns the memory the list holds.
func (c *chunks[T]) bytes() int64 {
	var zero T
	n := int64(cap(c.c)) * int64(unsafe.Sizeof([]T(nil)))
	for _, ch := range c.c {
		n += int64(cap(ch)) * int64(unsafe.Sizeof(zero))
	}
	return n
}
