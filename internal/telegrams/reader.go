package telegrams

import (
	"errors"
	"fmt"
	"io"

	"github.com/smartybridge/smartybridge/decrypt"
	"github.com/smartybridge/smartybridge/p1"
)

// Frame is one frame read from the stream. Its bytes and telegram are
// valid until the next call to Next.
type Frame struct {
	Kind     p1.Kind
	Bytes    []byte
	Telegram *p1.Telegram // nil when the Reader only frames (forward mode)
	Origin   p1.Origin
	Offset   int64 // of the frame's first byte in the stream
}

// FrameError is a frame that did not decode. It does not end the stream:
// Next goes on with the bytes after it, or one byte after its start when
// it may not have been a frame at all.
type FrameError struct {
	Offset int64
	Reason Reason
	Origin p1.Origin // the system title and counter, when the header had them
	Err    error
}

func (e *FrameError) Error() string {
	return fmt.Sprintf("frame at byte %d: %v", e.Offset, e.Err)
}

func (e *FrameError) Unwrap() error { return e.Err }

// Reader reads the frames of a P1 byte stream, decrypts and parses them.
// Like encoding/csv's Reader, Next returns a FrameError for a bad frame and
// goes on; only the source's error (io.EOF at its end) ends it. Frames of
// meters whose frames authenticated are known to the scanner from then on,
// so that a false header cannot swallow them. Not safe for concurrent use.
type Reader struct {
	sc    *p1.Scanner
	dec   *Decoder // nil: frames only
	known map[[8]byte]bool
	frame Frame
}

// NewReader reads telegrams from r with the given keys. The titles of
// opts.Keys are known from the start.
func NewReader(r io.Reader, opts decrypt.Options) (*Reader, error) {
	dec, err := NewDecoder(opts)
	if err != nil {
		return nil, err
	}
	rd := &Reader{sc: p1.NewScanner(r), dec: dec}
	for t := range opts.Keys {
		rd.sc.Know(t)
	}
	return rd, nil
}

// NewFrameReader reads frames from r without decoding them (a forwarder
// holds no key). An encrypted frame of a meter not yet known (Know) cannot
// be checked, so its bytes are searched again for frames inside it: a
// false header whose declared span swallowed a real frame costs nothing.
func NewFrameReader(r io.Reader) *Reader {
	return &Reader{sc: p1.NewScanner(r), known: map[[8]byte]bool{}}
}

// Know tells the Reader that frames of title are real (a decryptor
// confirmed one). Call it from the reading goroutine; a source reader may
// call it before each Read. At most 32 titles are kept for framing.
func (r *Reader) Know(title [8]byte) {
	r.sc.Know(title)
	if r.known != nil && len(r.known) < 4096 {
		r.known[title] = true
	}
}

// Next returns the next frame. A frame that does not decode is a
// *FrameError; the stream goes on. At the end of the source it returns
// io.EOF, or the source's error.
func (r *Reader) Next() (*Frame, error) {
	if !r.sc.Scan() {
		if err := r.sc.Err(); err != nil {
			return nil, err
		}
		return nil, io.EOF
	}
	f := &r.frame
	*f = Frame{Kind: r.sc.Kind(), Bytes: r.sc.Frame(), Offset: r.sc.Offset()}
	if r.dec == nil {
		if f.Kind == p1.Encrypted && len(f.Bytes) >= 10 && !r.known[[8]byte(f.Bytes[2:10])] {
			r.sc.Overlap()
		}
		return f, nil
	}
	tg, from, err := r.dec.Decode(f.Kind, f.Bytes)
	f.Origin = from
	if err != nil {
		if FramingError(err) {
			r.sc.Reject()
		}
		return nil, &FrameError{Offset: f.Offset, Reason: ReasonOf(err), Origin: from, Err: err}
	}
	if from.Encrypted {
		r.sc.Know(from.SystemTitle)
	}
	f.Telegram = tg
	return f, nil
}

// Stats are the scanner's counts so far.
func (r *Reader) Stats() p1.Stats { return r.sc.Stats() }

// AsFrameError returns the FrameError in err, if any. Next returns one
// unwrapped, which is checked first: errors.As would allocate on every
// call, that is on every frame.
func AsFrameError(err error) (*FrameError, bool) {
	if err == nil {
		return nil, false
	}
	if fe, ok := err.(*FrameError); ok {
		return fe, true
	}
	var fe *FrameError
	ok := errors.As(err, &fe)
	return fe, ok
}
