package keys

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"filippo.io/age"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// The slot file format, version 1 (docs/FORMAT.md, "Key slots"). A slot
// file is one JSON object, its frame the same in every version:
//
//	{"slot":S,"wrapped":"W","sha256":"H"}
//
// S is the slot's header, a JSON object (version, id, type, creation
// time, label, the id of the master key, the nonce, and the parameters
// of its type); W is base64 of the master key sealed with
// XChaCha20-Poly1305 under the slot's key-encryption key, with the bytes
// of S, exactly as they stand in the file, as associated data; H is hex
// SHA-256 of S || "\n" || W. H is no protection (anyone can compute it):
// it tells a damaged slot (ErrCorrupt) from a wrong key (ErrWrongKey),
// which the AEAD alone cannot.
const (
	// Version is the slot format version this package writes and reads.
	Version = 1

	// MaxSlotSize bounds a slot file; larger is refused before parsing.
	MaxSlotSize = 16 << 10

	saltSize     = 32
	nonceSize    = chacha20poly1305.NonceSizeX
	wrappedSize  = KeySize + chacha20poly1305.Overhead
	idSize       = 8 // random bytes of a slot id
	maxLabel     = 128
	maxRecipient = 4096
	maxAgeBlob   = 8 << 10

	keyFileInfo = "thinback key slot: key file v1"
	// streamKeyInfo derives a key file's own master key, for files
	// written and read without a store (KeyFile.StreamKey).
	streamKeyInfo = "thinback key file: stream master key v1"
)

// Type is the kind of secret a slot is opened with.
type Type string

// The slot types.
const (
	// TypePassphrase: a passphrase, stretched with Argon2id under
	// parameters the slot records.
	TypePassphrase Type = "passphrase"
	// TypeKeyFile: a key file's random secret, through HKDF-SHA256.
	TypeKeyFile Type = "keyfile"
	// TypeRecovery: an age identity (X25519, or any age recipient type),
	// typically kept offline; the slot holds only its public recipient.
	TypeRecovery Type = "recovery"
)

func (t Type) secret() string {
	switch t {
	case TypePassphrase:
		return "the passphrase"
	case TypeKeyFile:
		return "the key file"
	case TypeRecovery:
		return "the age identity"
	}
	return "the key"
}

func (t Type) wrong() string {
	switch t {
	case TypePassphrase:
		return "wrong passphrase"
	case TypeKeyFile:
		return "wrong key file (is it this store's?)"
	case TypeRecovery:
		return "wrong identity (is it the one whose recipient the recovery slot names?)"
	}
	return "wrong key"
}

// Argon2Params are the Argon2id parameters of a passphrase slot.
type Argon2Params struct {
	Time      uint32 `json:"time"`       // passes
	MemoryKiB uint32 `json:"memory_kib"` // memory in KiB
	Threads   uint8  `json:"threads"`    // lanes
}

// Bounds on Argon2id parameters, for slots made and slots read: a slot
// from the store cannot make thinback spend more than 1 GiB or minutes.
const (
	MinArgon2MemoryKiB = 8 << 10
	MaxArgon2MemoryKiB = 1 << 20
	MaxArgon2Time      = 64
	MaxArgon2Threads   = 64
)

// DefaultArgon2 takes about a second and 128 MiB on a 2-CPU machine
// (BENCHMARKS.md, "Encryption (key slots)").
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 128 << 10, Threads: 2}

func (p Argon2Params) validate() error {
	switch {
	case p.Time < 1 || p.Time > MaxArgon2Time:
		return fmt.Errorf("argon2id time %d is outside 1 to %d", p.Time, MaxArgon2Time)
	case p.MemoryKiB < MinArgon2MemoryKiB || p.MemoryKiB > MaxArgon2MemoryKiB:
		return fmt.Errorf("argon2id memory %d KiB is outside %d to %d KiB", p.MemoryKiB, MinArgon2MemoryKiB, MaxArgon2MemoryKiB)
	case p.Threads < 1 || p.Threads > MaxArgon2Threads:
		return fmt.Errorf("argon2id threads %d is outside 1 to %d", p.Threads, MaxArgon2Threads)
	}
	return nil
}

// Slot is one key slot: the master key wrapped under one secret. A Slot
// is made by NewPassphraseSlot, NewKeyFileSlot or NewRecoverySlot, or read
// by Parse; its exported fields are informational (they are what
// `thinback key list` shows) and changing them changes nothing.
type Slot struct {
	ID        string       // 16 lowercase hex digits
	Type      Type         //
	Created   time.Time    // UTC, whole seconds
	Label     string       // optional, for people
	KeyID     KeyID        // the master key it wraps
	Argon2    Argon2Params // TypePassphrase only
	Recipient string       // TypeRecovery only: the age recipient it is wrapped to

	header  []byte // S: the slot member's bytes, the associated data
	nonce   []byte
	wrapped []byte
	salt    []byte // TypePassphrase, TypeKeyFile
	ageBlob []byte // TypeRecovery: the age file that holds the key-encryption key
	file    []byte
}

// Bytes returns the slot file.
func (s *Slot) Bytes() []byte { return bytes.Clone(s.file) }

// frame is the slot file's outer object.
type frame struct {
	Slot    json.RawMessage `json:"slot"`
	Wrapped *string         `json:"wrapped"`
	SHA256  *string         `json:"sha256"`
}

// header is the slot member, version 1.
type header struct {
	Version  int           `json:"version"`
	ID       string        `json:"id"`
	Type     Type          `json:"type"`
	Created  string        `json:"created"`
	Label    string        `json:"label,omitempty"`
	KeyID    string        `json:"key_id"`
	Nonce    string        `json:"nonce"`
	Argon2id *argon2JSON   `json:"argon2id,omitempty"`
	KeyFile  *keyFileJSON  `json:"keyfile,omitempty"`
	Recovery *recoveryJSON `json:"recovery,omitempty"`
}

type argon2JSON struct {
	Salt string `json:"salt"`
	Argon2Params
}

type keyFileJSON struct {
	Salt string `json:"salt"`
}

type recoveryJSON struct {
	Recipient string `json:"recipient"`
	Age       string `json:"age"` // base64 of an age file holding the 32-byte key-encryption key
}

// Parse reads a slot file. A damaged one gives a SlotError matching
// ErrCorrupt, one of a newer format one matching ErrVersion. Parse never
// allocates more than a small multiple of len(data), which it refuses
// above MaxSlotSize.
func Parse(data []byte) (*Slot, error) {
	s, err := parse(data)
	if err != nil {
		var se *SlotError
		if errors.As(err, &se) {
			return nil, err
		}
		return nil, &SlotError{ID: "", Err: err}
	}
	return s, nil
}

func parse(data []byte) (*Slot, error) {
	if len(data) > MaxSlotSize {
		return nil, fmt.Errorf("%d bytes, more than a slot's %d", len(data), MaxSlotSize)
	}
	var f frame
	if err := decodeStrict(data, &f); err != nil {
		return nil, err
	}
	if f.Slot == nil || f.Wrapped == nil || f.SHA256 == nil {
		return nil, errors.New("slot, wrapped or sha256 missing")
	}
	want := checksum(f.Slot, *f.Wrapped)
	if got, err := hex.DecodeString(*f.SHA256); err != nil || *f.SHA256 != hex.EncodeToString(got) || subtle.ConstantTimeCompare(got, want[:]) != 1 {
		return nil, errors.New("checksum mismatch")
	}
	// The checksum holds, so the file is as written: what follows fails
	// only for a slot of another version, or one made by hand.
	var v struct {
		Version int `json:"version"`
	}
	if err := json.Unmarshal(f.Slot, &v); err != nil {
		return nil, err
	}
	if v.Version != Version {
		var h struct {
			ID string `json:"id"`
		}
		_ = json.Unmarshal(f.Slot, &h)
		return nil, &SlotError{ID: printableID(h.ID), Err: fmt.Errorf("format version %d, this thinback reads %d", v.Version, Version), version: true}
	}
	var h header
	if err := decodeStrict(f.Slot, &h); err != nil {
		return nil, err
	}
	s := &Slot{header: bytes.Clone(f.Slot), file: bytes.Clone(data)}
	if err := s.fill(&h, *f.Wrapped); err != nil {
		if isLowerHex(h.ID, 2*idSize) {
			return nil, &SlotError{ID: h.ID, Err: err}
		}
		return nil, err
	}
	return s, nil
}

func checksum(header []byte, wrapped string) [sha256.Size]byte {
	d := sha256.New()
	d.Write(header)
	d.Write([]byte{'\n'})
	d.Write([]byte(wrapped))
	var sum [sha256.Size]byte
	d.Sum(sum[:0])
	return sum
}

// printableID returns id if it is a slot id, else a placeholder, so that
// a message never shows what a damaged file put there.
func printableID(id string) string {
	if isLowerHex(id, 2*idSize) {
		return id
	}
	return "(unnamed)"
}

// decodeStrict decodes one JSON object into v, refusing fields v does
// not have and anything after the object.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON object")
	}
	return nil
}

// decodeBase64 decodes standard base64 with padding, in its one canonical
// spelling, into exactly n bytes (any length up to max when n is 0).
func decodeBase64(field, s string, n, max int) ([]byte, error) {
	if len(s) > base64.StdEncoding.EncodedLen(max) {
		return nil, fmt.Errorf("%s: more than %d bytes", field, max)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || base64.StdEncoding.EncodeToString(b) != s {
		return nil, fmt.Errorf("%s: not canonical base64", field)
	}
	if (n > 0 && len(b) != n) || len(b) == 0 {
		return nil, fmt.Errorf("%s: %d bytes, not %d", field, len(b), n)
	}
	return b, nil
}

// fill validates h and the wrapped key and sets s from them.
func (s *Slot) fill(h *header, wrapped string) error {
	if !isLowerHex(h.ID, 2*idSize) {
		return errors.New("id is not 16 lowercase hex digits")
	}
	s.ID = h.ID
	created, err := time.Parse(time.RFC3339, h.Created)
	if err != nil || created.Format(time.RFC3339) != h.Created || created.Location() != time.UTC {
		return fmt.Errorf("created %q is not an RFC 3339 time in UTC, in whole seconds", h.Created)
	}
	s.Created = created
	if err := validLabel(h.Label); err != nil {
		return err
	}
	s.Label = h.Label
	id, ok := parseKeyID(h.KeyID)
	if !ok {
		return errors.New("key_id is not 16 lowercase hex digits")
	}
	s.KeyID = id
	if s.nonce, err = decodeBase64("nonce", h.Nonce, nonceSize, nonceSize); err != nil {
		return err
	}
	if s.wrapped, err = decodeBase64("wrapped", wrapped, wrappedSize, wrappedSize); err != nil {
		return err
	}
	params := 0
	for _, p := range []bool{h.Argon2id != nil, h.KeyFile != nil, h.Recovery != nil} {
		if p {
			params++
		}
	}
	s.Type = h.Type
	switch {
	case params != 1:
		return errors.New("not exactly one of argon2id, keyfile, recovery")
	case h.Type == TypePassphrase && h.Argon2id != nil:
		if err := h.Argon2id.validate(); err != nil {
			return err
		}
		s.Argon2 = h.Argon2id.Argon2Params
		s.salt, err = decodeBase64("argon2id salt", h.Argon2id.Salt, saltSize, saltSize)
	case h.Type == TypeKeyFile && h.KeyFile != nil:
		s.salt, err = decodeBase64("keyfile salt", h.KeyFile.Salt, saltSize, saltSize)
	case h.Type == TypeRecovery && h.Recovery != nil:
		if err := validRecipient(h.Recovery.Recipient); err != nil {
			return err
		}
		s.Recipient = h.Recovery.Recipient
		s.ageBlob, err = decodeBase64("recovery age", h.Recovery.Age, 0, maxAgeBlob)
	default:
		return fmt.Errorf("type %q with the parameters of another type", printable(string(h.Type)))
	}
	return err
}

func printable(s string) string {
	if len(s) > 32 {
		s = s[:32]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}

// validLabel allows up to 128 bytes of UTF-8 without control or format
// characters (which could retitle a terminal or reorder what it shows).
func validLabel(l string) error {
	if len(l) > maxLabel {
		return fmt.Errorf("label: %d bytes, more than %d", len(l), maxLabel)
	}
	if !utf8.ValidString(l) {
		return errors.New("label: not UTF-8")
	}
	for _, r := range l {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return fmt.Errorf("label: control or format character %U", r)
		}
	}
	return nil
}

// validRecipient allows what an age recipient is made of: "age1" and
// printable ASCII, bounded. The slot keeps it for people to see which
// identity opens it; unlocking does not use it.
func validRecipient(r string) error {
	if !strings.HasPrefix(r, "age1") || len(r) > maxRecipient {
		return errors.New("recovery recipient is not an age recipient")
	}
	for i := 0; i < len(r); i++ {
		if r[i] <= 0x20 || r[i] >= 0x7f {
			return errors.New("recovery recipient is not an age recipient")
		}
	}
	return nil
}

// newHeader starts the header of a new slot of type t for mk.
func newHeader(t Type, mk *MasterKey, label string) (*header, error) {
	if err := validLabel(label); err != nil {
		return nil, fmt.Errorf("key slot %w: %w", ErrInvalid, err)
	}
	var id [idSize]byte
	nonce := make([]byte, nonceSize)
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &header{
		Version: Version,
		ID:      hex.EncodeToString(id[:]),
		Type:    t,
		Created: time.Now().UTC().Truncate(time.Second).Format(time.RFC3339),
		Label:   label,
		KeyID:   mk.ID().String(),
		Nonce:   base64.StdEncoding.EncodeToString(nonce),
	}, nil
}

// seal wraps mk under kek in a slot with header h and returns it, as
// Parse reads the file it makes.
func seal(h *header, kek []byte, mk *MasterKey) (*Slot, error) {
	hdr, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	nonce, err := base64.StdEncoding.DecodeString(h.Nonce)
	if err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	w := base64.StdEncoding.EncodeToString(aead.Seal(nil, nonce, mk.key[:], hdr))
	sum := checksum(hdr, w)
	var f bytes.Buffer
	f.WriteString(`{"slot":`)
	f.Write(hdr)
	f.WriteString(`,"wrapped":"` + w + `","sha256":"` + hex.EncodeToString(sum[:]) + "\"}\n")
	return Parse(f.Bytes())
}

// open unwraps the master key with kek. A key that does not open the
// slot is ErrWrongKey.
func (s *Slot) open(kek []byte) (*MasterKey, error) {
	aead, err := chacha20poly1305.NewX(kek)
	if err != nil {
		return nil, err
	}
	plain, err := aead.Open(nil, s.nonce, s.wrapped, s.header)
	if err != nil {
		return nil, fmt.Errorf("key slot %s: %w", s.ID, ErrWrongKey)
	}
	mk := new(MasterKey)
	copy(mk.key[:], plain)
	clear(plain)
	if mk.ID() != s.KeyID {
		mk.Destroy()
		return nil, &SlotError{ID: s.ID, Err: fmt.Errorf("it opens a master key whose id is not the %s it records", s.KeyID)}
	}
	return mk, nil
}

func (s *Slot) want(t Type) error {
	if s.Type != t {
		return fmt.Errorf("key slot %s is a %s slot, not a %s slot: %w", s.ID, s.Type, t, ErrSlotType)
	}
	return nil
}

// NewPassphraseSlot wraps mk under passphrase, stretched with Argon2id
// under p (DefaultArgon2 for a store's slots). The passphrase is not kept.
func NewPassphraseSlot(mk *MasterKey, passphrase []byte, p Argon2Params, label string) (*Slot, error) {
	if len(passphrase) == 0 {
		return nil, fmt.Errorf("key slot: %w: the passphrase is empty", ErrInvalid)
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("key slot: %w: %w", ErrInvalid, err)
	}
	h, err := newHeader(TypePassphrase, mk, label)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	h.Argon2id = &argon2JSON{Salt: base64.StdEncoding.EncodeToString(salt), Argon2Params: p}
	kek := argon2.IDKey(passphrase, salt, p.Time, p.MemoryKiB, p.Threads, KeySize)
	defer clear(kek)
	return seal(h, kek, mk)
}

// OpenPassphrase unwraps the master key of a passphrase slot; a wrong
// passphrase is ErrWrongKey. It takes the slot's Argon2id time.
func (s *Slot) OpenPassphrase(passphrase []byte) (*MasterKey, error) {
	if err := s.want(TypePassphrase); err != nil {
		return nil, err
	}
	kek := argon2.IDKey(passphrase, s.salt, s.Argon2.Time, s.Argon2.MemoryKiB, s.Argon2.Threads, KeySize)
	defer clear(kek)
	return s.open(kek)
}

// NewKeyFileSlot wraps mk under the secret of key file kf.
func NewKeyFileSlot(mk *MasterKey, kf *KeyFile, label string) (*Slot, error) {
	h, err := newHeader(TypeKeyFile, mk, label)
	if err != nil {
		return nil, err
	}
	salt := make([]byte, saltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	h.KeyFile = &keyFileJSON{Salt: base64.StdEncoding.EncodeToString(salt)}
	kek, err := kf.kek(salt)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	return seal(h, kek, mk)
}

// OpenKeyFile unwraps the master key of a key-file slot; a key file of
// another slot is ErrWrongKey.
func (s *Slot) OpenKeyFile(kf *KeyFile) (*MasterKey, error) {
	if err := s.want(TypeKeyFile); err != nil {
		return nil, err
	}
	kek, err := kf.kek(s.salt)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	return s.open(kek)
}

// StreamKey returns the master key a key file is by itself, without a
// store: what encrypts a stream sent with only a key file (send -o with
// --key-file) and decrypts it on the receiving side. It is not the master
// key of any store the same file has a slot in: a stream under it is
// read with the key file, not with the store's other secrets.
func (kf *KeyFile) StreamKey() (*MasterKey, error) {
	b, err := hkdf.Key(sha256.New, kf.secret[:], nil, streamKeyInfo, KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(b)
	k := new(MasterKey)
	copy(k.key[:], b)
	return k, nil
}

func (kf *KeyFile) kek(salt []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, kf.secret[:], salt, keyFileInfo, KeySize)
}

// Recipient is an age recipient that can be written down: X25519
// (age1...) or post-quantum hybrid (age1pq1...) recipients are.
type Recipient interface {
	age.Recipient
	String() string
}

// NewRecoverySlot wraps mk to an age recipient: a random key-encryption
// key, encrypted to the recipient as an age file kept in the slot, wraps
// mk as in the other slots. Only the recipient's public key is needed, so
// the identity can stay offline.
func NewRecoverySlot(mk *MasterKey, r Recipient, label string) (*Slot, error) {
	rs := r.String()
	if err := validRecipient(rs); err != nil {
		return nil, fmt.Errorf("key slot: %w: %w", ErrInvalid, err)
	}
	h, err := newHeader(TypeRecovery, mk, label)
	if err != nil {
		return nil, err
	}
	kek := make([]byte, KeySize)
	defer clear(kek)
	if _, err := rand.Read(kek); err != nil {
		return nil, err
	}
	var blob bytes.Buffer
	w, err := age.Encrypt(&blob, r)
	if err != nil {
		return nil, fmt.Errorf("key slot: encrypt to %s: %w", rs, err)
	}
	if _, err := w.Write(kek); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	if blob.Len() > maxAgeBlob {
		return nil, fmt.Errorf("key slot: %w: the age file for %s takes %d bytes, more than %d", ErrInvalid, rs, blob.Len(), maxAgeBlob)
	}
	h.Recovery = &recoveryJSON{Recipient: rs, Age: base64.StdEncoding.EncodeToString(blob.Bytes())}
	return seal(h, kek, mk)
}

// OpenRecovery unwraps the master key of a recovery slot with any of
// identities; none of them the slot's is ErrWrongKey.
func (s *Slot) OpenRecovery(identities ...age.Identity) (*MasterKey, error) {
	if err := s.want(TypeRecovery); err != nil {
		return nil, err
	}
	r, err := age.Decrypt(bytes.NewReader(s.ageBlob), identities...)
	var nomatch *age.NoIdentityMatchError
	if errors.As(err, &nomatch) {
		return nil, fmt.Errorf("key slot %s: %w", s.ID, ErrWrongKey)
	}
	if err != nil {
		return nil, &SlotError{ID: s.ID, Err: fmt.Errorf("its age file: %w", err)}
	}
	kek, err := io.ReadAll(io.LimitReader(r, KeySize+1))
	defer clear(kek)
	if err != nil || len(kek) != KeySize {
		return nil, &SlotError{ID: s.ID, Err: fmt.Errorf("its age file does not hold a %d-byte key (%v)", KeySize, err)}
	}
	return s.open(kek)
}
