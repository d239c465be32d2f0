package bridge

import (
	"errors"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// Decoder turns frames into telegrams: it decrypts encrypted frames and
// parses the telegram inside, reusing its buffers. Not safe for concurrent
// use.
type Decoder struct {
	opener *decrypt.Opener
	plain  []byte
	tg     p1.Telegram
}

// NewDecoder prepares a Decoder with the given keys. opts may hold no key at
// all; encrypted frames then fail with decrypt.ErrNoKey.
func NewDecoder(opts decrypt.Options) (*Decoder, error) {
	o, err := decrypt.NewOpener(opts)
	if err != nil {
		return nil, err
	}
	return &Decoder{opener: o, plain: make([]byte, 0, p1.MaxFrameLen)}, nil
}

// Decode returns the telegram in frame. The telegram is valid until the next
// call. Errors are those of decrypt.Opener.Open and p1.Telegram.Parse.
func (d *Decoder) Decode(kind p1.Kind, frame []byte) (*p1.Telegram, p1.Origin, error) {
	var from p1.Origin
	text := frame
	if kind == p1.Encrypted {
		out, h, err := d.opener.Open(d.plain[:0], frame)
		from = p1.Origin{Encrypted: true, SystemTitle: h.Title, FrameCounter: h.Counter}
		if err != nil {
			return nil, from, err
		}
		d.plain = out
		text = out
	}
	if err := d.tg.Parse(text); err != nil {
		return nil, from, err
	}
	return &d.tg, from, nil
}

// Reason names the class of a decoding error for counters and logs:
// "authentication", "no key", "crc", "malformed" or "header".
func Reason(err error) string {
	switch {
	case errors.Is(err, decrypt.ErrAuth):
		return "authentication"
	case errors.Is(err, decrypt.ErrNoKey):
		return "no key"
	case errors.Is(err, p1.ErrCRC):
		return "crc"
	case errors.Is(err, p1.ErrMalformed):
		return "malformed"
	default:
		return "header"
	}
}

// FramingError reports whether err means the frame's bytes may not have
// been a frame after all, so that the scanner should resync one byte after
// its start. A frame that authenticated but holds a bad telegram was
// framed right; one of a meter without key (line noise shaped like a
// header, as often as not) was not checked, so it is searched again.
func FramingError(err error) bool {
	return errors.Is(err, decrypt.ErrAuth) || errors.Is(err, decrypt.ErrHeader) || errors.Is(err, decrypt.ErrShort) ||
		errors.Is(err, decrypt.ErrNoKey)
}
