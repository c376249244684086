package catalog

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"

	bolt "go.etcd.io/bbolt"
)

// Tx is a catalog transaction, obtained from View or Update. Its methods
// read and write records; a read-write Tx is committed as a whole when the
// closure returns nil. A Tx is valid only inside its closure and must not
// be shared between goroutines.
type Tx struct {
	// btx is nil for the empty, read-only catalog that View presents
	// when the file does not exist.
	btx *bolt.Tx
}

// Writable reports whether the transaction may write.
func (tx *Tx) Writable() bool { return tx.btx != nil && tx.btx.Writable() }

// bucket returns a top-level bucket, or nil when it does not exist (an
// empty catalog).
func (tx *Tx) bucket(name []byte) *bolt.Bucket {
	if tx.btx == nil {
		return nil
	}
	return tx.btx.Bucket(name)
}

// writeBucket returns a top-level bucket for writing, creating it if a
// file somehow lacks it.
func (tx *Tx) writeBucket(name []byte) (*bolt.Bucket, error) {
	if !tx.Writable() {
		return nil, ErrReadOnly
	}
	return tx.btx.CreateBucketIfNotExists(name)
}

// seqKey encodes a sequence number so that bbolt's byte order is numeric
// order.
func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

// record is implemented by the stored record types.
type record interface {
	// validate checks a record; key is the bbolt key it is stored under.
	validate(key string) error
}

// decode unmarshals and validates one stored value. Anything read from
// disk goes through here, so a damaged or hand-edited record becomes an
// error naming its key, never a panic or a half-valid struct.
func decode[T any, P interface {
	*T
	record
}](bucket []byte, key, value []byte) (T, error) {
	var v T
	if err := json.Unmarshal(value, &v); err != nil {
		return v, &RecordError{Bucket: string(bucket), Key: string(key), Err: err}
	}
	if err := P(&v).validate(string(key)); err != nil {
		var zero T
		return zero, &RecordError{Bucket: string(bucket), Key: string(key), Err: err}
	}
	return v, nil
}

// put validates and stores one record.
func put(b *bolt.Bucket, bucket []byte, key string, r record) error {
	if err := r.validate(key); err != nil {
		return &RecordError{Bucket: string(bucket), Key: key, Err: err, write: true}
	}
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("catalog: encode %s record %q: %w", singular(string(bucket)), key, err)
	}
	return b.Put([]byte(key), data)
}

// Generation is the id of the catalog's last committed transaction as
// this one sees it (0 for an empty catalog): it changes with every
// commit, so a copy of the catalog made at one generation is current as
// long as the file's generation is the same.
func (tx *Tx) Generation() uint64 {
	if tx.btx == nil {
		return 0
	}
	return uint64(tx.btx.ID())
}

// WriteTo writes a consistent copy of the whole catalog file, as this
// transaction sees it, to w: a file that Open and View read like the
// original. An empty catalog writes nothing.
func (tx *Tx) WriteTo(w io.Writer) (int64, error) {
	if tx.btx == nil {
		return 0, nil
	}
	return tx.btx.WriteTo(w)
}
