package decrypt

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/smartybridge/smartybridge/internal/crc16"
)

// Errors returned by Open. Test them with errors.Is.
var (
	// ErrHeader: the bytes do not start with a general-glo-ciphering header.
	ErrHeader = errors.New("not a general-glo-ciphering frame (want DB 08 <title> <length> 30)")
	// ErrShort: the frame is shorter than its header declares, or too short
	// to hold a counter and a tag.
	ErrShort = errors.New("frame too short")
	// ErrNoKey: no key is configured for the frame's system title and there
	// is no default key.
	ErrNoKey = errors.New("no key configured for this system title")
	// ErrAuth: the GCM tag does not verify; the key is wrong, or the frame
	// was damaged on the way.
	ErrAuth = errors.New("authentication failed")
	// ErrAuthKey wraps ErrAuth when the frame decrypts without its tag to a
	// telegram with a valid CRC: the decryption key is right and only the
	// authentication key differs.
	ErrAuthKey = fmt.Errorf("%w: the key is right but the authentication key differs", ErrAuth)
)

// TagSize is the length of the truncated GCM tag at the end of a frame.
const TagSize = 12

// securityControl is the only security-control byte Smarty sends:
// authenticated and encrypted, with a global unicast key.
const securityControl = 0x30

// Header is the clear-text part of a frame.
type Header struct {
	Title   Title  // system title: maker code and meter serial
	Counter uint32 // invocation counter; grows by one per frame
	Start   int    // offset of the ciphertext in the frame
	Len     int    // length of the whole frame, header included
}

// ParseHeader reads the header of frame; frame may be longer than the frame
// it starts with.
func ParseHeader(frame []byte) (Header, error) {
	var h Header
	if len(frame) < 11 {
		return h, ErrShort
	}
	if frame[0] != 0xDB || frame[1] != 0x08 {
		return h, ErrHeader
	}
	copy(h.Title[:], frame[2:10])
	n, hl := 0, 0
	switch b := frame[10]; {
	case b < 0x80:
		n, hl = int(b), 11
	case b == 0x81 && len(frame) >= 12:
		n, hl = int(frame[11]), 12
	case b == 0x82 && len(frame) >= 13:
		n, hl = int(binary.BigEndian.Uint16(frame[11:])), 13
	case b == 0x81 || b == 0x82:
		return h, ErrShort
	default:
		return h, ErrHeader
	}
	if n < 5+TagSize {
		return h, ErrShort
	}
	if len(frame) < hl+5 {
		return h, ErrShort
	}
	if frame[hl] != securityControl {
		return h, ErrHeader
	}
	h.Counter = binary.BigEndian.Uint32(frame[hl+1:])
	h.Start = hl + 5
	h.Len = hl + n
	if len(frame) < h.Len {
		return h, ErrShort
	}
	return h, nil
}

// Options configure an Opener.
type Options struct {
	// Key decrypts frames of every system title not in Keys. Nil means none.
	Key *Key
	// Keys holds a key per system title, for a decryptor serving many meters.
	Keys map[Title]Key
	// AuthKey is the GCM authentication key; the zero value means
	// DefaultAuthKey.
	AuthKey Key
	// SkipTag decrypts without verifying the GCM tag. The plaintext must then
	// start with '/' and carry a valid telegram CRC, or ErrAuth is returned.
	// Only for meters whose authentication key is unknown.
	SkipTag bool
}

type aeadKey struct {
	block cipher.Block
	aead  cipher.AEAD
}

func newAEADKey(k Key) (*aeadKey, error) {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCMWithTagSize(block, TagSize)
	if err != nil {
		return nil, err
	}
	return &aeadKey{block: block, aead: aead}, nil
}

// Opener decrypts frames. It keeps its scratch space inside, so one Opener
// must not be used by two goroutines at once; make one per goroutine.
type Opener struct {
	def     *aeadKey
	byTitle map[Title]*aeadKey
	ad      [1 + len(Key{})]byte
	nonce   [12]byte
	skipTag bool
}

// NewOpener prepares the ciphers for every configured key.
func NewOpener(o Options) (*Opener, error) {
	op := &Opener{byTitle: make(map[Title]*aeadKey, len(o.Keys)), skipTag: o.SkipTag}
	auth := o.AuthKey
	if auth == (Key{}) {
		auth = DefaultAuthKey
	}
	op.ad[0] = securityControl
	copy(op.ad[1:], auth[:])
	if o.Key != nil {
		k, err := newAEADKey(*o.Key)
		if err != nil {
			return nil, err
		}
		op.def = k
	}
	for t, key := range o.Keys {
		k, err := newAEADKey(key)
		if err != nil {
			return nil, err
		}
		op.byTitle[t] = k
	}
	return op, nil
}

// HasKey reports whether frames of title can be decrypted.
func (o *Opener) HasKey(t Title) bool {
	_, ok := o.byTitle[t]
	return ok || o.def != nil
}

// Open authenticates and decrypts frame, appends the plaintext telegram to
// dst and returns the extended slice with the frame's header. Like
// cipher.AEAD.Open it allocates nothing once dst has room. On error the
// returned slice is dst unchanged.
func (o *Opener) Open(dst, frame []byte) ([]byte, Header, error) {
	h, err := ParseHeader(frame)
	if err != nil {
		return dst, h, err
	}
	k := o.byTitle[h.Title]
	if k == nil {
		if k = o.def; k == nil {
			return dst, h, ErrNoKey
		}
	}
	copy(o.nonce[:8], h.Title[:])
	binary.BigEndian.PutUint32(o.nonce[8:], h.Counter)
	body := frame[h.Start:h.Len]
	if len(body) < TagSize {
		return dst, h, ErrShort
	}
	if o.skipTag {
		out, ok := o.openUnverified(dst, k, body)
		if !ok {
			return dst, h, ErrAuth
		}
		return out, h, nil
	}
	out, err := k.aead.Open(dst, o.nonce[:], body, o.ad[:])
	if err != nil {
		// Tell a wrong authentication key from a wrong key: the most common
		// support question with these meters.
		if _, ok := o.openUnverified(dst, k, body); ok {
			return dst, h, ErrAuthKey
		}
		return dst, h, ErrAuth
	}
	return out, h, nil
}

// openUnverified decrypts body without its tag (GCM is CTR mode starting at
// counter block 2) and accepts the result only when it is a telegram whose
// CRC holds.
func (o *Opener) openUnverified(dst []byte, k *aeadKey, body []byte) ([]byte, bool) {
	var iv [16]byte
	copy(iv[:], o.nonce[:])
	iv[15] = 2
	ct := body[:len(body)-TagSize]
	n := len(dst)
	out := append(dst, ct...)
	cipher.NewCTR(k.block, iv[:]).XORKeyStream(out[n:], ct)
	if !TelegramCRCValid(out[n:]) {
		return dst, false
	}
	return out, true
}

// TelegramCRCValid reports whether p starts with '/' and ends in
// '!XXXX' (optionally followed by CR LF) where XXXX is the CRC-16 of the
// bytes from '/' to '!'.
func TelegramCRCValid(p []byte) bool {
	if len(p) == 0 || p[0] != '/' {
		return false
	}
	end := bytes.LastIndexByte(p, '!')
	if end < 0 || len(p) < end+5 {
		return false
	}
	return crc16.Verify(p[:end+1], p[end+1:end+5])
}

// Seal builds a frame around plaintext: the inverse of Open, used by the
// meter simulator and by tests. It appends the frame to dst. plaintext
// must be shorter than 64 KiB, as every telegram is.
func Seal(dst []byte, key, authKey Key, title Title, counter uint32, plaintext []byte) []byte {
	k, err := newAEADKey(key)
	if err != nil {
		panic(err) // unreachable: a Key is always 16 bytes
	}
	var nonce [12]byte
	copy(nonce[:], title[:])
	binary.BigEndian.PutUint32(nonce[8:], counter)
	var ad [17]byte
	ad[0] = securityControl
	copy(ad[1:], authKey[:])

	n := 5 + len(plaintext) + TagSize
	dst = append(dst, 0xDB, 0x08)
	dst = append(dst, title[:]...)
	switch {
	case n < 0x80:
		dst = append(dst, byte(n))
	case n <= 0xFF:
		dst = append(dst, 0x81, byte(n))
	default:
		dst = append(dst, 0x82, byte(n>>8), byte(n))
	}
	dst = append(dst, securityControl)
	dst = binary.BigEndian.AppendUint32(dst, counter)
	return k.aead.Seal(dst, nonce[:], plaintext, ad[:])
}
