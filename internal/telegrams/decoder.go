package telegrams

import (
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
